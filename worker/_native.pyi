"""tunnel-py's native iroh data plane (Rust crate ``worker/native``, iroh 1.4.1 via PyO3).

Payload bytes stay in Rust: Python sets up endpoints and connections, exchanges small
control messages on streams, then hands a TCP socket (``BiStream.splice_tcp``) or the UDP
side (``Connection.serve_udp_*``) to Rust and gets counters back.

Threads and fork: importing this module starts nothing. The first awaitable (or
``BiStream.reset``) builds one tokio runtime per process with ``set_worker_threads`` threads
(default 2). Fork only before that (``runtime_started()`` is False); a child forked after it
gets ``NativeError`` from every call instead of a hang.

Every awaitable belongs to the running asyncio (or uvloop) loop. Cancelling one drops its
Rust future: a cancelled ``splice_tcp`` aborts (stream reset + TCP RST), a cancelled
``read`` loses nothing.

Errors: all subclass ``NativeError``; messages are one line.
"""

from collections.abc import Sequence
from typing import Final, TypedDict

RESET_CODE: Final[int]
IROH_VERSION: Final[str]

class NativeError(Exception):
    """Base of every error of the native data plane."""

class NativeConfigError(NativeError):
    """Bad options or input (a key, an address, a ticket, a descriptor): fix the call."""

class NativeConnectFailed(NativeError):
    """The peer could not be reached (or refused) within the timeout."""

class NativeConnectionLost(NativeError):
    """The connection or the endpoint is gone; the message says why (peer's reason)."""

class NativeStreamReset(NativeError):
    """One stream was reset/stopped by the peer, or a local socket of a splice failed."""

def set_worker_threads(n: int) -> None:
    """Threads of the runtime, 1..4 (default 2); only before the first native call."""

def runtime_started() -> bool:
    """True once this process built the runtime (and its threads)."""

def ticket_with(peer: str, addresses: Sequence[str]) -> str:
    """A ticket for ``peer`` (a ticket or an EndpointId) with the direct ``addresses``
    ("IP:PORT") added. NativeConfigError for a malformed peer or address."""

def ticket_parts(peer: str) -> tuple[str, list[str]]:
    """``(endpoint_id, ["IP:PORT", ...])`` of a ticket or a bare EndpointId."""

def endpoint_id_of(secret: bytes) -> str:
    """The EndpointId (64 hex digits) of a 32-byte secret key."""

class EndpointOptions:
    """How an endpoint reaches the network. Checked at construction (NativeConfigError).

    Without ``offline``: iroh's defaults (n0 relays, pkarr/DNS discovery, port mapper,
    relay probes, sockets on 0.0.0.0 and [::]). ``offline=True`` changes the defaults to:
    relays disabled, no discovery, no port mapper, no probes, bound to 127.0.0.1:0 only; it
    then sends only to the addresses a ticket gives. Any keyword overrides either base.

    * ``secret_key``: 32 bytes; None = a fresh identity.
    * ``alpns``: ALPNs accepted on incoming connections.
    * ``relay_mode``: "default" | "disabled" | "custom" (implied by ``relay_urls``);
      ``relay_auth_token`` is sent to each custom relay.
    * ``relay_only``: no IP socket at all, every path relayed.
    * ``relay_ca_roots``: DER certificates trusted for the relays' TLS (HTTPS and QUIC
      address discovery) besides the embedded web roots (a private relay's own CA).
    * ``discovery`` with optional ``pkarr_url`` / ``dns_origin``; ``dns_server`` "IP:PORT".
    * ``bind_v4`` "IP:PORT" / ``bind_v6`` "[IP]:PORT": when either is set only the given
      sockets are opened (no wildcard socket of the other family).
    * transport: ``congestion`` "default" | "cubic" | "newreno" | "bbr3"; windows in
      bytes; ``keep_alive`` / ``idle_timeout`` in seconds (idle 0 = never); MTU bounds
      (``max_mtu`` = path-MTU discovery upper bound, 0 disables discovery).
    """

    def __init__(
        self,
        *,
        offline: bool = False,
        secret_key: bytes | None = None,
        alpns: Sequence[bytes] = (),
        relay_mode: str | None = None,
        relay_urls: Sequence[str] = (),
        relay_auth_token: str | None = None,
        relay_only: bool = False,
        relay_ca_roots: Sequence[bytes] = (),
        discovery: bool | None = None,
        pkarr_url: str | None = None,
        dns_origin: str | None = None,
        dns_server: str | None = None,
        port_mapper: bool | None = None,
        net_report_probes: bool | None = None,
        bind_v4: str | None = None,
        bind_v6: str | None = None,
        congestion: str | None = None,
        receive_window: int | None = None,
        stream_receive_window: int | None = None,
        send_window: int | None = None,
        keep_alive: float | None = None,
        idle_timeout: float | None = None,
        initial_mtu: int | None = None,
        min_mtu: int | None = None,
        max_mtu: int | None = None,
        max_concurrent_bidi_streams: int | None = None,
        datagram_receive_buffer: int | None = None,
        datagram_send_buffer: int | None = None,
    ) -> None: ...

class RelayState(TypedDict):
    url: str
    connected: bool
    error: str | None  # the last connection error (None while connected or before any failure)
    auth_denied: str | None  # the relay's reason when it refused our auth token

