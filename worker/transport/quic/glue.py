"""The asyncio glue that drives a :class:`TunnelQuicConnection` on an ICE path: one
:class:`QuicTransportConnection` (a :class:`~tunnelpy.worker.transport.interface.Connection`) per peer.

``QuicConnection`` is aioquic's sans-IO state machine; the glue feeds it three inputs, all on
the loop thread: datagrams pushed by :class:`~tunnelpy.worker.transport.ice.IcePath` (no queue, no
task), its timer (a loop handle for ``get_timer()``) and user calls. After any of them one
coalesced ``flush`` (``call_soon``) sends everything aioquic has queued, in one batch, and
then the path-MTU probe that is due, if any, through :class:`ProbeSocket` (unfragmented).
There are no background tasks: the timer and the keep-alive are loop handles, cancelled when
the connection ends.

ICE restart: when the path is lost and :attr:`QuicTransportConnection.on_path_lost` takes it
(returns True), the connection stays open and sends nothing (its packets count as lost) until
the owner calls :meth:`~QuicTransportConnection.switch_path` with the pair a new ICE run
selected, or :meth:`~QuicTransportConnection.path_failed`. aioquic is never told of the new
address: the glue hands it the first pair's remote address for every datagram, so to aioquic
the connection never migrates (the new pair was validated by ICE's checks, with credentials
exchanged over authenticated signaling, and every QUIC packet is authenticated anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from aioquic.quic import events
from aioquic.quic.packet import QuicFrameType

from tunnelpy.common.errors import ConnectFailed, ConnectionLost, DatagramTooLarge
from tunnelpy.worker.transport.ice import IcePath
from tunnelpy.worker.transport.interface import TransportStats
from tunnelpy.worker.transport.quic.connection import TunnelQuicConnection
from tunnelpy.worker.transport.quic.identity import pin_mismatch
from tunnelpy.worker.transport.quic.probe_socket import ProbeSocket
from tunnelpy.worker.transport.quic.settings import QuicSettings, max_datagram_payload
from tunnelpy.worker.transport.quic.stream import PeerStreamIds, QuicTransportStream
from tunnelpy.worker.transport.quic.timer import QuicTimer

DATAGRAM_SEND_QUEUE = 256  # DATAGRAM frames waiting for congestion window before send waits
DATAGRAM_RECV_QUEUE = 1024  # received datagrams kept for recv_datagram(); oldest dropped
BAD_CERTIFICATE = 0x100 + 42  # CRYPTO_ERROR carrying TLS alert bad_certificate (RFC 9001 4.8)


class QuicTransportConnection:
    """One QUIC connection on an ICE path (a :class:`~tunnelpy.worker.transport.interface.Connection`).

    Driven by :meth:`receive_datagram` (called by the path), by the QUIC timer and by the
    stream/datagram calls; each of them ends in one coalesced :meth:`flush` (``call_soon``).
    Its streams reach it only through the :class:`~tunnelpy.worker.transport.quic.stream.StreamHost`
    methods.
    """

    def __init__(
        self,
        quic: TunnelQuicConnection,
        path: IcePath,
        settings: QuicSettings,
        *,
        probe_socket: ProbeSocket,
        pinned_sha256: str | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._pinned = pinned_sha256  # lowercase hex, client only
        self._quic = quic
        self._path = path
        self._probe_socket = probe_socket
        self._remote = path.remote
        self._settings = settings
        self._streams: dict[int, QuicTransportStream] = {}
        self._peer_streams = PeerStreamIds(is_client=quic.configuration.is_client)
        self._incoming: deque[QuicTransportStream] = deque()
        self._incoming_ready = asyncio.Event()
        self._datagrams: deque[bytes] = deque(maxlen=DATAGRAM_RECV_QUEUE)
        self._datagram_ready = asyncio.Event()
        self._datagram_space = asyncio.Event()
        self._blocked_writers: set[QuicTransportStream] = set()
        self._handshake_done = asyncio.Event()
        self._closed: asyncio.Future[str] = self._loop.create_future()
        self._lost_reason: str | None = None  # set once closing or closed: calls fail
        self._timer = QuicTimer(self._loop, self._on_timer)
        self._now = self._timer.now
        self._flush_pending = False
        self._keepalive = self._loop.call_later(settings.keepalive_interval, self._send_keepalive)
        self._ping_id = 0
        self._tx_bytes = 0
        self._rx_bytes = 0
        self._paused = False  # the path is lost and an ICE restart is looking for another
        self.on_path_lost: Callable[[str], bool] | None = None  # True: the owner restarts ICE
        path.attach(self.receive_datagram, self._on_path_lost)

    # -- transport.Connection

    async def open_stream(self) -> QuicTransportStream:
        """A new bidirectional stream; the peer sees it once something (data, FIN) is sent."""
        self.raise_if_lost()
        stream_id = self._quic.open_bidi_stream()
        stream = self._streams[stream_id] = QuicTransportStream(self, stream_id)
        return stream

    async def accept_stream(self) -> QuicTransportStream:
        while not self._incoming:
            self.raise_if_lost()
            self._incoming_ready.clear()
            await self._incoming_ready.wait()
        return self._incoming.popleft()

    def max_datagram_size(self) -> int | None:
        if self._lost_reason is not None or not self._quic.peer_accepts_datagrams():
            return None
        return max_datagram_payload(self._quic.packet_size)

    async def send_datagram(self, data: bytes) -> None:
        limit = self.max_datagram_size()
        self.raise_if_lost()
        if limit is None or len(data) > limit:
            raise DatagramTooLarge(f"a {len(data)}-byte datagram is above this connection's limit of {limit} bytes")
        while self._quic.pending_datagrams() >= DATAGRAM_SEND_QUEUE:
            self._datagram_space.clear()
            await self._datagram_space.wait()
            self.raise_if_lost()
        self._quic.send_datagram_frame(data)
        self._schedule_flush()

    async def recv_datagram(self) -> bytes:
        while not self._datagrams:
            self.raise_if_lost()
            self._datagram_ready.clear()
            await self._datagram_ready.wait()
        return self._datagrams.popleft()

    @property
    def packet_size(self) -> int:
        """The UDP payload size in use: ``packet_size``, raised as path-MTU probes succeed."""
        return self._quic.packet_size

    def stats(self) -> TransportStats:
        rtt = self._quic.smoothed_rtt()
        return TransportStats(
            rtt_ms=None if rtt is None else rtt * 1000,
            udp_tx_bytes=self._tx_bytes,
            udp_rx_bytes=self._rx_bytes,
            path=self._path.pair.path,  # "relay" when a TURN candidate is in the pair
            route=self._path.pair.route,
        )

    def close(self, code: int = 0, reason: str = "") -> None:
        """Send CONNECTION_CLOSE now; every pending and later call raises ConnectionLost."""
        if self._lost_reason is not None:
            return
        self.flush()  # best effort for data and FINs already written: aioquic's close drops them
        self._quic.close(error_code=code, reason_phrase=reason)
        self._fail_everything(f"closed locally: {reason or 'no reason given'}")
        self.flush()

    async def wait_closed(self) -> str:
        """Wait until the connection is over and return why."""
        return await asyncio.shield(self._closed)

    # -- handshake (used by connect_quic)

    async def wait_handshake(self) -> None:
        await self._handshake_done.wait()
        if self._lost_reason is not None:
            raise ConnectFailed(f"the QUIC handshake failed: {self._lost_reason}")

    def _check_pin(self) -> None:
        """Client: compare the server certificate with the pin as soon as the handshake
        completes, before our Finished is sent, so a mismatch never confirms the handshake."""
        if self._pinned is None:
            return
        if mismatch := pin_mismatch(self._quic.peer_certificate(), self._pinned):
            # A transport-level close: an application close would lose its reason phrase in
            # the handshake packets (RFC 9000 section 10.2.3), and the peer should see why.
            self._quic.close(BAD_CERTIFICATE, QuicFrameType.CRYPTO, "certificate fingerprint mismatch")
            self._fail_everything(mismatch)

    # -- inputs: datagrams, timer, keep-alive, path loss

    def receive_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._rx_bytes += len(data)
        # The path only delivers datagrams from the selected remote address, so give aioquic
        # that exact tuple: an IPv6 4-tuple would look like a migration to a new path.
        self._quic.receive_datagram(data, self._remote, self._now())
        self._process_events()
        self._schedule_flush()

    def _on_timer(self) -> None:
        self._quic.handle_timer(self._now())
        self._process_events()
        self.flush()

    def _send_keepalive(self) -> None:
        self._ping_id += 1
        self._quic.send_ping(self._ping_id)
        self._schedule_flush()
        self._keepalive = self._loop.call_later(self._settings.keepalive_interval, self._send_keepalive)

    def _on_path_lost(self, reason: str) -> None:
        if self._lost_reason is None and self.on_path_lost is not None and self.on_path_lost(reason):
            self._path.detach()
            self._paused = True
            return
        self._end(reason)

    # -- ICE restart: the owner moves the connection to another pair, or gives up

    @property
    def path(self) -> IcePath:
        return self._path

    def switch_path(self, path: IcePath) -> None:
        """Carry this connection on ``path`` from now on; the old path is detached. What was in
        flight is sent again at once, without waiting for a backed-off PTO."""
        self.raise_if_lost()
        self._path.detach()
        self._path = path
        self._probe_socket = ProbeSocket(path)
        self._paused = False
        path.attach(self.receive_datagram, self._on_path_lost)
        self._quic.path_changed(self._now())
        self.flush()

    def path_failed(self, reason: str) -> None:
        """No other path was found: the connection ends with ``reason``."""
        self._end(reason)

    # -- output

    def _schedule_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Wake writers that ACKs unblocked, send all queued datagrams, re-arm the timer."""
        self._flush_pending = False
        if self._closed.done():
            return
        self._wake_writers()
        now = self._now()
        datagrams = self._quic.datagrams_to_send(now)
        if datagrams and not self._paused:
            packets = [data for data, _ in datagrams]
            self._tx_bytes += sum(map(len, packets))
            self._path.send_many(packets)
        if not self._paused and (probe := self._quic.mtu_probe(now, self._probe_socket.idle)):
            seq, datagram = probe
            self._tx_bytes += len(datagram)
            if not self._probe_socket.send(datagram):
                self._quic.forget_mtu_probe(seq, now)
        self._process_events()
        if not self._closed.done():
            self._timer.arm(self._quic.get_timer())

    def _wake_writers(self) -> None:
        if self._blocked_writers:
            for stream in list(self._blocked_writers):
                if self.can_write(stream.stream_id):
                    stream.wake_writer()
        if self._quic.pending_datagrams() < DATAGRAM_SEND_QUEUE:
            self._datagram_space.set()

    # -- events

    def _process_events(self) -> None:
        quic = self._quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                stream = self._streams.get(event.stream_id) or self._new_peer_stream(event)
                if stream is not None:
                    stream.deliver(event.data, event.end_stream)
            elif isinstance(event, events.DatagramFrameReceived):
                self._datagrams.append(event.data)
                self._datagram_ready.set()
            elif isinstance(event, events.StreamReset):
                if stream := self._streams.get(event.stream_id):
                    stream.peer_reset(event.error_code)
            elif isinstance(event, events.StopSendingReceived):
                if stream := self._streams.get(event.stream_id):
                    stream.peer_stopped(event.error_code)
            elif isinstance(event, events.HandshakeCompleted):
                self._check_pin()
                self._handshake_done.set()
            elif isinstance(event, events.ConnectionTerminated):
                self._end(_describe_close(event))

    def _new_peer_stream(self, event: events.StreamDataReceived) -> QuicTransportStream | None:
        """A stream the peer opened, or None for ids that are ours, unidirectional or seen."""
        stream_id = event.stream_id
        if not self._peer_streams.admit(stream_id):
            return None
        stream = self._streams[stream_id] = QuicTransportStream(self, stream_id)
        self._incoming.append(stream)
        self._incoming_ready.set()
        return stream

    # -- StreamHost: what a QuicTransportStream asks of its connection

    @property
    def is_lost(self) -> bool:
        return self._lost_reason is not None

    def raise_if_lost(self) -> None:
        if self._lost_reason is not None:
            raise ConnectionLost(self._lost_reason)

    def can_write(self, stream_id: int) -> bool:
        return self._quic.unacked_bytes(stream_id) < self._settings.send_buffer

    def block_writer(self, stream: QuicTransportStream) -> None:
        self._blocked_writers.add(stream)  # woken by _wake_writers as ACKs free the buffer

    def unblock_writer(self, stream: QuicTransportStream) -> None:
        self._blocked_writers.discard(stream)

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream=end_stream)
        self._schedule_flush()

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._quic.reset_stream(stream_id, error_code)
        self._schedule_flush()

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        # ValueError: aioquic has no receive state for it yet (nothing arrived)
        with contextlib.suppress(ValueError):
            self._quic.stop_stream(stream_id, error_code)
        self._schedule_flush()

    def credit_consumed(self, stream_id: int, count: int) -> None:
        """Credit read bytes to the receive window; flush when a window update is due."""
        consumed = self._quic.consumed
        before = consumed.get(stream_id, 0)
        consumed[stream_id] = before + count
        step = self._quic.stream_window // 4
        if (before + count) // step != before // step:
            self._schedule_flush()

    def release_stream(self, stream: QuicTransportStream) -> None:
        if stream.released:
            self._streams.pop(stream.stream_id, None)
            self._quic.consumed.pop(stream.stream_id, None)

    # -- the end

    def _fail_everything(self, reason: str) -> None:
        if self._lost_reason is None:
            self._lost_reason = reason
        self._handshake_done.set()
        self._incoming_ready.set()
        self._datagram_ready.set()
        self._datagram_space.set()
        for stream in self._streams.values():
            stream.wake()

    def _end(self, reason: str) -> None:
        """The connection is over (terminated, idle, or the ICE path is gone)."""
        if self._closed.done():
            return
        self._fail_everything(reason)
        self._closed.set_result(self._lost_reason or reason)
        self._keepalive.cancel()
        self._timer.cancel()
        self._path.detach()


def _describe_close(event: events.ConnectionTerminated) -> str:
    phrase = event.reason_phrase or "no reason given"
    return f"the QUIC connection ended: {phrase} (error 0x{event.error_code:x})"
