"""One bidirectional QUIC stream behind the :class:`~tunnelpy.worker.transport.interface.Stream` interface.

Backpressure both ways (stack-notes section 5): ``write()`` waits while the stream's unacked
send buffer is full and is woken as ACKs arrive; reads credit the stream's receive window
(``QuicTransportConnection._on_consumed``), so a stalled reader stalls the peer's writer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

from tunnelpy.common.errors import StreamReset

if TYPE_CHECKING:
    from tunnelpy.worker.transport.quic.glue import QuicTransportConnection


class QuicTransportStream:
    """One bidirectional QUIC stream (a :class:`~tunnelpy.worker.transport.interface.Stream`).

    Its connection pushes received data, FIN, resets and STOP_SENDING into it and sets the
    ``_readable`` / ``_writable`` events; ``read`` and ``write`` wait on those.
    """

    def __init__(self, conn: QuicTransportConnection, stream_id: int) -> None:
        self._conn = conn
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
            self._conn._raise_if_lost()
            self._readable.clear()
            await self._readable.wait()
        data = self._take(max_bytes)
        self._conn._on_consumed(self, len(data))
        return data

    async def write(self, data: bytes) -> None:
        conn = self._conn
        while True:
            conn._raise_if_lost()
            if self._write_error is not None:
                raise StreamReset(self._write_error)
            if self._finished:
                raise RuntimeError("Stream.write() after finish()")
            if conn._quic.unacked_bytes(self.stream_id) < conn._settings.send_buffer:
                break
            self._writable.clear()
            conn._blocked_writers.add(self)
            try:
                await self._writable.wait()
            finally:
                conn._blocked_writers.discard(self)
        if data:
            conn._quic.send_stream_data(self.stream_id, data)
            conn._schedule_flush()

    async def finish(self) -> None:
        self._conn._raise_if_lost()
        if self._finished or self._write_error is not None:
            return  # already finished, or reset: there is nothing left to end
        self._finished = True
        self._conn._quic.send_stream_data(self.stream_id, b"", end_stream=True)
        self._conn._schedule_flush()
        self._conn._maybe_release(self)

    def reset(self, error_code: int = 0) -> None:
        """Abort both directions: RESET_STREAM for ours, STOP_SENDING for the peer's."""
        if self._conn._lost_reason is not None:
            return
        quic = self._conn._quic
        if not self._finished and self._write_error is None:
            quic.reset_stream(self.stream_id, error_code)
        if not self._read_done:
            # ValueError: aioquic has no receive state for it yet (nothing arrived)
            with contextlib.suppress(ValueError):
                quic.stop_stream(self.stream_id, error_code)
        self._on_write_error(f"the stream was reset locally (code {error_code})")
        self._on_reset(f"the stream was reset locally (code {error_code})")
        self._conn._schedule_flush()

    # -- called by the connection

    def _on_data(self, data: bytes, end_stream: bool) -> None:
        if self._read_error is not None:
            return
        if data:
            self._chunks.append(data)
        if end_stream:
            self._fin_received = True
        self._readable.set()

    def _on_reset(self, reason: str) -> None:
        self._read_error = reason
        self._chunks.clear()
        self._readable.set()
        self._end_read()

    def _on_write_error(self, reason: str) -> None:
        self._write_error = reason
        self._writable.set()
        self._conn._maybe_release(self)

    def _wake_all(self) -> None:
        self._readable.set()
        self._writable.set()

    @property
    def _released(self) -> bool:
        """Both directions are over, so the connection may forget this stream."""
        return self._read_done and (self._finished or self._write_error is not None)

    def _end_read(self) -> None:
        if not self._read_done:
            self._read_done = True
            self._conn._maybe_release(self)

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
