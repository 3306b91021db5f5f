"""What every receiver does once it has a connection: serve ``--target`` over it until it ends.

The receiver is the worker's peer and runs the same data plane (:mod:`~tunnelpy.worker.forwarding`)
over the same transport interface. :func:`run_until_stopped` runs any mode's receiver until it
fails or a signal arrives.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

from tunnelpy.common.allowlist import Proto
from tunnelpy.common.config import ReceiverConfig
from tunnelpy.common.errors import ConnectionLost, ExitCode, TunnelError
from tunnelpy.common.logs import get_logger
from tunnelpy.worker.forwarding import wire
from tunnelpy.worker.forwarding.tcp import READER_LIMIT, Traffic, open_stream_with_retry, splice
from tunnelpy.worker.forwarding.udp import UdpLink, serve_receiver_udp
from tunnelpy.worker.receiver.status_line import start_status_line
from tunnelpy.worker.transport.interface import Connection

log = get_logger(__name__)


async def serve_tunnel(conn: Connection, cfg: ReceiverConfig) -> None:
    """Serve ``cfg.target`` over ``conn`` until the connection fails (raises ConnectionLost),
    with a live status line on a TTY."""
    traffic = Traffic()
    line = start_status_line(conn, traffic, cfg)
    try:
        await _serve(conn, cfg, traffic)
    finally:
        line.stop()


async def _serve(conn: Connection, cfg: ReceiverConfig, traffic: Traffic) -> None:
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
        await serve_receiver_udp(link, cfg.target, listening)
        return
    async with asyncio.TaskGroup() as tg:

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                stream = await open_stream_with_retry(conn, wire.StreamKind.TCP)
            except ConnectionLost:
                writer.transport.abort()
                return
            await splice(stream, reader, writer, traffic, local_is_source=False)

        server = await asyncio.start_server(
            lambda r, w: tg.create_task(forward(r, w)) and None, *cfg.target, limit=READER_LIMIT
        )
        listening(server.sockets[0].getsockname())
        async with server:
            reason = await conn.wait_closed()
        raise ConnectionLost(reason)


async def run_until_stopped(serving: Coroutine[Any, Any, None]) -> ExitCode:
    """Run a receiver until it fails or SIGTERM/SIGINT arrives (exit 0, at any stage: even while
    waiting for a pasted answer); a lost connection raises ConnectionLost."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with asyncio.TaskGroup() as tg:
            serve_task = tg.create_task(serving)
            stop_task = tg.create_task(stop.wait())
            await asyncio.wait([serve_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            serve_task.cancel()
    except* ConnectionLost as group:
        raise ConnectionLost(f"the session ended: {group.exceptions[0]}") from None
    except* TunnelError as group:  # a user-facing error at any stage: the CLI prints it, no traceback
        raise group.exceptions[0] from None
    if stop.is_set():
        log.info("receiver.stopped")
    return ExitCode.OK
