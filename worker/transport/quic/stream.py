"""One bidirectional QUIC stream behind the :class:`~tunnelpy.worker.transport.interface.Stream` interface.

Backpressure both ways (stack-notes section 5): ``write()`` waits while the stream's unacked
send buffer is full and is woken as ACKs arrive; reads credit the stream's receive window
(:meth:`StreamHost.credit_consumed`), so a stalled reader stalls the peer's writer.

The stream and its connection meet only through public methods: the stream asks its
:class:`StreamHost` (the connection) for what it needs, and the connection pushes events in
through :meth:`QuicTransportStream.deliver`, :meth:`~QuicTransportStream.peer_reset` and the rest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from tunnelpy.common.errors import StreamReset


class StreamHost(Protocol):
    """What a :class:`QuicTransportStream` needs from its connection (``QuicTransportConnection``).

    Every call that queues a frame also schedules the connection's flush.
    """

    @property
    def is_lost(self) -> bool:
        """The connection is closing or closed: stream calls fail or do nothing."""
        ...

    def raise_if_lost(self) -> None:
        """Raise ConnectionLost once the connection is closing or closed."""

    def can_write(self, stream_id: int) -> bool:
        """The stream's unacked send buffer has room for more data."""
        ...

    def block_writer(self, stream: QuicTransportStream) -> None:
        """Wake ``stream`` (:meth:`QuicTransportStream.wake_writer`) once :meth:`can_write` holds."""

    def unblock_writer(self, stream: QuicTransportStream) -> None:
        """Stop watching ``stream`` for room: its writer is awake."""

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue data, and our FIN if ``end_stream``."""

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Queue RESET_STREAM: abandon our direction."""

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        """Queue STOP_SENDING: ask the peer to abandon theirs."""

    def credit_consumed(self, stream_id: int, count: int) -> None:
        """Credit ``count`` bytes the reader took to the stream's receive window."""

    def release_stream(self, stream: QuicTransportStream) -> None:
        """Forget ``stream`` if it is :attr:`~QuicTransportStream.released`; otherwise do nothing."""


