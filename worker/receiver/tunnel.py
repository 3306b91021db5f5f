"""What every receiver does once it has a connection: serve ``--listen`` over it until it ends.

The receiver is the worker's peer and runs the same data plane (:mod:`~tunnelpy.worker.forwarding`)
over the same transport interface. :func:`run_until_stopped` runs any mode's receiver until it
fails or a signal arrives.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from tunnelpy.common.allowlist import Proto
from tunnelpy.common.config import ReceiverConfig
from tunnelpy.common.errors import ConfigError, ConnectionLost, ExitCode, TunnelError
from tunnelpy.common.logs import get_logger
from tunnelpy.worker.forwarding import wire
from tunnelpy.worker.forwarding.tcp import READER_LIMIT, Traffic, abort_with_reset, open_stream_with_retry, splice
from tunnelpy.worker.forwarding.udp import UdpLink, serve_receiver_udp
from tunnelpy.worker.transport.interface import Connection

log = get_logger(__name__)


def first_leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups: what a user should read."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def bind_target(cfg: ReceiverConfig) -> socket.socket:
    """Bind ``--listen`` before asking for a session: a port in use is the user's mistake, told
    in one line (exit 2), and no sender spawns a worker for a receiver that cannot serve."""
    host, port = cfg.target
    udp = cfg.source.proto is Proto.UDP
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    )
    try:
        if not udp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"--listen {host}:{port}: cannot listen there ({exc.strerror}); choose a free port on a local address"
        ) from exc
    return sock


async def serve_tunnel(conn: Connection, cfg: ReceiverConfig, sock: socket.socket) -> None:
    """Serve the bound ``--listen`` socket over ``conn`` until the connection fails (raises ConnectionLost)."""
    traffic = Traffic()

    def listening(address: tuple) -> None:  # type: ignore[type-arg]
        log.info(
            "receiver.listening",
            proto=cfg.source.proto.value,
            address=f"{address[0]}:{address[1]}",
            source=str(cfg.source),
        )

    if cfg.source.proto is Proto.UDP:
        frames = await open_stream_with_retry(conn, wire.StreamKind.UDP_FRAMES)
        link = UdpLink(conn, frames, traffic, outbound_is_up=True)
        await serve_receiver_udp(link, sock, listening)
        return
    async with asyncio.TaskGroup() as tg:

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                stream = await open_stream_with_retry(conn, wire.StreamKind.TCP)
            except ConnectionLost:
                abort_with_reset(writer)
                return
            await splice(stream, reader, writer, traffic, local_is_source=False)

        server = await asyncio.start_server(
            lambda r, w: tg.create_task(forward(r, w)) and None, sock=sock, limit=READER_LIMIT, backlog=128
        )
        listening(server.sockets[0].getsockname())
        async with server:
            reason = await conn.wait_closed()
        raise ConnectionLost(reason)


async def run_until_stopped(
    cfg: ReceiverConfig, session: Callable[[socket.socket], Coroutine[Any, Any, None]]
) -> ExitCode:
    """Bind ``--listen``, then run a receiver's ``session`` on that socket until it fails or
    SIGTERM/SIGINT arrives (exit 0, at any stage: even while waiting for a pasted answer); a
    lost connection raises ConnectionLost with the first underlying reason."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sock = bind_target(cfg)
    try:
        async with asyncio.TaskGroup() as tg:
            serve_task = tg.create_task(session(sock))
            stop_task = tg.create_task(stop.wait())
            await asyncio.wait([serve_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            serve_task.cancel()
    except* ConnectionLost as group:
        raise ConnectionLost(f"the session ended: {first_leaf(group)}") from None
    except* TunnelError as group:  # a user-facing error at any stage: the CLI prints it, no traceback
        raise first_leaf(group) from None
    finally:
        sock.close()
    if stop.is_set():
        log.info("receiver.stopped")
    return ExitCode.OK
