"""The worker's side of one session: accept the receiver's streams and forward to the source.

Transport-agnostic: it takes any :class:`~tunnelpy.worker.transport.interface.Connection`. Stream
failures are contained to their stream; the session ends when the connection does, or when
a drain finds no TCP stream left.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tunnelpy.common.allowlist import Proto, Source
from tunnelpy.common.errors import ConnectFailed, ConnectionLost, ProtocolError, StreamReset
from tunnelpy.common.logs import get_logger
from tunnelpy.worker.forwarding.tcp import Traffic, dial, splice_socket
from tunnelpy.worker.forwarding.udp import UdpLink, serve_worker_udp
from tunnelpy.worker.forwarding.wire import StreamKind, parse_stream_header
from tunnelpy.worker.transport.interface import Connection, Stream

log = get_logger(__name__)

HEADER_TIMEOUT = 10.0


async def read_exact(stream: Stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


@dataclass(slots=True)
class SessionTarget:
    """What the worker forwards to: the source and the addresses the supervisor checked."""

    source: Source
    addresses: tuple[str, ...]


class WorkerSession:
    """Serves one receiver connection: a TCP stream per local connection, or the UDP flows."""

    def __init__(self, conn: Connection, target: SessionTarget, traffic: Traffic) -> None:
        self.conn, self.target, self.traffic = conn, target, traffic
        counters = getattr(conn, "counters", None)
        if counters is not None:  # a native connection: its counters see every byte
            traffic.follow(counters, sent_is_up=False)
        self.draining = False
        self._idle = asyncio.Event()

    def drain(self) -> None:
        """Refuse new streams; :meth:`serve` returns once no TCP stream is open."""
        self.draining = True
        if self.target.source.proto is Proto.TCP and self.traffic.streams_open == 0:
            self._idle.set()

    async def serve(self) -> str:
        """Serve until the connection ends or a drain completes; returns why it ended."""
        serve = self._serve_tcp() if self.target.source.proto is Proto.TCP else self._serve_udp()
        async with asyncio.TaskGroup() as tg:
            serving = tg.create_task(serve)
            idle = tg.create_task(self._idle.wait())
            done, _ = await asyncio.wait([serving, idle], return_when=asyncio.FIRST_COMPLETED)
            serving.cancel()
            idle.cancel()
        return "drained" if idle in done and not idle.cancelled() else serving.result()

    async def _serve_tcp(self) -> str:
        async with asyncio.TaskGroup() as tg:
            while True:
                try:
                    stream = await self.conn.accept_stream()
                except ConnectionLost as exc:
                    return f"receiver connection closed ({exc})"
                tg.create_task(self._tcp_stream(stream))

    async def _tcp_stream(self, stream: Stream) -> None:
        try:
            async with asyncio.timeout(HEADER_TIMEOUT):
                kind = parse_stream_header(await read_exact(stream, 2))
            if kind is not StreamKind.TCP or self.draining:
                raise ProtocolError("draining" if self.draining else f"{kind.name} stream on a tcp session")
            sock = await dial(self.target.addresses, self.target.source.port)
        except (ProtocolError, ConnectFailed, StreamReset, TimeoutError) as exc:
            log.warning("tcp.stream_refused", error=str(exc) or "header timeout")
            stream.reset()
            return
        await splice_socket(stream, sock, self.traffic, local_is_source=True)
        if self.draining and self.traffic.streams_open == 0:
            self._idle.set()

    async def _serve_udp(self) -> str:
        reason = "UDP serving ended without a connection error"
        try:
            frames = await self.conn.accept_stream()
            async with asyncio.timeout(HEADER_TIMEOUT):
                kind = parse_stream_header(await read_exact(frames, 2))
            if kind is not StreamKind.UDP_FRAMES:
                raise ProtocolError(f"{kind.name} stream on a udp session")
            native = getattr(self.conn, "serve_udp_worker", None)
            if native is not None:  # the flows run in Rust
                await native(frames, self.target.addresses, self.target.source.port)
            else:
                link = UdpLink(self.conn, frames, self.traffic, outbound_is_up=False)
                await serve_worker_udp(link, self.target.addresses, self.target.source.port)
        except* (ConnectionLost, StreamReset) as group:
            reason = f"receiver connection closed ({group.exceptions[0]})"
        return reason
