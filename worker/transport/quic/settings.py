"""Tuning of one QUIC connection (:class:`QuicSettings`) and the aioquic configuration built
from it; the packet-size arithmetic the datagram limit follows."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from aioquic.quic.configuration import QuicConfiguration

from tunnelpy.worker.transport.quic.identity import SERVER_NAME, ServerIdentity

ALPN = "tunnel-py/1"
DATAGRAM_FRAME_LIMIT = 65536  # what we accept; the sender's real bound is the packet size
MIN_PACKET_SIZE = 1200  # QUIC's smallest max_udp_payload_size (RFC 9000 section 14)
# aioquic 1.7 writes the length of STREAM and CRYPTO frames as a 2-byte varint (push_uint16 of
# length | 0x4000), so a frame carries at most 16383 bytes: bigger packets corrupt the stream.
MAX_PACKET_SIZE = 16384
_MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class QuicSettings:
    """Tuning of one QUIC connection; the defaults suit a tunnel over the internet.

    ``packet_size`` is the UDP payload every connection starts with (1452 + 28 fits a 1480-byte
    IPv4 path). Path-MTU discovery then probes up to ``max_packet_size`` and uses a larger size
    only once a probe of it was acknowledged (:mod:`tunnelpy.worker.transport.quic.pmtud`); it is also the
    max_udp_payload_size we advertise. ``max_packet_size == packet_size`` turns discovery off.
    """

    packet_size: int = 1452
    max_packet_size: int = 16384
    stream_window: int = 16 * _MiB  # receive window per stream, beyond what was read
    connection_window: int = 64 * _MiB  # initial; aioquic raises it as data arrives
    send_buffer: int = 4 * _MiB  # unacked bytes per stream before write() waits
    idle_timeout: float = 300.0
    keepalive_interval: float = 15.0
    handshake_timeout: float = 30.0
    congestion_control: str = "reno"

    def __post_init__(self) -> None:
        if not MIN_PACKET_SIZE <= self.packet_size <= MAX_PACKET_SIZE:
            raise ValueError(
                f"QuicSettings.packet_size {self.packet_size} must lie between {MIN_PACKET_SIZE} (QUIC's "
                f"minimum) and {MAX_PACKET_SIZE} (the most stream data aioquic 1.7 frames in one packet)"
            )
        if not self.packet_size <= self.max_packet_size <= MAX_PACKET_SIZE:
            raise ValueError(
                f"QuicSettings.max_packet_size {self.max_packet_size} must lie between packet_size "
                f"{self.packet_size} (path-MTU discovery off) and {MAX_PACKET_SIZE} (aioquic 1.7 "
                "cannot frame more stream data in one packet)"
            )


def quic_configuration(
    settings: QuicSettings, *, is_client: bool, identity: ServerIdentity | None = None
) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        congestion_control_algorithm=settings.congestion_control,
        idle_timeout=settings.idle_timeout,
        max_data=settings.connection_window,
        max_stream_data=settings.stream_window,
        max_datagram_size=settings.packet_size,
        max_datagram_frame_size=DATAGRAM_FRAME_LIMIT,
    )
    if is_client:
        # No CA can vouch for a per-session certificate: the connection checks the pin when
        # the handshake completes (aioquic still checks the CertificateVerify signature).
        config.server_name = SERVER_NAME
        config.verify_mode = ssl.CERT_NONE
    else:
        if identity is None:
            raise ValueError("the QUIC server needs a ServerIdentity")
        config.certificate = identity.certificate
        config.private_key = identity.private_key
    return config


def max_datagram_payload(packet_size: int) -> int:
    """The largest DATAGRAM payload that fits one packet, for any peer connection ID:
    short header 1 + CID <= 20 + packet number 2, AEAD tag 16, frame type 1 + length 2-4."""
    length_bytes = 2 if packet_size < 16384 else 4
    return packet_size - (1 + 20 + 2) - 16 - (1 + length_bytes)
