"""The receiver: asks the sender for a session, then serves the tunnel on a local address.

It is the worker's peer and runs the same data plane (:mod:`forward_tcp`, :mod:`forward_udp`)
over the same transport interface. Lifecycle: request a session at the sender's front door
(a rejection becomes its exit code), connect to the session's worker, listen on
``--target``, and run until the worker connection ends or a signal arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any

from tunnelpy.common.allowlist import Proto
from tunnelpy.common.config import ReceiverConfig
from tunnelpy.common.errors import (
    ConnectFailed,
    ConnectionLost,
    ExitCode,
    ProtocolError,
    SessionRejected,
    TunnelError,
)
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling import session_wire as sw
from tunnelpy.supervisor.front_iroh import HANDSHAKE_TIMEOUT, read_message
from tunnelpy.worker.forwarding import wire
from tunnelpy.worker.forwarding.tcp import READER_LIMIT, Traffic, open_stream_with_retry, splice
from tunnelpy.worker.forwarding.udp import UdpLink, serve_receiver_udp
from tunnelpy.worker.transport import iroh_transport
from tunnelpy.worker.transport.interface import Connection

log = get_logger(__name__)


async def request_session(endpoint, node_id: str, source: str) -> sw.SessionAccepted:  # type: ignore[no-untyped-def]
    """Ask the sender's front door for a session; raises SessionRejected with its reason."""
    front = await iroh_transport.connect(endpoint, iroh_transport.peer_addr(node_id), sw.ALPN)
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            stream = await front.open_stream()
            await stream.write(sw.encode(sw.SessionRequest(source=source)))
            await stream.finish()
            reply = await read_message(stream)
    except TimeoutError as exc:
        raise ConnectFailed(f"the sender did not answer the session request within {HANDSHAKE_TIMEOUT:.0f} s") from exc
    except ConnectionLost as exc:
        raise ConnectFailed(f"the sender closed the connection during the session request ({exc})") from exc
    finally:
        front.close(0, "done")
    if isinstance(reply, sw.SessionRejected):
        raise SessionRejected(
            f"sender refused the session ({reply.reason.value}): {reply.message}", reply.reason.exit_code
        )
    if not isinstance(reply, sw.SessionAccepted):
        raise ProtocolError(f"expected a session answer, got {type(reply).__name__}")
    return reply


async def serve_tunnel(conn: Connection, cfg: ReceiverConfig) -> None:
    """Serve ``cfg.target`` over ``conn`` until the connection fails (raises ConnectionLost)."""
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


async def run_receiver(cfg: ReceiverConfig) -> ExitCode:
    """iroh mode: ask the sender's front door, connect to the session's worker, serve."""
    return await run_until_stopped(_iroh_session(cfg))


async def _iroh_session(cfg: ReceiverConfig) -> None:
    log.debug("receiver.starting", source=str(cfg.source))
    secret = iroh_transport.decode_secret(cfg.secret, "--secret-file") if cfg.secret else None
    endpoint = await iroh_transport.bind_endpoint(cfg.net, secret=secret, alpns=[])
    conn = None
    try:
        accepted = await request_session(endpoint, cfg.node_id or "", str(cfg.source))
        log.info("receiver.session_accepted", session_id=accepted.session_id)
        conn = await iroh_transport.connect(endpoint, iroh_transport.peer_addr(accepted.worker_ticket), wire.ALPN)
        await serve_tunnel(conn, cfg)
    finally:
        if conn is not None:
            conn.close(0, "receiver done")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await endpoint.close()
