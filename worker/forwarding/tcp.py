"""TCP over a transport: one bi-stream per local TCP connection, half-close carried both ways.

Both directions are bounded: the local reader is a StreamReader with a fixed limit, the
transport write waits on the stream's send window, and the local write waits on ``drain()``
(asyncio's high-water mark). A slow side therefore stalls the fast one instead of growing
memory. A reset on either side aborts the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tunnelpy.common.errors import ConnectFailed, ConnectionLost, StreamReset
from tunnelpy.common.logs import get_logger
from tunnelpy.worker.forwarding.wire import StreamKind, stream_header
from tunnelpy.worker.transport.interface import Connection, Stream

log = get_logger(__name__)

CHUNK = 256 * 1024
READER_LIMIT = 512 * 1024
OPEN_RETRIES = 3
OPEN_BACKOFF = 0.1
HAPPY_EYEBALLS_DELAY = 0.25
DIAL_TIMEOUT = 10.0
_LINGER_ZERO = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends an RST


@dataclass(slots=True)
class Traffic:
    """Byte and stream counters of one session, read by heartbeats and the status view.

    ``on_streams`` is called after every change of the open-stream count (the worker pushes
    a heartbeat then, so the status view shows a stream at once).
    """

    bytes_up: int = 0  # receiver -> source
    bytes_down: int = 0  # source -> receiver
    streams_open: int = 0
    streams_total: int = 0
    flows_open: int = 0  # UDP sessions: local clients with a live flow
    datagrams_dropped: int = 0  # UDP sessions: datagrams dropped on a full tunnel send queue
    on_streams: Callable[[], None] | None = None
    # While a native connection carries the bytes: its counters and the totals before it.
    _live: Callable[[], Mapping[str, int]] | None = None
    _sent_is_up: bool = False
    _base: tuple[int, int, int] = (0, 0, 0)

    def follow(self, counters: Callable[[], Mapping[str, int]], *, sent_is_up: bool) -> None:
        """Take bytes and drops from a native connection's live ``counters`` from now on."""
        self.refresh()
        self._base = (self.bytes_up, self.bytes_down, self.datagrams_dropped)
        self._live, self._sent_is_up = counters, sent_is_up

    def unfollow(self) -> None:
        self.refresh()
        self._live = None

    @property
    def native(self) -> bool:
        return self._live is not None

    def refresh(self) -> None:
        """Bring the byte counters up to date (a no-op unless following a native connection)."""
        if self._live is None:
            return
        c = self._live()
        sent, received = c["bytes_sent"], c["bytes_received"]
        up, down = (sent, received) if self._sent_is_up else (received, sent)
        self.bytes_up, self.bytes_down = self._base[0] + up, self._base[1] + down
        self.datagrams_dropped = self._base[2] + c["datagrams_dropped"]
        self.flows_open = c["udp_flows"]

    def stream_opened(self) -> None:
        self.streams_open += 1
        self.streams_total += 1
        if self.on_streams is not None:
            self.on_streams()

    def stream_closed(self) -> None:
        self.streams_open -= 1
        if self.on_streams is not None:
            self.on_streams()


async def _local_to_stream(reader: asyncio.StreamReader, stream: Stream, count) -> None:
    while data := await reader.read(CHUNK):
        await stream.write(data)
        count(len(data))
    await stream.finish()


async def _stream_to_local(stream: Stream, writer: asyncio.StreamWriter, count) -> None:
    while data := await stream.read(CHUNK):
        writer.write(data)
        count(len(data))
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