class QuicTransportStream:
    """One bidirectional QUIC stream (a :class:`~tunnelpy.worker.transport.interface.Stream`).

    Driven by its connection, which pushes received data and FIN (:meth:`deliver`), resets
    (:meth:`peer_reset`), STOP_SENDING (:meth:`peer_stopped`), ACK room (:meth:`wake_writer`) and
    connection loss (:meth:`wake`) into it; ``read`` and ``write`` wait on the ``_readable`` /
    ``_writable`` events those set.
    """

    def __init__(self, host: StreamHost, stream_id: int) -> None:
        self._host = host
        self.stream_id = stream_id
        self._chunks: deque[bytes] = deque()
        self._head_offset = 0  # bytes of _chunks[0] already read
        self._fin_received = False
        self._read_error: str | None = None  # a reset, by the peer or by us
        self._write_error: str | None = None  # STOP_SENDING from the peer, or our reset
        self._finished = False  # our FIN is queued
        self._read_done = False  # FIN read or reset: no more data will be delivered
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()

    async def read(self, max_bytes: int) -> bytes:
        while not self._chunks:
            if self._read_error is not None:
                raise StreamReset(self._read_error)
            if self._fin_received:
                self._end_read()
                return b""
            self._host.raise_if_lost()
            self._readable.clear()
            await self._readable.wait()
        data = self._take(max_bytes)
        self._host.credit_consumed(self.stream_id, len(data))
        return data

    async def write(self, data: bytes) -> None:
        host = self._host
        while True:
            host.raise_if_lost()
            if self._write_error is not None:
                raise StreamReset(self._write_error)
            if self._finished:
                raise RuntimeError("Stream.write() after finish()")
            if host.can_write(self.stream_id):
                break
            self._writable.clear()
            host.block_writer(self)
            try:
                await self._writable.wait()
            finally:
                host.unblock_writer(self)
        if data:
            host.send_stream_data(self.stream_id, data)

    async def finish(self) -> None:
        self._host.raise_if_lost()
        if self._finished or self._write_error is not None:
            return  # already finished, or reset: there is nothing left to end
        self._finished = True
        self._host.send_stream_data(self.stream_id, b"", end_stream=True)
        self._host.release_stream(self)

    def reset(self, error_code: int = 0) -> None:
        """Abort both directions: RESET_STREAM for ours, STOP_SENDING for the peer's."""
        if self._host.is_lost:
            return
        if not self._finished and self._write_error is None:
            self._host.reset_stream(self.stream_id, error_code)
        if not self._read_done:
            self._host.stop_stream(self.stream_id, error_code)
        reason = f"the stream was reset locally (code {error_code})"
        self._fail_write(reason)
        self._fail_read(reason)

    # -- called by the connection

    def deliver(self, data: bytes, end_stream: bool) -> None:
        """Data (and the peer's FIN if ``end_stream``) arrived; dropped after a reset."""
        if self._read_error is not None:
            return
        if data:
            self._chunks.append(data)
        if end_stream:
            self._fin_received = True
        self._readable.set()

    def peer_reset(self, error_code: int) -> None:
        """The peer sent RESET_STREAM: buffered data is dropped and reads raise StreamReset."""
        self._fail_read(f"the peer reset the stream (code {error_code})")

    def peer_stopped(self, error_code: int) -> None:
        """The peer sent STOP_SENDING: writes raise StreamReset."""
        self._fail_write(f"the peer stopped reading (code {error_code})")

    def wake_writer(self) -> None:
        """The send buffer has room again: let a blocked ``write`` look."""
        self._writable.set()

    def wake(self) -> None:
        """The connection is lost: let every waiting ``read`` and ``write`` see it."""
        self._readable.set()
        self._writable.set()

    @property
    def released(self) -> bool:
        """Both directions are over, so the connection may forget this stream."""
        return self._read_done and (self._finished or self._write_error is not None)

    # -- internals

    def _fail_read(self, reason: str) -> None:
        self._read_error = reason
        self._chunks.clear()
        self._readable.set()
        self._end_read()

    def _fail_write(self, reason: str) -> None:
        self._write_error = reason
        self._writable.set()
        self._host.release_stream(self)

    def _end_read(self) -> None:
        if not self._read_done:
            self._read_done = True
            self._host.release_stream(self)

    def _take(self, max_bytes: int) -> bytes:
        """Up to max_bytes of the buffered chunks: one copy, none for one whole chunk."""
        chunks, wanted = self._chunks, max_bytes
        parts: list[bytes | memoryview] = []
        while chunks and wanted:
            head, start = chunks[0], self._head_offset
            available = len(head) - start
            if available <= wanted:
                parts.append(memoryview(head)[start:] if start else head)
                chunks.popleft()
                self._head_offset = 0
                wanted -= available
            else:
                parts.append(memoryview(head)[start : start + wanted])
                self._head_offset += wanted
                wanted = 0
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)


class PeerStreamIds:
    """Tells a stream the peer opened from late data for one this side already released:
    every peer-initiated bidirectional stream id is new exactly once."""

    def __init__(self, *, is_client: bool) -> None:
        self._local_bit = 0 if is_client else 1  # low bit of our stream ids
        self._floor = 1 - self._local_bit  # every peer stream id below it was seen
        self._seen: set[int] = set()  # peer stream ids seen above the floor (reordering)

    def admit(self, stream_id: int) -> bool:
        """True the first time a peer bidirectional stream id shows up."""
        if stream_id & 2 or stream_id & 1 == self._local_bit:
            return False  # unidirectional (unused), or ours after we released it
        if stream_id < self._floor or stream_id in self._seen:
            return False  # late data for a stream this side already reset and released
        self._seen.add(stream_id)
        while self._floor in self._seen:
            self._seen.discard(self._floor)
            self._floor += 4
        return True
