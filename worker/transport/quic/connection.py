"""aioquic's ``QuicConnection`` adjusted for the tunnel; every aioquic internal we use is here.

What differs from stock aioquic 1.7, and why:

* The receive window of a stream follows what the application has *read* (stock aioquic
  doubles it whenever the peer used half, read or not, so a stalled local reader would buffer
  without bound).
* A pacer whose burst covers a timer tick (:class:`_TimerFriendlyPacer`) and ACKs sent once
  per batch of received datagrams instead of after 1 ms: with a 1 ms loop timer, stock
  pacing and ACK delays stalled one stream at about 16 packets per millisecond.
* Path-MTU discovery (:mod:`tunnelpy.worker.transport.quic.pmtud` decides, this class acts): once the
  handshake is confirmed, :meth:`TunnelQuicConnection.mtu_probe` builds PING + PADDING probes
  of the sizes the search asks for; an acknowledged probe raises the packet size of the
  connection (``_max_datagram_size``, and the pacer's and congestion controller's copies; the
  congestion window in bytes is left as it is, RFC 8899 section 3). Probes count as bytes in
  flight but are sent regardless of the congestion window, one at a time, and their loss is
  routed past the congestion controller (RFC 9000 section 14.4). We advertise
  ``max_udp_payload_size`` = our maximum and cap the search by the peer's.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import aioquic
from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection, QuicConnectionState
from aioquic.quic.packet import (
    QuicFrameType,
    QuicPacketType,
    pull_quic_transport_parameters,
    push_quic_transport_parameters,
)
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder, QuicSentPacket
from aioquic.quic.recovery import QuicPacketPacer, QuicPacketRecovery, QuicPacketSpace
from aioquic.quic.stream import QuicStream, QuicStreamSender
from cryptography import x509

from tunnelpy.common.logs import get_logger
from tunnelpy.worker.transport.quic.pmtud import PathMtuSearch
from tunnelpy.worker.transport.quic.settings import max_datagram_payload
from tunnelpy.worker.transport.quic.timer import TIMER_RESOLUTION

log = get_logger(__name__)

BLACK_HOLE_PTOS = 3  # loss timeouts in a row, nothing acknowledged: large packets vanish


def _check_aioquic_version() -> None:
    version = tuple(int(part) for part in aioquic.__version__.split(".")[:2])
    sender = QuicStreamSender(stream_id=0, writable=True)

    def params(function: Any) -> list[str]:
        return list(inspect.signature(function).parameters)

    shape_ok = (
        hasattr(sender, "_buffer_start")
        and hasattr(sender, "_buffer_stop")
        and params(QuicConnection._write_stream_limits) == ["self", "builder", "space", "stream"]
        and hasattr(QuicConnection, "_on_max_stream_data_delivery")
        and hasattr(QuicConnection, "_get_or_create_stream_for_send")
        and params(QuicConnection._flush_builder) == ["self", "builder", "network_path", "peer_cid", "now"]
        and params(QuicConnection._serialize_transport_parameters) == ["self"]
        and params(QuicConnection._parse_transport_parameters) == ["self", "data", "from_session_ticket"]
        and sorted(params(QuicPacketRecovery._on_packets_lost))
        == ["congestion_event", "now", "packets", "persistent_congestion", "self", "space"]
    )
    if not (1, 7) <= version < (1, 8) or not shape_ok:
        raise ImportError(
            f"tunnelpy.worker.transport.quic.connection supports aioquic 1.7, found {aioquic.__version__}: "
            "it reads stream send buffers, replaces the stream receive-window update and sends "
            "its own path-MTU probes; install aioquic 1.7 or re-check TunnelQuicConnection "
            "against the new version"
        )


_check_aioquic_version()

_REQUIRED_ATTRIBUTES = (
    *("_streams", "_datagrams_pending", "_loss", "_remote_max_datagram_frame_size", "_cryptos"),
    *("_handshake_confirmed", "_is_client", "_max_datagram_size", "_network_paths", "_packet_number"),
    *("_peer_cid", "_quic_logger", "_spin_bit", "_state", "_version"),
)


class TunnelQuicConnection(QuicConnection):
    """aioquic's QuicConnection with a read-driven stream receive window and path-MTU
    discovery, plus read-only accessors for the internals the glue needs."""

    def __init__(self, *, stream_window: int, max_packet_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stream_window = stream_window
        self.consumed: dict[int, int] = {}  # stream id -> bytes the application has read
        for name in _REQUIRED_ATTRIBUTES:
            if not hasattr(self, name):
                raise RuntimeError(f"aioquic QuicConnection changed shape: no {name}")
        loss = self._loss
        if type(loss._pacer) is not QuicPacketPacer or not hasattr(loss._cc, "_max_datagram_size"):
            raise RuntimeError("aioquic QuicPacketRecovery changed shape: no QuicPacketPacer or _cc")
        if not hasattr(loss, "_pto_count") or not hasattr(loss._pacer, "_max_datagram_size"):
            raise RuntimeError("aioquic QuicPacketRecovery changed shape: no _pto_count")
        self._loss._pacer = _TimerFriendlyPacer(max_datagram_size=self._max_datagram_size)
        # ACK in the flush that follows each batch of received datagrams (one per loop pass)
        # instead of 1 ms later: with a 1 ms timer that was up to 2 ms, which stalls the
        # sender's congestion window. The batching already keeps ACKs few.
        self._ack_delay = 0.0
        self.mtu_search = PathMtuSearch(base=self._max_datagram_size, maximum=max_packet_size)
        self._mtu_started = False
        self._peer_max_udp_payload: int | None = None
        self._mtu_probe_numbers: set[int] = set()  # packet numbers of probes not yet acked or lost
        self._mtu_outcomes: deque[tuple[int, bool]] = deque()  # (probe seq, acked) to report
        self._lose_packets = self._loss._on_packets_lost
        self._loss._on_packets_lost = self._on_packets_lost  # type: ignore[method-assign]

    # -- read-only accessors and stream helpers for the glue

    @property
    def packet_size(self) -> int:
        """The UDP payload size packets are built to now."""
        return self._max_datagram_size

    def open_bidi_stream(self) -> int:
        """Allocate the next local bidirectional stream now (aioquic does it on first send)."""
        stream_id = self.get_next_available_stream_id()
        self._get_or_create_stream_for_send(stream_id)
        return stream_id

    def unacked_bytes(self, stream_id: int) -> int:
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        return stream.sender._buffer_stop - stream.sender._buffer_start

    def pending_datagrams(self) -> int:
        return len(self._datagrams_pending)

    def peer_accepts_datagrams(self) -> bool:
        return self._remote_max_datagram_frame_size is not None

    def peer_certificate(self) -> x509.Certificate | None:
        return self.tls._peer_certificate

    def smoothed_rtt(self) -> float | None:
        return self._loss._rtt_smoothed if self._loss._rtt_initialized else None

    def _write_stream_limits(self, builder: Any, space: Any, stream: QuicStream) -> None:
        # Replaces aioquic's version, which doubles the window once the peer used half of
        # it. Here the window ends one stream_window past what the application has read,
        # moved in quarter-window steps so MAX_STREAM_DATA frames stay rare.
        if not stream.max_stream_data_local or stream.stream_id is None:  # our own unidirectional streams
            return
        limit = self.consumed.get(stream.stream_id, 0) + self.stream_window
        if limit - stream.max_stream_data_local >= self.stream_window // 4:
            stream.max_stream_data_local = limit
        if stream.max_stream_data_local_sent == stream.max_stream_data_local:
            return
        buf = builder.start_frame(
            QuicFrameType.MAX_STREAM_DATA,
            capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
            handler=self._on_max_stream_data_delivery,  # resends it if lost
            handler_args=(stream,),
        )
        buf.push_uint_var(stream.stream_id)
        buf.push_uint_var(stream.max_stream_data_local)
        stream.max_stream_data_local_sent = stream.max_stream_data_local

    # -- path-MTU discovery

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        if self._mtu_active():
            self._update_mtu_search(now)
        return super().datagrams_to_send(now)

    def mtu_probe(self, now: float, can_send: Callable[[], bool]) -> tuple[int, bytes] | None:
        """(seq, datagram) of the path-MTU probe due now, if any and if ``can_send()``; the glue
        sends it unfragmented and calls :meth:`forget_mtu_probe` if it could not."""
        if not self._mtu_active():
            return None
        probe = self.mtu_search.next_probe(now)
        if probe is None or self._version is None:
            return None
        if not can_send():
            self.mtu_search.on_probe_unsent(probe.seq, now)
            return None
        builder = QuicPacketBuilder(
            host_cid=self.host_cid,
            is_client=self._is_client,
            max_datagram_size=probe.size,
            packet_number=self._packet_number,
            peer_cid=self._peer_cid.cid,
            quic_logger=self._quic_logger,
            spin_bit=self._spin_bit,
            version=self._version,
        )
        builder.start_packet(QuicPacketType.ONE_RTT, self._cryptos[tls.Epoch.ONE_RTT])
        packet_number = builder.packet_number
        builder.start_frame(
            QuicFrameType.PING, handler=self._on_mtu_probe_delivery, handler_args=(probe.seq, packet_number)
        )
        padding = builder.remaining_buffer_space
        builder.start_frame(QuicFrameType.PADDING, capacity=padding).push_bytes(bytes(padding - 1))
        self._mtu_probe_numbers.add(packet_number)
        [(datagram, _)] = self._flush_builder(builder, self._network_paths[0], self._peer_cid.cid, now)
        return probe.seq, datagram

    def forget_mtu_probe(self, seq: int, now: float) -> None:
        """The probe ``seq`` was not sent (it could not go out unfragmented)."""
        self.mtu_search.on_probe_unsent(seq, now)

    def get_timer(self) -> float | None:
        at = super().get_timer()
        probe_at = self.mtu_search.timer() if self._mtu_active() else None
        if probe_at is not None and (at is None or probe_at < at):
            return probe_at
        return at

    def handle_timer(self, now: float) -> None:
        super().handle_timer(now)
        if self._loss._pto_count >= BLACK_HOLE_PTOS:
            self.mtu_search.on_black_hole(now)

    def path_changed(self, now: float) -> None:
        """The connection moved to another ICE pair (an ICE restart): everything in flight went
        into the old path. Retransmit it now, as a PTO does (no congestion event), and send a
        probe at once: the PTO backed off during the pause and would wait seconds more."""
        loss = self._loss
        loss._pto_count = 0
        for space in loss.spaces:
            if space.sent_packets:
                self._on_packets_lost(
                    packets=list(space.sent_packets.values()), now=now, space=space, congestion_event=False
                )
        loss._send_probe()

    def _mtu_active(self) -> bool:
        return self.mtu_search.enabled and self._handshake_confirmed and self._state is QuicConnectionState.CONNECTED

    def _update_mtu_search(self, now: float) -> None:
        """Report probe outcomes and timeouts to the search, then use the size it settled on."""
        search = self.mtu_search
        if not self._mtu_started:
            self._mtu_started = True
            search.start(now, self._peer_max_udp_payload)
        while self._mtu_outcomes:
            seq, acked = self._mtu_outcomes.popleft()
            (search.on_probe_acked if acked else search.on_probe_lost)(seq, now)
        search.handle_timer(now)
        if search.size != self._max_datagram_size:
            self._set_packet_size(search.size)

    def _set_packet_size(self, size: int) -> None:
        old, self._max_datagram_size = self._max_datagram_size, size
        self._loss._pacer._max_datagram_size = size
        self._loss._cc._max_datagram_size = size  # type: ignore[attr-defined]  # checked in __init__
        if size < old:  # DATAGRAM frames that no longer fit would block the queue: drop them
            limit = max_datagram_payload(size)
            self._datagrams_pending = deque(data for data in self._datagrams_pending if len(data) <= limit)
        log.info("quic.pmtu", old=old, new=size, probes=self.mtu_search.probes_sent, black_hole=size < old)

    def _on_mtu_probe_delivery(self, delivery: QuicDeliveryState, seq: int, packet_number: int) -> None:
        # Delivery handlers get no time: report at the next datagrams_to_send, which the
        # glue calls right after every batch of received datagrams and every timer.
        self._mtu_probe_numbers.discard(packet_number)
        self._mtu_outcomes.append((seq, delivery == QuicDeliveryState.ACKED))

    def _on_packets_lost(
        self,
        *,
        packets: Iterable[QuicSentPacket],
        now: float,
        space: QuicPacketSpace,
        congestion_event: bool = True,
        persistent_congestion: bool = False,
    ) -> None:
        """Sits in front of QuicPacketRecovery._on_packets_lost: a lost probe is no sign of
        congestion, and lost large packets may be a black hole for the search to check."""
        lost = list(packets)
        probe_numbers = self._mtu_probe_numbers
        if probe_numbers and any(packet.packet_number in probe_numbers for packet in lost):
            probes = [packet for packet in lost if packet.packet_number in probe_numbers]
            lost = [packet for packet in lost if packet.packet_number not in probe_numbers]
            self._lose_packets(packets=probes, now=now, space=space, congestion_event=False)
            if not lost:
                return
        if congestion_event and any(packet.sent_bytes > self.mtu_search.base for packet in lost):
            self.mtu_search.on_large_packets_lost(now)
        self._lose_packets(
            packets=lost,
            now=now,
            space=space,
            congestion_event=congestion_event,
            persistent_congestion=persistent_congestion,
        )

    def _serialize_transport_parameters(self) -> bytes:
        # aioquic sends no max_udp_payload_size; advertise our maximum so that a peer running
        # the same search probes no further than we would.
        params = pull_quic_transport_parameters(Buffer(data=super()._serialize_transport_parameters()))
        params.max_udp_payload_size = self.mtu_search.maximum
        buf = Buffer(capacity=3 * self._max_datagram_size)
        push_quic_transport_parameters(buf, params)
        return buf.data

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        self._peer_max_udp_payload = pull_quic_transport_parameters(Buffer(data=data)).max_udp_payload_size


class _TimerFriendlyPacer(QuicPacketPacer):
    """aioquic's pacer lets at most 16 packets go in one burst, then asks to wait one packet
    time (microseconds). With a 1 ms timer that caps a connection at 16 packets per ms
    (~23 MB/s with 1452-byte packets). Letting the bucket hold two timer ticks of sending
    keeps the average rate cwnd/RTT while each wake-up sends what one tick allows."""

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        self.bucket_max = max(self.bucket_max, 2 * TIMER_RESOLUTION)
