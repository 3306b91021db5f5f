"""aioquic over an ICE-selected pair, behind the :mod:`tunnelpy.worker.transport.interface` interface.

Roles: the receiver is the ICE controlling side and the QUIC client; the sender is ICE
controlled and the QUIC server, with a fresh self-signed certificate whose SHA-256 the
client pins (it travels in the signaling answer).

This module is the entry point (:func:`connect_quic`); the parts live beside it:

* :mod:`~tunnelpy.worker.transport.quic.settings`: :class:`QuicSettings` and the aioquic configuration;
* :mod:`~tunnelpy.worker.transport.quic.identity`: the sender's certificate and its fingerprint;
* :mod:`~tunnelpy.worker.transport.quic.connection`: aioquic's ``QuicConnection`` with our changes
  (read-driven receive windows, pacing and ACKs fit for a 1 ms timer, path-MTU discovery);
* :mod:`~tunnelpy.worker.transport.quic.pmtud`: the path-MTU search itself, sans-IO;
* :mod:`~tunnelpy.worker.transport.quic.glue`, :mod:`~tunnelpy.worker.transport.quic.stream`: the asyncio glue
  (connection and streams) and :mod:`~tunnelpy.worker.transport.quic.probe_socket` for unfragmented probes.

Three adjustments to aioquic make it fast on an asyncio loop whose timers tick in whole
milliseconds (libuv, and epoll's timeout): a microsecond clock (``QuicTransportConnection._now``),
a pacer whose burst covers a timer tick and ACKs sent once per batch of received datagrams
instead of after a 1 ms delay (both in ``TunnelQuicConnection``). Without them one stream
stalled at about 16 packets per millisecond, ACKs and pacing waiting on timers. A fourth,
path-MTU discovery, lets loopback and LAN paths carry packets up to ``max_packet_size``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from dataclasses import dataclass
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from tunnelpy.common.errors import ConnectFailed, ProtocolError
from tunnelpy.worker.transport.ice import IceAgent, IcePath
from tunnelpy.worker.transport.ice_sockets import TURN_CHANNEL_OVERHEAD
from tunnelpy.worker.transport.quic.connection import TunnelQuicConnection
from tunnelpy.worker.transport.quic.glue import QuicTransportConnection
from tunnelpy.worker.transport.quic.identity import ServerIdentity, certificate_fingerprint, create_server_identity
from tunnelpy.worker.transport.quic.probe_socket import ProbeSocket
from tunnelpy.worker.transport.quic.settings import QuicSettings, max_datagram_payload, quic_configuration
from tunnelpy.worker.transport.quic.stream import QuicTransportStream

__all__ = [
    "QuicSettings",
    "QuicTransportConnection",
    "QuicTransportStream",
    "ServerIdentity",
    "certificate_fingerprint",
    "connect_quic",
    "create_server_identity",
    "max_datagram_payload",
]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


async def connect_quic(
    ice: IceAgent,
    *,
    is_client: bool,
    cert_fingerprint: str | None = None,
    identity: ServerIdentity | None = None,
    settings: QuicSettings | None = None,
) -> QuicTransportConnection:
    """Run QUIC over ``ice``'s selected pair until the handshake completes.

    The client pins ``cert_fingerprint``; the server presents ``identity``. Raises
    :class:`ConnectFailed` on a deadline, a handshake error or a certificate mismatch.
    """
    settings = settings or QuicSettings()
    pin = (cert_fingerprint or "").replace(":", "").strip().lower()
    if is_client and not _SHA256_HEX.fullmatch(pin):
        raise ProtocolError(
            f"the certificate pin {cert_fingerprint!r} is not a SHA-256 (64 hex digits): "
            "paste the sender's answer block again"
        )
    if is_client:
        path = ice.path()
    else:
        try:
            async with asyncio.timeout(settings.handshake_timeout):
                path = await ice.follow_peer()
        except TimeoutError:
            raise ConnectFailed(
                f"no QUIC packet from the peer on any ICE-validated pair within {settings.handshake_timeout:g} s "
                f"(ICE chose {ice.selected_pair}): the peer is not running QUIC"
            ) from None
    if path.pair.relayed:
        # Through a TURN allocation (ours or the peer's): room for the ChannelData header on the
        # client-server leg, and no path-MTU probes (they would only prove one leg).
        size = settings.packet_size - TURN_CHANNEL_OVERHEAD
        settings = dataclasses.replace(settings, packet_size=size, max_packet_size=size)
    config = quic_configuration(settings, is_client=is_client, identity=identity)
    start = _Start(path, config, settings, ProbeSocket(path))
    conn: QuicTransportConnection | None = None
    try:
        async with asyncio.timeout(settings.handshake_timeout):
            if is_client:
                conn = _start_client(start, pin)
            else:
                conn = await _start_server(start)
            await conn.wait_handshake()
    except TimeoutError:
        if conn is not None:
            conn.close(reason="handshake timeout")
        raise ConnectFailed(
            f"the QUIC handshake over the ICE pair {path.pair} did not finish within "
            f"{settings.handshake_timeout:g} s: the peer is not running QUIC on that pair"
        ) from None
    return conn


@dataclass(frozen=True, slots=True)
class _Start:
    """What both sides start a connection from."""

    path: IcePath
    config: QuicConfiguration
    settings: QuicSettings
    probe_socket: ProbeSocket

    def connection(self, quic: TunnelQuicConnection, pinned_sha256: str | None = None) -> QuicTransportConnection:
        return QuicTransportConnection(
            quic, self.path, self.settings, probe_socket=self.probe_socket, pinned_sha256=pinned_sha256
        )

    def quic(self, **kwargs: Any) -> TunnelQuicConnection:
        """The state machine; no path-MTU discovery where probes cannot be kept unfragmented."""
        settings = self.settings
        maximum = settings.max_packet_size if self.probe_socket.usable else settings.packet_size
        return TunnelQuicConnection(
            configuration=self.config, stream_window=settings.stream_window, max_packet_size=maximum, **kwargs
        )


def _start_client(start: _Start, pinned_sha256: str) -> QuicTransportConnection:
    quic = start.quic()
    quic.connect(start.path.remote, now=time.monotonic())
    conn = start.connection(quic, pinned_sha256)
    conn.flush()
    return conn


async def _start_server(start: _Start) -> QuicTransportConnection:
    """The server's QuicConnection needs the client's first destination CID: wait for it."""
    path, config = start.path, start.config
    first_cid: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    held: list[bytes] = []

    def on_packet(data: bytes, addr: tuple[Any, ...]) -> None:
        if len(held) < 64:
            held.append(data)
        if first_cid.done():
            return
        try:
            header = pull_quic_header(Buffer(data=data), config.connection_id_length)
        except ValueError:
            return
        if header.packet_type == QuicPacketType.INITIAL:
            first_cid.set_result(header.destination_cid)

    def on_lost(reason: str) -> None:
        if not first_cid.done():
            first_cid.set_exception(ConnectFailed(f"QUIC handshake failed: {reason}"))

    path.attach(on_packet, on_lost)
    cid = await first_cid
    conn = start.connection(start.quic(original_destination_connection_id=cid))
    for data in held:
        conn.receive_datagram(data, path.remote)
    return conn
