"""TunnelQuicConnection's path-MTU discovery, two peers in memory: no sockets, simulated time,
and a path that drops every datagram above its MTU."""

from __future__ import annotations

import pytest
from aioquic.buffer import Buffer
from aioquic.quic.packet import pull_quic_header

from tunnelpy.worker.transport.quic.connection import TunnelQuicConnection
from tunnelpy.worker.transport.quic.identity import create_server_identity
from tunnelpy.worker.transport.quic.pmtud import MAX_PROBES
from tunnelpy.worker.transport.quic.settings import QuicSettings, max_datagram_payload, quic_configuration

CLIENT = ("192.0.2.1", 1111)
SERVER = ("192.0.2.2", 2222)
ONE_WAY = 0.005  # seconds a datagram takes on the simulated path


class Path:
    """Both directions of a path whose MTU can change; datagrams above it vanish."""

    def __init__(self, settings: QuicSettings, server_settings: QuicSettings | None = None) -> None:
        server_settings = server_settings or settings
        self.now = 0.0
        self.mtu_payload = 65527  # the largest UDP payload the path carries
        self.dropped = 0
        self.in_flight: list[tuple[float, TunnelQuicConnection, bytes, tuple[str, int]]] = []
        self.client = TunnelQuicConnection(
            configuration=quic_configuration(settings, is_client=True),
            stream_window=settings.stream_window,
            max_packet_size=settings.max_packet_size,
        )
        self.client.connect(SERVER, now=self.now)
        first = self.client.datagrams_to_send(self.now)
        cid = pull_quic_header(Buffer(data=first[0][0]), 8).destination_cid
        server_config = quic_configuration(server_settings, is_client=False, identity=create_server_identity())
        self.server = TunnelQuicConnection(
            configuration=server_config,
            original_destination_connection_id=cid,
            stream_window=server_settings.stream_window,
            max_packet_size=server_settings.max_packet_size,
        )
        for data, _ in first:
            self.server.receive_datagram(data, CLIENT, self.now)

    def _send(self, to: TunnelQuicConnection, data: bytes, source: tuple[str, int]) -> None:
        if len(data) > self.mtu_payload:
            self.dropped += 1
        else:
            self.in_flight.append((self.now + ONE_WAY, to, data, source))

    def _transmit(self, conn: TunnelQuicConnection) -> None:
        peer, source = (self.server, CLIENT) if conn is self.client else (self.client, SERVER)
        for data, _ in conn.datagrams_to_send(self.now):
            self._send(peer, data, source)
        if probe := conn.mtu_probe(self.now, lambda: True):
            self._send(peer, probe[1], source)

    def run(self, seconds: float, ping_every: float | None = None) -> None:
        """Deliver datagrams and fire timers in time order for ``seconds`` of simulated time;
        with ``ping_every``, the client also sends a PING that often (ack-eliciting traffic)."""
        end = self.now + seconds
        next_ping = self.now if ping_every else None
        for _ in range(200_000):
            if ping_every and next_ping is not None and self.now >= next_ping:
                self.client.send_ping(0)
                next_ping += ping_every
            self._transmit(self.client)
            self._transmit(self.server)
            timers = [(at, conn) for conn in (self.client, self.server) if (at := conn.get_timer()) is not None]
            arrivals = [(at, to) for at, to, _, _ in self.in_flight]
            pings = [] if next_ping is None else [(next_ping, self.client)]
            at, _ = min(timers + arrivals + pings, key=lambda item: item[0], default=(end, self.client))
            if at > end:
                self.now = end
                return
            self.now = max(self.now, at)
            for item in [item for item in self.in_flight if item[0] <= self.now]:
                self.in_flight.remove(item)
                item[1].receive_datagram(item[2], item[3], self.now)
            for conn_at, timer_conn in timers:
                if conn_at <= self.now:
                    timer_conn.handle_timer(self.now)
        raise AssertionError("the simulation did not settle")


def test_a_path_that_carries_everything_reaches_the_maximum_on_both_sides() -> None:
    path = Path(QuicSettings())
    path.run(2.0)
    assert path.client.packet_size == path.server.packet_size == 16384
    assert path.client.mtu_search.probes_sent == 5


def test_lost_probes_keep_the_size_and_the_congestion_window() -> None:
    path = Path(QuicSettings())
    path.mtu_payload = 1472  # Ethernet
    path.run(0.2)
    window = path.client._loss.congestion_window
    path.run(3.0, ping_every=0.002)  # later packets get acked: probes are lost by packet threshold
    assert path.client.packet_size == path.server.packet_size == 1472
    assert path.client.mtu_search.probes_sent == 1 + MAX_PROBES  # 1472 acked, 4096 lost 3 times
    assert path.dropped == 2 * MAX_PROBES
    assert path.client._loss.congestion_window >= window  # probe loss is no congestion
    assert path.client._loss._cc.ssthresh is None


def test_a_peer_with_discovery_off_caps_the_other_side_by_its_max_udp_payload_size() -> None:
    path = Path(QuicSettings(), server_settings=QuicSettings(max_packet_size=1452))
    path.run(2.0)
    assert path.client.packet_size == path.server.packet_size == 1452
    assert path.client.mtu_search.probes_sent == path.server.mtu_search.probes_sent == 0


def test_data_keeps_flowing_when_the_path_shrinks_under_large_packets() -> None:
    path = Path(QuicSettings())
    path.run(1.0)
    assert path.client.packet_size == 16384
    stream_id = path.client.get_next_available_stream_id()
    path.client.send_datagram_frame(b"d" * max_datagram_payload(16384))  # too big once it shrinks
    path.mtu_payload = 1472  # the route changes
    payload = bytes(range(256)) * 2000
    path.client.send_stream_data(stream_id, payload, end_stream=True)
    path.run(10.0)
    assert path.client.packet_size == 1452  # fell back to the base, then 4096 failed again
    received = b""
    while (event := path.server.next_event()) is not None:
        received += getattr(event, "data", b"") if getattr(event, "stream_id", None) == stream_id else b""
    assert received == payload
    assert path.client.pending_datagrams() == 0


def test_settings_reject_packet_sizes_aioquic_cannot_frame() -> None:
    assert QuicSettings(max_packet_size=1452).max_packet_size == 1452  # discovery off
    with pytest.raises(ValueError, match=r"max_packet_size 32768 must lie between packet_size 1452"):
        QuicSettings(max_packet_size=32768)
    with pytest.raises(ValueError, match=r"max_packet_size 1400 must lie between packet_size 1452"):
        QuicSettings(max_packet_size=1400)
    with pytest.raises(ValueError, match=r"packet_size 20000 must lie between 1200"):
        QuicSettings(packet_size=20000)