def abort_with_reset(writer: asyncio.StreamWriter) -> None:
    """Close a local TCP connection with an RST, so its peer sees a reset and not a clean end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    writer.transport.abort()


async def splice(
    stream: Stream,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    traffic: Traffic,
    *,
    local_is_source: bool,
) -> None:
    """Copy both ways until both sides finished; abort both on a reset or a local error."""

    def up(n: int) -> None:
        traffic.bytes_up += n

    def down(n: int) -> None:
        traffic.bytes_down += n

    to_stream_count, from_stream_count = (down, up) if local_is_source else (up, down)
    traffic.stream_opened()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_local_to_stream(reader, stream, to_stream_count))
            tg.create_task(_stream_to_local(stream, writer, from_stream_count))
    except* (StreamReset, ConnectionLost, ConnectionError, OSError) as group:
        log.debug("tcp.stream_aborted", error=str(group.exceptions[0]))
        stream.reset()
        abort_with_reset(writer)
    finally:
        traffic.stream_closed()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def reset_socket(sock: socket.socket) -> None:
    """Close a raw local TCP socket with an RST."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    sock.close()


async def splice_socket(stream: Stream, sock: socket.socket, traffic: Traffic, *, local_is_source: bool) -> None:
    """Forward one connected local socket over ``stream``. A native stream takes the socket
    itself (payload bytes stay in Rust); any other goes through :func:`splice`."""
    native = getattr(stream, "splice_tcp", None)
    if native is None:
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=READER_LIMIT)
        except BaseException:
            reset_socket(sock)
            stream.reset()
            raise
        await splice(stream, reader, writer, traffic, local_is_source=local_is_source)
        return
    traffic.stream_opened()
    try:
        sent, received = await native(sock.detach())
    except (StreamReset, ConnectionLost) as exc:
        log.debug("tcp.stream_aborted", error=str(exc))
    else:
        if not traffic.native:  # else the connection's counters already hold these bytes
            up, down = (received, sent) if local_is_source else (sent, received)
            traffic.bytes_up += up
            traffic.bytes_down += down
    finally:
        traffic.stream_closed()


async def open_stream_with_retry(conn: Connection, kind: StreamKind) -> Stream:
    """Open a stream and send its header: 3 tries, 100 ms backoff doubling (tunnel-rs parity)."""
    delay = OPEN_BACKOFF
    for attempt in range(1, OPEN_RETRIES + 1):
        try:
            stream = await conn.open_stream()
            await stream.write(stream_header(kind))
            return stream
        except (ConnectionLost, StreamReset):
            if attempt == OPEN_RETRIES:
                raise
            log.warning("tcp.open_stream_retry", attempt=attempt, delay=delay)
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


async def _connect(address: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def dial(addresses: Sequence[str], port: int) -> socket.socket:
    """Connect to the first answering address, starting the next every 250 ms (Happy Eyeballs).

    Only the addresses the supervisor checked against the allow-list are dialled; attempts
    are owned here and cancelled (or closed, if they connected too late) before returning.
    Returns the connected, non-blocking socket.
    """
    errors: list[str] = []
    attempts: list[asyncio.Task[socket.socket]] = []
    winner = None
    try:
        async with asyncio.timeout(DIAL_TIMEOUT):
            for address in addresses:
                attempts.append(asyncio.ensure_future(_connect(address, port)))
                winner = await _next_success(attempts, errors, HAPPY_EYEBALLS_DELAY)
                if winner:
                    return winner
            while attempts and not winner:
                winner = await _next_success(attempts, errors, None)
            if winner:
                return winner
    except TimeoutError:
        errors.append(f"no answer within {DIAL_TIMEOUT:.0f} s")
    finally:
        for task in attempts:
            task.cancel()
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().close()
    raise ConnectFailed(f"cannot connect to port {port} on {', '.join(addresses)}: {'; '.join(errors)}")


async def _next_success(attempts: list, errors: list[str], timeout: float | None):  # type: ignore[type-arg]
    """Wait up to ``timeout`` for an attempt to finish; return the first connected pair."""
    done, _ = await asyncio.wait(attempts, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    winner = None
    for task in done:
        attempts.remove(task)
        if task.exception() is not None:
            exc = task.exception()
            errors.append(str(getattr(exc, "strerror", None) or exc))
        elif winner is None:
            winner = task.result()
        else:
            task.result().close()
    return winner