class Endpoint:
    """A bound iroh endpoint."""

    @staticmethod
    async def bind(options: EndpointOptions) -> Endpoint:
        """Raises NativeConfigError if the sockets cannot be bound."""
    def endpoint_id(self) -> str:
        """64 lowercase hex digits."""
    def ticket(self) -> str:
        """An endpoint ticket ("endpoint...") with the current direct addresses and relay."""
    def bound_sockets(self) -> list[str]:
        """The local UDP sockets as bound, "IP:PORT"."""
    def direct_addresses(self) -> list[str]:
        """The direct addresses the endpoint advertises, "IP:PORT"."""
    async def connect(self, peer: str, alpn: bytes, timeout: float = 10.0) -> Connection:
        """Dial a ticket or a bare EndpointId (needs discovery). NativeConnectFailed after
        ``timeout`` seconds or on refusal; NativeConfigError for a malformed ``peer``."""
    async def accept(self) -> Connection | None:
        """The next incoming connection that completed its handshake; None once closed."""
    async def accept_incoming(self) -> Incoming | None:
        """The next incoming connection *before* its handshake; None once closed."""
    def home_relays(self) -> list[RelayState]:
        """The home relays as they stand now (empty with relays disabled)."""
    async def online(self) -> None:
        """Until a home relay is connected (never, with relays disabled: bound it)."""
    async def close(self) -> None: ...
    def is_closed(self) -> bool: ...

class Incoming:
    """An incoming connection whose handshake has not started: accept or refuse it once."""

    def remote_addr(self) -> str:
        """ "IP:PORT", "relay <url>" or "custom"."""
    async def accept(self, timeout: float = 10.0) -> Connection:
        """Run the handshake; NativeConnectFailed if it fails or exceeds ``timeout``."""
    def refuse(self) -> None:
        """Refuse without any crypto (idempotent)."""

class Stats(TypedDict):
    rtt_ms: float | None  # selected path, smoothed
    lost_packets: int
    sent_packets: int
    udp_tx_bytes: int
    udp_rx_bytes: int
    path: str  # "direct" | "relay" | "none"
    remote_addr: str | None  # selected path: "IP:PORT" or the relay URL
    max_datagram_size: int | None

class Counters(TypedDict):
    """From this side's view: sent = local sockets -> peer, received = peer -> local."""

    bytes_sent: int
    bytes_received: int
    streams_open: int  # splices running now
    streams_total: int
    udp_flows: int
    datagrams_dropped: int  # full queues, too-large or malformed datagrams

class PathInfo(TypedDict):
    kind: str  # "direct" | "relay"
    remote: str  # "IP:PORT" or the relay URL
    selected: bool  # the path iroh sends on now
    rtt_ms: float

class Connection:
    """One peer connection."""

    @property
    def remote_id(self) -> str: ...
    @property
    def alpn(self) -> bytes: ...
    async def open_bi(self) -> BiStream:
        """The peer sees the stream only once we write to it. NativeConnectionLost."""
    async def accept_bi(self) -> BiStream:
        """NativeConnectionLost once the connection is gone."""
    def max_datagram_size(self) -> int | None: ...
    async def send_datagram(self, data: bytes) -> None:
        """Small control datagrams; NativeConfigError above max_datagram_size()."""
    async def recv_datagram(self) -> bytes: ...
    def stats(self) -> Stats: ...
    def paths(self) -> list[PathInfo]:
        """Every open path (multipath: a relay path and direct ones), the selected first."""
    def counters(self) -> Counters: ...
    def close(self, code: int = 0, reason: str = "") -> None: ...
    async def closed(self) -> str:
        """Until closed by either side; the reason ("closed by peer: <reason>", ...)."""
    async def serve_udp_receiver(self, stream: BiStream, fd: int) -> None:
        """Receiver-side UDP (wire.py's format) until the connection ends, raising
        NativeConnectionLost then. ``stream``: the UDP_FRAMES stream, header [1, 2] already
        written. ``fd``: a bound UDP socket (``sock.detach()``, or ``os.dup()`` of a socket
        that outlives the connection), owned from this call on and closed when the call
        ends or is cancelled; each client address becomes a flow, the table lives as long
        as the call."""
    async def serve_udp_worker(self, stream: BiStream, addresses: Sequence[str], port: int) -> None:
        """Worker-side UDP until the connection ends (NativeConnectionLost). ``stream``:
        the accepted UDP_FRAMES stream, header already read; one connected UDP socket per
        flow to the first of ``addresses`` (checked IPs) that accepts, at ``port``."""

class BiStream:
    """One QUIC bi-stream. Python uses it for headers and small messages, then may hand it
    to ``splice_tcp`` or a UDP server; after that every method raises NativeStreamReset."""

    async def read(self, max: int = 65536) -> bytes:
        """At most ``max`` bytes; b"" once the peer finished. NativeStreamReset on reset."""
    async def write_all(self, data: bytes) -> None:
        """Returns once QUIC flow control took all of ``data``."""
    async def finish(self) -> None:
        """Half-close our side (FIN); reading goes on."""
    def reset(self, code: int = 0) -> None:
        """Abandon both directions (reset + stop). Never blocks."""
    async def splice_tcp(self, fd: int) -> tuple[int, int]:
        """Own the connected TCP socket ``fd`` (``sock.detach()``; closed by Rust in every
        case, also on error) and forward both ways until both directions ended. Returns
        ``(sent, received)``: bytes socket -> stream, stream -> socket. Half-close is
        carried both ways; NativeStreamReset if either side reset (the other side then got
        a stream reset / a TCP RST); NativeConnectionLost if the connection died."""
