"""ICE on aioice: host-filtered gathering, a deadline-bounded connect, and the selected pair
handed to one datagram consumer (the QUIC glue) while aioice keeps its STUN traffic.

Why a subclass of aioice's ``Connection`` and not our own candidate sockets: aioice 0.13
gathers through ``gather_candidates()`` -> ``get_host_addresses()`` (skips 127.0.0.1 and ::1,
no filter) -> ``get_component_candidates(component, addresses)``, and the last one is a
public, overridable method that binds one socket per address and runs STUN for srflx
candidates. Overriding only it swaps the address list and keeps every other part of aioice
(checks, nomination, consent) untouched. The few private attributes we still read
(``_protocols``, ``_nominated``) are read in :class:`_TunnelIceConnection` only, checked when
it is created; the aioice version is checked at import.

Consent freshness (RFC 7675) is aioice's own: after ``connect()`` it sends a binding request
on the selected pair every 4-6 s and closes the connection after 6 misses in a row (~30 s).
It also answers the peer's checks. Both keep working because the demultiplexer below passes
every STUN datagram (first byte 0-3, RFC 7983) to aioice's protocol object.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aioice
import aioice.ice
import ifaddr

from tunnelpy.common.config import NetOptions
from tunnelpy.common.errors import ConfigError, ConnectFailed, ProtocolError
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling.ice_parameters import IceParameters

log = get_logger(__name__)

ICE_CONNECT_TIMEOUT = 30.0  # once both sides run their checks

STUN_MAX_FIRST_BYTE = 3  # RFC 7983/9443: 0-3 is STUN; the rest goes to the consumer (QUIC)
EARLY_PACKETS = 64  # QUIC packets kept per socket until the consumer attaches
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")


def stun_address(net: NetOptions) -> tuple[str, int] | None:
    """The first configured STUN server as (host, port); aioice uses one."""
    if not net.stun_servers:
        return None
    host, _, port = net.stun_servers[0].rpartition(":")
    return host.strip("[]"), int(port)


def _check_aioice_version() -> None:
    version = tuple(int(part) for part in aioice.__version__.split(".")[:2])
    params = inspect.signature(aioice.Connection.get_component_candidates).parameters
    if not (0, 13) <= version < (0, 14) or "addresses" not in params:
        raise ImportError(
            f"tunnelpy.worker.transport.ice supports aioice 0.13, found {aioice.__version__}: its host "
            "filter overrides Connection.get_component_candidates(component, addresses); "
            "install aioice 0.13 or re-check that method and update this module"
        )


_check_aioice_version()

PacketHandler = Callable[[bytes, tuple[Any, ...]], None]


@dataclass(frozen=True, slots=True)
class SelectedPair:
    """The nominated candidate pair: addresses and candidate types (host, srflx, prflx)."""

    local: tuple[str, int]
    local_type: str
    remote: tuple[str, int]
    remote_type: str

    def __str__(self) -> str:
        return (
            f"{self.local[0]}:{self.local[1]} ({self.local_type}) -> "
            f"{self.remote[0]}:{self.remote[1]} ({self.remote_type})"
        )


# --- host filter (pure) --------------------------------------------------------------------


def local_interfaces() -> list[tuple[str, list[str]]]:
    """(interface name, addresses) of this host; IPv6 with a scope id (link-local) left out,
    as aioice does, since those cannot be bound without the scope."""
    result = []
    for adapter in ifaddr.get_adapters():
        addresses = []
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                addresses.append(ip.ip)
            elif ip.ip[2] == 0:
                addresses.append(ip.ip[0])
        result.append((adapter.name, addresses))
    return result


def select_host_addresses(host_filter: Sequence[str], interfaces: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Addresses to gather host candidates on: each entry is an IP of this host, a CIDR or an
    interface name (loopback allowed). Every entry must match something."""
    selected: list[str] = []
    for entry in host_filter:
        matches = _match_filter_entry(entry.strip(), interfaces)
        if not matches:
            known = ", ".join(f"{name} {' '.join(addrs)}" for name, addrs in interfaces)
            raise ConfigError(
                f"ICE host filter entry {entry!r} matches no local address or interface "
                f"(this host has: {known}); use one of those, a CIDR or an interface name"
            )
        selected += [address for address in matches if address not in selected]
    return selected


