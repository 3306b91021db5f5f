"""iroh behind the :mod:`tunnelpy.worker.transport.interface` interface, and endpoint construction.

Importing this module applies the uniffi byte-copy fix (:mod:`tunnelpy.common.uniffi_fastcopy`)
before any data can cross the binding. Endpoints are always built here, from a
:class:`~tunnelpy.common.config.NetOptions`, so the supervisor, the workers and the receiver
agree on relay/discovery behaviour.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib

import iroh

from tunnelpy.common import uniffi_fastcopy
from tunnelpy.common.config import NetOptions
from tunnelpy.common.errors import (
    ConfigError,
    ConnectFailed,
    ConnectionLost,
    DatagramTooLarge,
    StreamReset,
)
from tunnelpy.worker.transport.interface import TransportStats

uniffi_fastcopy.apply("iroh")

CONNECT_TIMEOUT = 10.0


def describe(exc: BaseException) -> str:
    """One line for a user: iroh errors print as empty strings (stack-notes §8), and their
    messages span lines and name Rust source files; keep the first line of the message."""
    if isinstance(exc, iroh.IrohError):
        first = next((line.strip() for line in exc.message().splitlines() if line.strip()), "")
        return f"{exc.kind().name.lower()}: {first}"
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


def endpoint_options(net: NetOptions, *, secret: bytes | None, alpns: list[bytes]) -> iroh.EndpointOptions:
    """Endpoint options for a :class:`NetOptions`; ``no_relay`` is fully offline (tests, LAN)."""
    if net.relay_only or net.dns_server:
        flag = "--relay-only" if net.relay_only else "--dns-server"
        raise ConfigError(
            f"{flag} is not supported: the iroh Python binding 1.2.0 exposes no way to force relayed "
            "paths or to set a custom pkarr server; use --relay-url (relay fallback) instead"
        )
    if net.no_relay:
        preset, relay_mode = iroh.preset_minimal(), iroh.RelayMode.disabled()
    elif net.relay_urls:
        preset, relay_mode = iroh.preset_n0(), iroh.RelayMode.custom_from_urls(list(net.relay_urls))
    else:
        preset, relay_mode = iroh.preset_n0(), iroh.RelayMode.default_mode()
    bind = None
    if net.bind:
        host, port = net.bind
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options = iroh.EndpointOptions(preset=preset, relay_mode=relay_mode, alpns=alpns)
    if bind:
        options.bind_addr = bind
    if secret is not None:
        options.secret_key = secret
    return options


async def bind_endpoint(net: NetOptions, *, secret: bytes | None, alpns: list[bytes]) -> iroh.Endpoint:
    try:
        return await iroh.Endpoint.bind(endpoint_options(net, secret=secret, alpns=alpns))
    except iroh.IrohError as exc:
        raise ConfigError(f"cannot bind the iroh endpoint ({describe(exc)}); check --bind") from exc


async def close_endpoint(endpoint: iroh.Endpoint | None) -> None:
    """Best-effort close, bounded: shutting down must never hang on a dead peer or a crashed stack."""
    if endpoint is None:
        return
    with contextlib.suppress(Exception):  # whatever iroh raises here, the endpoint is going away
        async with asyncio.timeout(2):
            await endpoint.close()


def ticket_of(endpoint: iroh.Endpoint) -> str:
    return str(iroh.EndpointTicket.from_addr(endpoint.addr()))


def peer_addr(node_id_or_ticket: str, *, what: str = "--node-id") -> iroh.EndpointAddr:
    """A bare EndpointId (hex or base32) or a full ticket that carries direct addresses."""
    text = node_id_or_ticket.strip()
    try:
        if text.startswith("endpoint"):
            return iroh.EndpointTicket.from_string(text).endpoint_addr()
        return iroh.EndpointAddr(iroh.EndpointId.from_string(text), None, [])
    except iroh.IrohError as exc:
        raise ConfigError(f"{what} {text[:24]!r}...: not an EndpointId or endpoint ticket ({describe(exc)})") from exc


async def connect(
    endpoint: iroh.Endpoint, addr: iroh.EndpointAddr, alpn: bytes, timeout: float = CONNECT_TIMEOUT
) -> IrohConnection:
    """Connect with a deadline: iroh waits 30 s+ on a dead address (stack-notes §8)."""
    try:
        async with asyncio.timeout(timeout):
            return IrohConnection(await endpoint.connect(addr, alpn))
    except TimeoutError as exc:
        raise ConnectFailed(f"no answer from {addr.id().fmt_short()} within {timeout:.0f} s") from exc
    except iroh.IrohError as exc:
        raise ConnectFailed(f"cannot connect to {addr.id().fmt_short()}: {describe(exc)}") from exc


class IrohStream:
    """One iroh bi-stream; iroh's own flow control bounds ``write_all`` (backpressure)."""

    __slots__ = ("_recv", "_send")

    def __init__(self, bi: iroh.BiStream) -> None:
        self._send = bi.send()
        self._recv = bi.recv()

    async def read(self, max_bytes: int) -> bytes:
        try:
            return await self._recv.read(max_bytes)
        except iroh.IrohError as exc:
            raise StreamReset(describe(exc)) from exc

    async def write(self, data: bytes) -> None:
        try:
            await self._send.write_all(data)
        except iroh.IrohError as exc:
            raise StreamReset(describe(exc)) from exc

    async def finish(self) -> None:
        try:
            await self._send.finish()
        except iroh.IrohError as exc:
            raise StreamReset(describe(exc)) from exc

    def reset(self) -> None:
        # reset/stop are coroutines in the binding; schedule them and let the stream go.
        loop = asyncio.get_running_loop()
        for coro in (self._send.reset(0), self._recv.stop(0)):
            task = loop.create_task(coro)
            task.add_done_callback(_ignore_result)


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class IrohConnection:
    """An iroh ``Connection`` as a transport :class:`~tunnelpy.worker.transport.interface.Connection`."""

    def __init__(self, conn: iroh.Connection) -> None:
        self.raw = conn

    @property
    def remote_id(self) -> str:
        return str(self.raw.remote_id())

    async def open_stream(self) -> IrohStream:
        try:
            return IrohStream(await self.raw.open_bi())
        except iroh.IrohError as exc:
            raise ConnectionLost(describe(exc)) from exc

    async def accept_stream(self) -> IrohStream:
        try:
            return IrohStream(await self.raw.accept_bi())
        except iroh.IrohError as exc:
            raise ConnectionLost(describe(exc)) from exc

    def max_datagram_size(self) -> int | None:
        return self.raw.max_datagram_size()

    async def send_datagram(self, data: bytes) -> None:
        limit = self.raw.max_datagram_size()
        if limit is None or len(data) > limit:
            raise DatagramTooLarge(f"{len(data)} bytes > {limit}")
        try:
            await self.raw.send_datagram_wait(data)
        except iroh.IrohError as exc:
            raise ConnectionLost(describe(exc)) from exc

    async def recv_datagram(self) -> bytes:
        try:
            return await self.raw.read_datagram()
        except iroh.IrohError as exc:
            raise ConnectionLost(describe(exc)) from exc

    def stats(self) -> TransportStats:
        s = self.raw.stats()
        rtt = self.raw.rtt()
        return TransportStats(
            rtt_ms=None if rtt is None else float(rtt),
            lost_packets=s.lost_packets,
            udp_tx_bytes=s.udp_tx_bytes,
            udp_rx_bytes=s.udp_rx_bytes,
            path=next(("relay" if p.is_relay else "direct" for p in self.raw.paths() if p.is_selected), None),
        )

    def close(self, code: int = 0, reason: str = "") -> None:
        self.raw.close(code, reason.encode())

    async def wait_closed(self) -> str:
        return await self.raw.closed()
