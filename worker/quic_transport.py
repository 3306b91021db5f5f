"""aioquic over an ICE-selected pair, behind the :mod:`tunnelpy.worker.transport` interface.

Roles: the receiver is the ICE controlling side and the QUIC client; the sender is ICE
controlled and the QUIC server, with a fresh self-signed certificate whose SHA-256 the
client pins (it travels in the signaling answer).

``QuicConnection`` is aioquic's sans-IO state machine; the glue here feeds it three inputs,
all on the loop thread: datagrams pushed by :class:`~tunnelpy.worker.ice.IcePath` (no queue,
no task), its timer (a loop handle for ``get_timer()``) and user calls. After any of them
one coalesced ``_flush`` (``call_soon``) sends everything aioquic has queued, in one batch.
There are no background tasks: the timer and the keep-alive are loop handles, cancelled
when the connection ends.

Three adjustments to aioquic make it fast on an asyncio loop whose timers tick in whole
milliseconds (libuv, and epoll's timeout): a microsecond clock (``_now``), a pacer whose
burst covers a timer tick (``_TimerFriendlyPacer``) and ACKs sent once per batch of
received datagrams instead of after a 1 ms delay (``TunnelQuicConnection``). Without them
one stream stalled at about 16 packets per millisecond, ACKs and pacing waiting on timers.

Backpressure both ways (stack-notes section 5): ``write()`` waits while the stream's unacked
send buffer is full and is woken as ACKs arrive; and the receive window of a stream follows
what the application has *read* (stock aioquic doubles it whenever the peer used half, read
or not, so a stalled local reader would buffer without bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import hmac
import inspect
import re
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aioquic
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection
from aioquic.quic.packet import QuicFrameType, QuicPacketType, pull_quic_header
from aioquic.quic.recovery import QuicPacketPacer
from aioquic.quic.stream import QuicStream, QuicStreamSender
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tunnelpy.common.errors import ConnectFailed, ConnectionLost, DatagramTooLarge, ProtocolError, StreamReset
from tunnelpy.worker.ice import IceAgent, IcePath
from tunnelpy.worker.transport import TransportStats

ALPN = "tunnel-py/1"
SERVER_NAME = "tunnel-py"
DATAGRAM_FRAME_LIMIT = 65536  # what we accept; the sender's real bound is the packet size
DATAGRAM_SEND_QUEUE = 256  # DATAGRAM frames waiting for congestion window before send waits
DATAGRAM_RECV_QUEUE = 1024  # received datagrams kept for recv_datagram(); oldest dropped
BAD_CERTIFICATE = 0x100 + 42  # CRYPTO_ERROR carrying TLS alert bad_certificate (RFC 9001 4.8)
TIMER_RESOLUTION = 0.001  # libuv (uvloop) timers tick in whole milliseconds
_MiB = 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class QuicSettings:
    """Tuning of one QUIC connection; the defaults suit a tunnel over the internet."""

    packet_size: int = 1452  # UDP payload; 1452 + 28 fits a 1480-byte IPv4 path; no PMTUD
    stream_window: int = 16 * _MiB  # receive window per stream, beyond what was read
    connection_window: int = 64 * _MiB  # initial; aioquic raises it as data arrives
    send_buffer: int = 4 * _MiB  # unacked bytes per stream before write() waits
    idle_timeout: float = 300.0
    keepalive_interval: float = 15.0
    handshake_timeout: float = 30.0
    congestion_control: str = "reno"


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """The sender's per-session certificate and key; ``fingerprint`` goes into the answer."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    fingerprint: str


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the certificate's DER encoding."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def create_server_identity() -> ServerIdentity:
    """A fresh EC P-256 self-signed certificate; nobody verifies it except by its pin."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ServerIdentity(certificate, key, certificate_fingerprint(certificate))


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
    config = quic_configuration(settings, is_client=is_client, identity=identity)
    path = ice.path()
    conn: QuicTransportConnection | None = None
    try:
        async with asyncio.timeout(settings.handshake_timeout):
            if is_client:
                conn = _start_client(path, config, settings, pin)
            else:
                conn = await _start_server(path, config, settings)
            await conn._wait_handshake()
    except TimeoutError:
        if conn is not None:
            conn.close(reason="handshake timeout")
        raise ConnectFailed(
            f"the QUIC handshake over the ICE pair {path.pair} did not finish within "
            f"{settings.handshake_timeout:g} s: the peer is not running QUIC on that pair"
        ) from None
    return conn


def _start_client(
    path: IcePath, config: QuicConfiguration, settings: QuicSettings, pinned_sha256: str
) -> QuicTransportConnection:
    quic = TunnelQuicConnection(configuration=config, stream_window=settings.stream_window)
    quic.connect(path.remote, now=time.monotonic())
    conn = QuicTransportConnection(quic, path, settings, pinned_sha256=pinned_sha256)
    conn._flush()
    return conn


async def _start_server(path: IcePath, config: QuicConfiguration, settings: QuicSettings) -> QuicTransportConnection:
    """The server's QuicConnection needs the client's first destination CID: wait for it."""
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
    quic = TunnelQuicConnection(
        configuration=config,
        original_destination_connection_id=cid,
        stream_window=settings.stream_window,
    )
    conn = QuicTransportConnection(quic, path, settings)
    for data in held:
        conn._on_datagram(data, path.remote)
    return conn


# --- the aioquic internals we rely on, in one place ----------------------------------------


def _check_aioquic_version() -> None:
    version = tuple(int(part) for part in aioquic.__version__.split(".")[:2])
    sender = QuicStreamSender(stream_id=0, writable=True)
    shape_ok = (
        hasattr(sender, "_buffer_start")
        and hasattr(sender, "_buffer_stop")
        and list(inspect.signature(QuicConnection._write_stream_limits).parameters)
        == ["self", "builder", "space", "stream"]
        and hasattr(QuicConnection, "_on_max_stream_data_delivery")
        and hasattr(QuicConnection, "_get_or_create_stream_for_send")
    )
    if not (1, 7) <= version < (1, 8) or not shape_ok:
        raise ImportError(
            f"tunnelpy.worker.quic_transport supports aioquic 1.7, found {aioquic.__version__}: "
            "it reads stream send buffers and replaces the stream receive-window update; "
            "install aioquic 1.7 or re-check TunnelQuicConnection against the new version"
        )


_check_aioquic_version()


class TunnelQuicConnection(QuicConnection):
    """aioquic's QuicConnection with a read-driven stream receive window, plus read-only
    accessors for the internals the glue needs. Every private name used is here."""

    def __init__(self, *, stream_window: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stream_window = stream_window
        self.consumed: dict[int, int] = {}  # stream id -> bytes the application has read
        for name in ("_streams", "_datagrams_pending", "_loss", "_remote_max_datagram_frame_size"):
            if not hasattr(self, name):
                raise RuntimeError(f"aioquic QuicConnection changed shape: no {name}")
        if type(self._loss._pacer) is not QuicPacketPacer:
            raise RuntimeError("aioquic QuicPacketRecovery changed shape: no QuicPacketPacer")
        self._loss._pacer = _TimerFriendlyPacer(max_datagram_size=self._max_datagram_size)
        # ACK in the flush that follows each batch of received datagrams (one per loop pass)
        # instead of 1 ms later: with a 1 ms timer that was up to 2 ms, which stalls the
        # sender's congestion window. The batching already keeps ACKs few.
        self._ack_delay = 0.0

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


class _TimerFriendlyPacer(QuicPacketPacer):
    """aioquic's pacer lets at most 16 packets go in one burst, then asks to wait one packet
    time (microseconds). With a 1 ms timer that caps a connection at 16 packets per ms
    (~23 MB/s with 1452-byte packets). Letting the bucket hold two timer ticks of sending
    keeps the average rate cwnd/RTT while each wake-up sends what one tick allows."""

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        self.bucket_max = max(self.bucket_max, 2 * TIMER_RESOLUTION)


# --- streams -------------------------------------------------------------------------------


class QuicTransportStream:
    """One bidirectional QUIC stream (a :class:`~tunnelpy.worker.transport.Stream`).

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