def _match_filter_entry(entry: str, interfaces: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    all_addresses = [ipaddress.ip_address(a) for _, addrs in interfaces for a in addrs]
    try:
        if "/" in entry:
            network = ipaddress.ip_network(entry, strict=False)
            return [str(a) for a in all_addresses if a in network]
        wanted = ipaddress.ip_address(entry)
        return [str(a) for a in all_addresses if a == wanted]
    except ValueError:
        return [a for name, addrs in interfaces if name == entry for a in addrs]


# --- aioice integration --------------------------------------------------------------------


class _TunnelIceConnection(aioice.Connection):
    """aioice's Connection with our host addresses; the only place that reads its internals."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host_addresses: list[str] | None = None  # None: aioice's default enumeration
        if not isinstance(getattr(self, "_protocols", None), list) or not isinstance(
            getattr(self, "_nominated", None), dict
        ):
            raise RuntimeError("aioice.Connection changed shape: no _protocols/_nominated")

    async def get_component_candidates(
        self, component: int, addresses: list[str], timeout: int = 5
    ) -> list[aioice.Candidate]:
        if self.host_addresses is not None:
            addresses = self.host_addresses
        return await super().get_component_candidates(component, addresses, timeout)

    def data_received(self, data: bytes, component: int) -> None:
        # Non-STUN datagrams never get here (the demultiplexer takes them); what still does
        # is junk with a STUN first byte, which aioice would queue without bound for recv().
        pass

    def host_protocols(self) -> list[aioice.ice.StunProtocol]:
        return [p for p in self._protocols if p.local_candidate.type == "host"]

    def nominated_pair(self) -> aioice.ice.CandidatePair:
        return self._nominated[1]


class _SocketDemux(asyncio.DatagramProtocol):
    """Sits between one host socket and aioice's protocol for it (``transport.set_protocol``).

    STUN goes to aioice; other datagrams go straight to the consumer (no queue, no task)
    once it is attached, and only from the selected remote address. Until then a few are
    kept, because the peer may finish ICE first and send its first QUIC packet right away.
    """

    def __init__(self, stun: aioice.ice.StunProtocol) -> None:
        self.stun = stun
        self.transport = stun.transport
        self.consumer: PacketHandler | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.on_lost: Callable[[Exception | None], None] | None = None
        self.early: deque[tuple[bytes, tuple[Any, ...]]] = deque(maxlen=EARLY_PACKETS)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if data and data[0] > STUN_MAX_FIRST_BYTE:
            consumer = self.consumer
            if consumer is None:
                self.early.append((data, addr))
            elif addr[1] == self.peer[1] and addr[0] == self.peer[0]:
                consumer(data, addr)
            return
        self.stun.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.stun.error_received(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stun.connection_lost(exc)  # aioice's close() waits for this
        if self.on_lost is not None:
            self.on_lost(exc)

    def attach(self, peer: tuple[str, int], consumer: PacketHandler) -> None:
        self.peer = peer
        self.consumer = consumer
        early, self.early = list(self.early), deque(maxlen=EARLY_PACKETS)
        for data, addr in early:
            self.datagram_received(data, addr)


class IcePath:
    """The selected pair as a datagram pipe for one consumer (the QUIC glue).

    Driven by the socket: received datagrams are pushed to ``on_packet`` from the
    transport's callback. :meth:`send_many` writes a batch straight to the socket.
    """

    def __init__(self, agent: IceAgent, demux: _SocketDemux, pair: SelectedPair) -> None:
        self._agent = agent
        self._demux = demux
        self._sendto = demux.transport.sendto
        self.pair = pair
        self.remote = pair.remote

    @property
    def transport(self) -> asyncio.DatagramTransport:
        """The selected pair's UDP socket transport (for socket options, e.g. PMTU probes)."""
        return self._demux.transport

    def attach(self, on_packet: PacketHandler, on_lost: Callable[[str], None]) -> None:
        """Deliver this pair's non-STUN datagrams to ``on_packet``; report socket loss."""
        self._demux.on_lost = lambda exc: on_lost(self._agent.loss_reason(exc))
        self._demux.attach(self.remote, on_packet)

    def detach(self) -> None:
        self._demux.consumer = None
        self._demux.on_lost = None

    def send_many(self, datagrams: Iterable[bytes]) -> None:
        sendto, remote = self._sendto, self.remote
        for data in datagrams:
            sendto(data, remote)


class IceAgent:
    """One ICE session: ``gather()`` -> exchange parameters -> ``set_remote()`` ->
    ``connect()`` -> ``path()``. Use it as an async context manager so ``close()`` runs.

    aioice's own tasks drive the checks and, after connecting, consent freshness.
    """

    def __init__(
        self,
        *,
        controlling: bool,
        stun_server: tuple[str, int] | None = None,
        host_filter: Sequence[str] = (),
    ) -> None:
        self.controlling = controlling
        self.host_filter = tuple(host_filter)
        self._conn = _TunnelIceConnection(ice_controlling=controlling, stun_server=stun_server)
        self._demuxes: dict[aioice.ice.StunProtocol, _SocketDemux] = {}
        self._selected: SelectedPair | None = None
        self._closing = False

    @property
    def selected_pair(self) -> SelectedPair | None:
        return self._selected

    async def gather(self) -> IceParameters:
        """Gather host (and srflx, with a STUN server) candidates; raise if there are none."""
        if self.host_filter:
            self._conn.host_addresses = select_host_addresses(self.host_filter, local_interfaces())
        await self._conn.gather_candidates()
        candidates = self._conn.local_candidates
        if not candidates:
            where = f"the host filter {list(self.host_filter)}" if self.host_filter else "any interface"
            raise ConnectFailed(f"ICE gathered no candidates: no address of {where} could be bound")
        for stun in self._conn.host_protocols():
            demux = _SocketDemux(stun)
            stun.transport.set_protocol(demux)
            self._demuxes[stun] = demux
        log.debug("ice.gathered", candidates=[c.to_sdp() for c in candidates])
        return IceParameters(
            self._conn.local_username,
            self._conn.local_password,
            tuple(c.to_sdp() for c in candidates),
        )

    async def set_remote(self, peer: IceParameters) -> None:
        """Take the peer's credentials and its complete candidate list (no trickle)."""
        ufrag, pwd, candidates = peer.ufrag, peer.pwd, peer.candidates
        if not _ICE_CHARS.fullmatch(ufrag) or not _ICE_CHARS.fullmatch(pwd):
            raise ProtocolError("the peer's ICE ufrag/pwd contain characters ICE does not allow")
        self._conn.remote_username, self._conn.remote_password = ufrag, pwd
        for line in candidates:
            try:
                candidate = aioice.Candidate.from_sdp(line.removeprefix("candidate:"))
            except (ValueError, IndexError) as exc:
                raise ProtocolError(f"the peer sent a malformed ICE candidate {line!r}: {exc}") from None
            await self._conn.add_remote_candidate(candidate)
        await self._conn.add_remote_candidate(None)

    async def connect(self, timeout: float = 30.0) -> SelectedPair:
        """Run the connectivity checks; raise :class:`ConnectFailed` on failure or deadline."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                await self._conn.connect()
        except TimeoutError:
            raise ConnectFailed(
                f"ICE found no working path to the peer within {timeout:g} s "
                f"({self._describe_candidates()}): check firewalls and the host filter, or "
                "give both sides a STUN server"
            ) from None
        except ConnectionError as exc:
            raise ConnectFailed(
                f"ICE failed: every candidate pair failed its checks ({exc}; "
                f"{self._describe_candidates()}); check firewalls and the host filter"
            ) from None
        pair = self._conn.nominated_pair()
        self._selected = SelectedPair(
            pair.local_addr, pair.local_candidate.type, pair.remote_addr, pair.remote_candidate.type
        )
        log.info(
            "ice.connected",
            pair=str(self._selected),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return self._selected

    def path(self) -> IcePath:
        """The selected pair's datagram path (after :meth:`connect`)."""
        if self._selected is None:
            raise RuntimeError("IceAgent.path() before connect() succeeded")
        pair = self._conn.nominated_pair()
        demux = self._demuxes.get(pair.protocol)
        if demux is None:  # only relay (TURN) pairs have no demux, and we gather none
            raise RuntimeError(f"no demultiplexer for the selected pair {self._selected}")
        return IcePath(self, demux, self._selected)

    def loss_reason(self, exc: Exception | None) -> str:
        if self._closing:
            return "the ICE session was closed locally"
        if exc is not None:
            return f"the ICE socket failed: {exc}"
        return "ICE consent expired: the peer stopped answering connectivity checks (~30 s)"

    async def close(self) -> None:
        self._closing = True
        await self._conn.close()

    async def __aenter__(self) -> IceAgent:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _describe_candidates(self) -> str:
        local = ", ".join(f"{c.host}:{c.port} {c.type}" for c in self._conn.local_candidates)
        remote = ", ".join(f"{c.host}:{c.port} {c.type}" for c in self._conn.remote_candidates)
        return f"local candidates: {local or 'none'}; remote candidates: {remote or 'none'}"
