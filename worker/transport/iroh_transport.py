"""iroh (our native binding, :mod:`tunnelpy.worker._native`) behind the transport interface.

Endpoints are always built here, from a :class:`~tunnelpy.common.config.NetOptions`, so the
supervisor, the workers and the receiver agree on relay/discovery behaviour. Streams keep the
generic ``read``/``write`` interface for control messages; ``splice_tcp`` is the fast path the
TCP forwarders take, so payload bytes never reach Python.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import socket

from tunnelpy.common.config import NetOptions
from tunnelpy.common.errors import (
    ConfigError,
    ConnectFailed,
    ConnectionLost,
    DatagramTooLarge,
    StreamReset,
)
from tunnelpy.common.logs import get_logger
from tunnelpy.worker import _native
from tunnelpy.worker.transport.interface import TransportStats

log = get_logger(__name__)

CONNECT_TIMEOUT = 10.0

Endpoint = _native.Endpoint
Incoming = _native.Incoming
NativeError = _native.NativeError


def describe(exc: BaseException) -> str:
    """One line for a user."""
    return " ".join(str(exc).split()) or type(exc).__name__


def decode_secret(text: str, where: str) -> bytes:
    """A 32-byte secret key written as standard base64 (generate-iroh-key's format)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{where}: not base64 ({exc}); create one with `tunnel-py generate-iroh-key`") from exc
    if len(raw) != 32:
        raise ConfigError(f"{where}: a secret key is 32 bytes, this one is {len(raw)}")
    return raw


def endpoint_id_of(secret: bytes) -> str:
    return _native.endpoint_id_of(secret)


def _socket_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def endpoint_options(net: NetOptions, *, secret: bytes | None, alpns: list[bytes]) -> _native.EndpointOptions:
    """Endpoint options for a :class:`NetOptions`; ``no_relay`` is fully offline (no relays,
    no discovery, no port mapping, no probes)."""
    kwargs: dict[str, object] = {"secret_key": secret, "alpns": list(alpns)}
    if net.no_relay:
        kwargs["offline"] = True
        if net.bind is None and net.bind6 is None:
            # offline binds 127.0.0.1 only; a LAN user without --bind wants every interface
            kwargs["bind_v4"] = "0.0.0.0:0"
    elif net.relay_urls:
        kwargs["relay_urls"] = list(net.relay_urls)
        if net.relay_auth_token:
            kwargs["relay_auth_token"] = str(net.relay_auth_token)
        if net.relay_ca_certs:
            kwargs["relay_ca_roots"] = list(net.relay_ca_certs)
        if not net.dns_server:
            # A private relay: n0's DNS would learn (and publish) who we are and where.
            kwargs["discovery"] = False
    if net.relay_only:
        if not net.relay_urls:
            raise ConfigError("--relay-only needs --relay-url (the relay every path goes through)")
        kwargs["relay_only"] = True
    if net.dns_server:
        if "://" in net.dns_server:
            kwargs["pkarr_url"] = net.dns_server
        else:
            kwargs["dns_server"] = net.dns_server
    if net.no_portmap:
        kwargs["port_mapper"] = False
    if net.bind:
        host, port = net.bind
        kwargs["bind_v6" if ":" in host else "bind_v4"] = _socket_text(host, port)
    if net.bind6:
        kwargs["bind_v6"] = _socket_text(*net.bind6)
    t = net.transport
    kwargs.update(congestion=t.congestion, keep_alive=t.keep_alive, idle_timeout=t.idle_timeout)
    if t.receive_window is not None:
        # The connection's only: each stream keeps iroh's window (1.25 MB). noq 1.4 holds at most
        # 1024 out-of-order chunks per stream and ends the connection beyond that ("too many gaps in
        # stream buffer"), which a 16 MB stream window reached at 1 % loss (scripts/netem-bench).
        kwargs["receive_window"] = t.receive_window
    if t.send_window is not None:
        kwargs["send_window"] = t.send_window
    if t.max_mtu is not None:
        kwargs["max_mtu"] = t.max_mtu
    try:
        return _native.EndpointOptions(**kwargs)  # type: ignore[arg-type]
    except _native.NativeError as exc:
        raise ConfigError(f"iroh endpoint options: {describe(exc)}") from exc


async def bind_endpoint(net: NetOptions, *, secret: bytes | None, alpns: list[bytes]) -> _native.Endpoint:
    options = endpoint_options(net, secret=secret, alpns=alpns)
    try:
        return await _native.Endpoint.bind(options)
    except _native.NativeError as exc:
        raise ConfigError(f"cannot bind the iroh endpoint ({describe(exc)}); check --bind") from exc


async def wait_online(endpoint: _native.Endpoint, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Until a home relay is connected (its URL then goes into our tickets); False after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            await endpoint.online()
    except TimeoutError:
        log.warning("iroh.relay_unreachable", timeout_s=timeout, why=relay_trouble(endpoint))
        return False
    return True


def relay_trouble(endpoint: _native.Endpoint) -> str | None:
    """Why no home relay is connected, in one line (None if one is, or none is configured)."""
    relays = endpoint.home_relays()
    if not relays or any(r["connected"] for r in relays):
        return None
    for r in relays:
        if r["auth_denied"] is not None:
            return (
                f"the relay {r['url']} refused our token ({r['auth_denied'] or 'no reason given'}): "
                "check --relay-auth-token-file"
            )
    errors = [f"{r['url']}: {' '.join(r['error'].split())}" for r in relays if r["error"]]
    return "no relay reachable (" + "; ".join(errors) + ")" if errors else None


async def close_endpoint(endpoint: _native.Endpoint | None) -> None:
    """Best-effort close, bounded: shutting down must never hang on a dead peer or a crashed stack."""
    if endpoint is None:
        return
    with contextlib.suppress(Exception):  # whatever happens here, the endpoint is going away
        async with asyncio.timeout(2):
            await endpoint.close()


def ticket_of(endpoint: _native.Endpoint, extra_addresses: list[str] | None = None) -> str:
    if not extra_addresses:
        return endpoint.ticket()
    return _native.ticket_with(endpoint.ticket(), list(extra_addresses))


def peer_addr(node_id_or_ticket: str, *, what: str = "--node-id", addresses: list[str] | None = None) -> str:
    """A bare EndpointId (hex or base32) or a full ticket, checked; with ``addresses`` a
    ticket carrying them."""
    text = node_id_or_ticket.strip()
    try:
        return _native.ticket_with(text, list(addresses or ()))
    except _native.NativeError as exc:
        raise ConfigError(f"{what} {text[:24]!r}...: not an EndpointId or endpoint ticket ({describe(exc)})") from exc


def ticket_parts(ticket: str) -> tuple[str, list[str]]:
    """The EndpointId and the direct addresses of a ticket."""
    try:
        return _native.ticket_parts(ticket)
    except _native.NativeError as exc:
        raise ConfigError(f"ticket {ticket[:24]!r}...: {describe(exc)}") from exc


async def connect(
    endpoint: _native.Endpoint, addr: str, alpn: bytes, timeout: float = CONNECT_TIMEOUT
) -> IrohConnection:
    """Connect with a deadline: a dead address must not hold a caller for long."""
    try:
        return IrohConnection(await endpoint.connect(addr, alpn, timeout))
    except _native.NativeConfigError as exc:
        raise ConfigError(describe(exc)) from exc
    except _native.NativeError as exc:
        trouble = relay_trouble(endpoint)
        raise ConnectFailed(describe(exc) + (f"; {trouble}" if trouble else "")) from exc


async def accept_connection(incoming: _native.Incoming, timeout: float = CONNECT_TIMEOUT) -> IrohConnection:
    """Run an incoming connection's handshake (ConnectFailed if it fails or times out)."""
    try:
        return IrohConnection(await incoming.accept(timeout))
    except _native.NativeError as exc:
        raise ConnectFailed(describe(exc)) from exc


class IrohStream:
    """One native bi-stream; QUIC flow control bounds ``write`` (backpressure)."""

    __slots__ = ("_bi",)

    def __init__(self, bi: _native.BiStream) -> None:
        self._bi = bi

    async def read(self, max_bytes: int) -> bytes:
        try:
            return await self._bi.read(max_bytes)
        except _native.NativeError as exc:
            raise StreamReset(describe(exc)) from exc

    async def write(self, data: bytes) -> None:
        try:
            await self._bi.write_all(data)
        except _native.NativeError as exc:
            raise StreamReset(describe(exc)) from exc

    async def finish(self) -> None:
        try:
            await self._bi.finish()
        except _native.NativeError as exc:
            raise StreamReset(describe(exc)) from exc

    @property
    def native(self) -> _native.BiStream:
        return self._bi

    def reset(self) -> None:
        with contextlib.suppress(_native.NativeError):
            self._bi.reset(0)

    async def splice_tcp(self, fd: int) -> tuple[int, int]:
        """Hand the connected TCP socket ``fd`` (owned from now on) to Rust: ``(sent, received)``."""
        try:
            return await self._bi.splice_tcp(fd)
        except _native.NativeConnectionLost as exc:
            raise ConnectionLost(describe(exc)) from exc
        except _native.NativeError as exc:
            raise StreamReset(describe(exc)) from exc


class IrohConnection:
    """A native ``Connection`` as a transport :class:`~tunnelpy.worker.transport.interface.Connection`."""

    def __init__(self, conn: _native.Connection) -> None:
        self.raw = conn

    @property
    def remote_id(self) -> str:
        return self.raw.remote_id

    async def open_stream(self) -> IrohStream:
        try:
            return IrohStream(await self.raw.open_bi())
        except _native.NativeError as exc:
            raise ConnectionLost(describe(exc)) from exc

    async def accept_stream(self) -> IrohStream:
        try:
            return IrohStream(await self.raw.accept_bi())
        except _native.NativeError as exc:
            raise ConnectionLost(describe(exc)) from exc

    def max_datagram_size(self) -> int | None:
        return self.raw.max_datagram_size()

    async def send_datagram(self, data: bytes) -> None:
        limit = self.raw.max_datagram_size()
        if limit is None or len(data) > limit:
            raise DatagramTooLarge(f"{len(data)} bytes > {limit}")
        try:
            await self.raw.send_datagram(data)
        except _native.NativeConfigError as exc:
            raise DatagramTooLarge(describe(exc)) from exc
        except _native.NativeError as exc:
            raise ConnectionLost(describe(exc)) from exc

    async def recv_datagram(self) -> bytes:
        try:
            return await self.raw.recv_datagram()
        except _native.NativeError as exc:
            raise ConnectionLost(describe(exc)) from exc

    def stats(self) -> TransportStats:
        s = self.raw.stats()
        return TransportStats(
            rtt_ms=s["rtt_ms"],
            lost_packets=s["lost_packets"],
            udp_tx_bytes=s["udp_tx_bytes"],
            udp_rx_bytes=s["udp_rx_bytes"],
            path=None if s["path"] == "none" else s["path"],
            paths=tuple(
                f"{p['kind']} {p['remote']} {p['rtt_ms']:.0f}ms" + (" selected" if p["selected"] else "")
                for p in self.raw.paths()
            ),
        )

    def counters(self) -> _native.Counters:
        return self.raw.counters()

    async def serve_udp_worker(self, stream: IrohStream, addresses: tuple[str, ...], port: int) -> None:
        """The worker's UDP flows, in Rust, until the connection ends (ConnectionLost)."""
        try:
            await self.raw.serve_udp_worker(stream.native, list(addresses), port)
        except _native.NativeError as exc:
            raise ConnectionLost(describe(exc)) from exc

    async def serve_udp_receiver(self, stream: IrohStream, sock: socket.socket) -> None:
        """The receiver's UDP flows, in Rust, on a duplicate of ``sock`` (which stays the
        caller's, open) until the connection ends (ConnectionLost); the duplicate is closed
        then, or when this is cancelled."""
        try:
            await self.raw.serve_udp_receiver(stream.native, os.dup(sock.fileno()))
        except _native.NativeError as exc:
            raise ConnectionLost(describe(exc)) from exc

    def close(self, code: int = 0, reason: str = "") -> None:
        self.raw.close(code, reason)

    async def wait_closed(self) -> str:
        return await self.raw.closed()