# --- the connection ------------------------------------------------------------------------


class QuicTransportConnection:
    """One QUIC connection on an ICE path (a :class:`~tunnelpy.worker.transport.Connection`).

    Driven by :meth:`_on_datagram` (called by the path), by the QUIC timer and by the
    stream/datagram calls; each of them ends in one coalesced :meth:`_flush` (``call_soon``).
    """

    def __init__(
        self, quic: TunnelQuicConnection, path: IcePath, settings: QuicSettings, *, pinned_sha256: str | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._pinned = pinned_sha256  # lowercase hex, client only
        self._quic = quic
        self._path = path
        self._remote = path.remote
        self._settings = settings
        self._local_bit = 0 if quic.configuration.is_client else 1  # low bit of our stream ids
        self._streams: dict[int, QuicTransportStream] = {}
        self._peer_floor = 1 - self._local_bit  # every peer stream id below it was seen
        self._peer_seen: set[int] = set()  # peer stream ids seen above the floor (reordering)
        self._incoming: deque[QuicTransportStream] = deque()
        self._incoming_ready = asyncio.Event()
        self._datagrams: deque[bytes] = deque(maxlen=DATAGRAM_RECV_QUEUE)
        self._datagram_ready = asyncio.Event()
        self._datagram_space = asyncio.Event()
        self._blocked_writers: set[QuicTransportStream] = set()
        self._handshake_done = asyncio.Event()
        self._closed: asyncio.Future[str] = self._loop.create_future()
        self._lost_reason: str | None = None  # set once closing or closed: calls fail
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._clock = 0.0  # the last time given to aioquic, see _now()
        self._flush_pending = False
        self._keepalive = self._loop.call_later(settings.keepalive_interval, self._send_keepalive)
        self._ping_id = 0
        self._tx_bytes = 0
        self._rx_bytes = 0
        path.attach(self._on_datagram, self._on_path_lost)

    # -- transport.Connection

    async def open_stream(self) -> QuicTransportStream:
        """A new bidirectional stream; the peer sees it once something (data, FIN) is sent."""
        self._raise_if_lost()
        stream_id = self._quic.open_bidi_stream()
        stream = self._streams[stream_id] = QuicTransportStream(self, stream_id)
        return stream

    async def accept_stream(self) -> QuicTransportStream:
        while not self._incoming:
            self._raise_if_lost()
            self._incoming_ready.clear()
            await self._incoming_ready.wait()
        return self._incoming.popleft()

    def max_datagram_size(self) -> int | None:
        if self._lost_reason is not None or not self._quic.peer_accepts_datagrams():
            return None
        return max_datagram_payload(self._settings.packet_size)

    async def send_datagram(self, data: bytes) -> None:
        limit = self.max_datagram_size()
        self._raise_if_lost()
        if limit is None or len(data) > limit:
            raise DatagramTooLarge(f"a {len(data)}-byte datagram is above this connection's limit of {limit} bytes")
        while self._quic.pending_datagrams() >= DATAGRAM_SEND_QUEUE:
            self._datagram_space.clear()
            await self._datagram_space.wait()
            self._raise_if_lost()
        self._quic.send_datagram_frame(data)
        self._schedule_flush()

    async def recv_datagram(self) -> bytes:
        while not self._datagrams:
            self._raise_if_lost()
            self._datagram_ready.clear()
            await self._datagram_ready.wait()
        return self._datagrams.popleft()

    def stats(self) -> TransportStats:
        rtt = self._quic.smoothed_rtt()
        return TransportStats(
            rtt_ms=None if rtt is None else rtt * 1000,
            udp_tx_bytes=self._tx_bytes,
            udp_rx_bytes=self._rx_bytes,
        )

    def close(self, code: int = 0, reason: str = "") -> None:
        """Send CONNECTION_CLOSE now; every pending and later call raises ConnectionLost."""
        if self._lost_reason is not None:
            return
        self._flush()  # best effort for data and FINs already written: aioquic's close drops them
        self._quic.close(error_code=code, reason_phrase=reason)
        self._fail_everything(f"closed locally: {reason or 'no reason given'}")
        self._flush()

    async def wait_closed(self) -> str:
        """Wait until the connection is over and return why."""
        return await asyncio.shield(self._closed)

    # -- handshake (used by connect_quic)

    async def _wait_handshake(self) -> None:
        await self._handshake_done.wait()
        if self._lost_reason is not None:
            raise ConnectFailed(f"the QUIC handshake failed: {self._lost_reason}")

    def _check_pin(self) -> None:
        """Client: compare the server certificate with the pin as soon as the handshake
        completes, before our Finished is sent, so a mismatch never confirms the handshake."""
        if self._pinned is None:
            return
        certificate = self._quic.peer_certificate()
        actual = certificate_fingerprint(certificate) if certificate is not None else "(none)"
        if hmac.compare_digest(actual, self._pinned):
            return
        # A transport-level close: an application close would lose its reason phrase in the
        # handshake packets (RFC 9000 section 10.2.3), and the peer should see why.
        self._quic.close(BAD_CERTIFICATE, QuicFrameType.CRYPTO, "certificate fingerprint mismatch")
        self._fail_everything(
            f"the peer's QUIC certificate has SHA-256 {actual}, but the answer pinned "
            f"{self._pinned}: the answer is from another session or the path is tampered "
            "with; run both sides again and paste the fresh answer"
        )

    # -- inputs: datagrams, timer, keep-alive, path loss

    def _on_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._rx_bytes += len(data)
        # The path only delivers datagrams from the selected remote address, so give aioquic
        # that exact tuple: an IPv6 4-tuple would look like a migration to a new path.
        self._quic.receive_datagram(data, self._remote, self._now())
        self._process_events()
        self._schedule_flush()

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._quic.handle_timer(self._now())
        self._process_events()
        self._flush()

    def _send_keepalive(self) -> None:
        self._ping_id += 1
        self._quic.send_ping(self._ping_id)
        self._schedule_flush()
        self._keepalive = self._loop.call_later(self._settings.keepalive_interval, self._send_keepalive)

    def _on_path_lost(self, reason: str) -> None:
        self._end(reason)

    # -- output

    def _schedule_flush(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Wake writers that ACKs unblocked, send all queued datagrams, re-arm the timer."""
        self._flush_pending = False
        if self._closed.done():
            return
        self._wake_writers()
        datagrams = self._quic.datagrams_to_send(self._now())
        if datagrams:
            packets = [data for data, _ in datagrams]
            self._tx_bytes += sum(map(len, packets))
            self._path.send_many(packets)
        self._process_events()
        self._arm_timer()

    def _now(self) -> float:
        """aioquic's clock: time.monotonic(), never going back. Not loop.time(): uvloop's
        ticks in whole milliseconds, so aioquic's pacer saw no time pass and spun on a timer
        that fires at once, and every RTT sample was floored at 1 ms. Timers are set with
        call_later(delay), so the two clocks never need to agree."""
        self._clock = max(self._clock, time.monotonic())
        return self._clock

    def _arm_timer(self) -> None:
        if self._closed.done():
            return
        at = self._quic.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        if at is None:
            self._timer = None
            return
        # Never sleep less than the loop's timer resolution: a sooner wake-up (aioquic's
        # pacer often asks for a few microseconds) would spin. The pacer's bucket holds
        # more than that (_TimerFriendlyPacer), so the wait costs no throughput.
        delay = at - self._now()
        self._timer = self._loop.call_later(max(delay, TIMER_RESOLUTION) if delay > 0 else 0, self._on_timer)

    def _wake_writers(self) -> None:
        if self._blocked_writers:
            limit, quic = self._settings.send_buffer, self._quic
            for stream in list(self._blocked_writers):
                if quic.unacked_bytes(stream.stream_id) < limit:
                    stream._writable.set()
        if self._quic.pending_datagrams() < DATAGRAM_SEND_QUEUE:
            self._datagram_space.set()

    # -- events

    def _process_events(self) -> None:
        quic = self._quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                stream = self._streams.get(event.stream_id) or self._new_peer_stream(event)
                if stream is not None:
                    stream._on_data(event.data, event.end_stream)
            elif isinstance(event, events.DatagramFrameReceived):
                self._datagrams.append(event.data)
                self._datagram_ready.set()
            elif isinstance(event, events.StreamReset):
                if stream := self._streams.get(event.stream_id):
                    stream._on_reset(f"the peer reset the stream (code {event.error_code})")
            elif isinstance(event, events.StopSendingReceived):
                if stream := self._streams.get(event.stream_id):
                    stream._on_write_error(f"the peer stopped reading (code {event.error_code})")
            elif isinstance(event, events.HandshakeCompleted):
                self._check_pin()
                self._handshake_done.set()
            elif isinstance(event, events.ConnectionTerminated):
                self._end(_describe_close(event))

    def _new_peer_stream(self, event: events.StreamDataReceived) -> QuicTransportStream | None:
        """A stream the peer opened, or None for ids that are ours, unidirectional or seen."""
        stream_id = event.stream_id
        if stream_id & 2 or stream_id & 1 == self._local_bit:
            return None  # unidirectional (unused), or ours after we released it
        if stream_id < self._peer_floor or stream_id in self._peer_seen:
            return None  # late data for a stream this side already reset and released
        self._peer_seen.add(stream_id)
        while self._peer_floor in self._peer_seen:
            self._peer_seen.discard(self._peer_floor)
            self._peer_floor += 4
        stream = self._streams[stream_id] = QuicTransportStream(self, stream_id)
        self._incoming.append(stream)
        self._incoming_ready.set()
        return stream

    # -- helpers for QuicTransportStream

    def _raise_if_lost(self) -> None:
        if self._lost_reason is not None:
            raise ConnectionLost(self._lost_reason)

    def _on_consumed(self, stream: QuicTransportStream, count: int) -> None:
        """Credit read bytes to the receive window; flush when a window update is due."""
        consumed = self._quic.consumed
        before = consumed.get(stream.stream_id, 0)
        consumed[stream.stream_id] = before + count
        step = self._quic.stream_window // 4
        if (before + count) // step != before // step:
            self._schedule_flush()

    def _maybe_release(self, stream: QuicTransportStream) -> None:
        if stream._released:
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
            stream._wake_all()

    def _end(self, reason: str) -> None:
        """The connection is over (terminated, idle, or the ICE path is gone)."""
        if self._closed.done():
            return
        self._fail_everything(reason)
        self._closed.set_result(self._lost_reason or reason)
        self._keepalive.cancel()
        if self._timer is not None:
            self._timer.cancel()
        self._path.detach()


def _describe_close(event: events.ConnectionTerminated) -> str:
    phrase = event.reason_phrase or "no reason given"
    return f"the QUIC connection ended: {phrase} (error 0x{event.error_code:x})"
