"""ICE on aioice: host-filtered gathering, a deadline-bounded connect, and the selected pair
handed to one datagram consumer (the QUIC glue) while aioice keeps its STUN traffic.

Why a subclass of aioice's ``Connection`` and not our own candidate sockets: aioice 0.13
gathers through ``gather_candidates()`` -> ``get_host_addresses()`` (skips 127.0.0.1 and ::1,
no filter) -> ``get_component_candidates(component, addresses)``, and the last one is a
public, overridable method that binds one socket per address and runs STUN for srflx
candidates. Overriding only it swaps the address list, adds relay candidates from every TURN
server (:mod:`~tunnelpy.worker.transport.ice_sockets`) and keeps every other part of aioice
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
import re
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import aioice
import aioice.ice

from tunnelpy.common.config import NetOptions
from tunnelpy.common.errors import ConnectFailed, ProtocolError
from tunnelpy.common.logs import get_logger
from tunnelpy.common.turn import TurnOptions
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.worker.transport.ice_hosts import local_interfaces, select_host_addresses
from tunnelpy.worker.transport.ice_pair import SelectedPair, local_candidate_seen
from tunnelpy.worker.transport.ice_sockets import CandidateDemux, LocalAddressGone, PacketHandler, relayed_candidates

log = get_logger(__name__)

ICE_CONNECT_TIMEOUT = 30.0  # once both sides run their checks

CLOSE_TIMEOUT = 3.0  # giving up a TURN allocation waits on its server, which may be gone
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

__all__ = ["IceAgent", "IcePath", "SelectedPair", "local_candidate_seen", "select_host_addresses", "stun_address"]


# --- aioice integration --------------------------------------------------------------------


class _TunnelIceConnection(aioice.Connection):
    """aioice's Connection with our host addresses and our TURN allocations; the only place
    that reads its internals."""

    def __init__(self, turn: TurnOptions, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # no turn_server: aioice would gather one relay without a demux
        self.host_addresses: list[str] | None = None  # None: aioice's default enumeration
        self.turn = turn
        self.relay_demuxes: list[CandidateDemux] = []
        shapes = {"_protocols": list, "_nominated": dict, "_check_list": list}
        if not all(isinstance(getattr(self, name, None), kind) for name, kind in shapes.items()):
            raise RuntimeError("aioice.Connection changed shape: no _protocols/_nominated/_check_list")

    async def get_component_candidates(
        self, component: int, addresses: list[str], timeout: int = 5
    ) -> list[aioice.Candidate]:
        if self.host_addresses is not None:
            addresses = self.host_addresses
        if not self.turn.servers:
            return await super().get_component_candidates(component, addresses, timeout)
        candidates, relays = await asyncio.gather(
            super().get_component_candidates(component, addresses, timeout),
            relayed_candidates(self, component, self.turn),
        )
        self.relay_demuxes += relays
        self._protocols += [demux.stun for demux in relays]
        return candidates + [demux.stun.local_candidate for demux in relays]

    def data_received(self, data: bytes, component: int) -> None:
        # Non-STUN datagrams never get here (the demultiplexer takes them); what still does
        # is junk with a STUN first byte, which aioice would queue without bound for recv().
        pass

    def host_protocols(self) -> list[aioice.ice.StunProtocol]:
        return [p for p in self._protocols if p.local_candidate.type == "host"]

    def nominated_pair(self) -> aioice.ice.CandidatePair:
        return self._nominated[1]

    def validated_pair(
        self, protocol: aioice.ice.StunProtocol, addr: tuple[str, int]
    ) -> aioice.ice.CandidatePair | None:
        """The pair (``protocol``, ``addr``) if ICE proved the peer is there: our check on it
        succeeded, or the peer nominated it with a check signed with our password."""
        for pair in self._check_list:
            if pair.protocol is protocol and pair.remote_addr == addr:
                succeeded = pair.state == aioice.ice.CandidatePair.State.SUCCEEDED
                return pair if succeeded or pair.remote_nominated else None
        return None

    def adopt(self, pair: aioice.ice.CandidatePair) -> None:
        """Make ``pair`` the nominated one, so consent freshness checks the pair in use."""
        self._nominated[pair.component] = pair


class IcePath:
    """The selected pair as a datagram pipe for one consumer (the QUIC glue).

    Driven by the socket: received datagrams are pushed to ``on_packet`` from the
    transport's callback. :meth:`send_many` writes a batch straight to the socket.
    """

    def __init__(self, agent: IceAgent, demux: CandidateDemux, pair: aioice.ice.CandidatePair) -> None:
        self._agent = agent
        self._demux = demux
        self._sendto = demux.transport.sendto
        self._pair = pair
        self.remote: tuple[str, int] = pair.remote_addr

    @property
    def pair(self) -> SelectedPair:
        """Named afresh each time: a pair followed before our own check on it was answered (an
        ICE restart) learns later where the peer sees us (srflx, prflx)."""
        return self._agent._name(self._pair)

    @property
    def transport(self) -> Any:
        """The selected pair's transport: its UDP socket's (for socket options, e.g. PMTU
        probes), or aioice's ``TurnTransport`` on a relay candidate (no socket of its own)."""
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
        turn: TurnOptions | None = None,
    ) -> None:
        self.controlling = controlling
        self.stun_server = stun_server
        self.host_filter = tuple(host_filter)
        self.turn = turn or TurnOptions()
        self._conn = _TunnelIceConnection(self.turn, ice_controlling=controlling, stun_server=stun_server)
        self._demuxes: dict[aioice.ice.StunProtocol, CandidateDemux] = {}
        self._selected: SelectedPair | None = None
        self._in_use: aioice.ice.CandidatePair | None = None  # the pair a consumer was given
        self._closing = False
        self._connected_at = 0.0
        self._connect_ms = 0.0

    def fresh(self) -> IceAgent:
        """A new agent with the same role and options: new ufrag/pwd, to gather anew (an ICE
        restart, RFC 8445 section 9; aioice has no restart of its own)."""
        return IceAgent(
            controlling=self.controlling, stun_server=self.stun_server, host_filter=self.host_filter, turn=self.turn
        )

    @property
    def selected_pair(self) -> SelectedPair | None:
        return self._selected

    async def gather(self) -> IceParameters:
        """Gather host, srflx (with a STUN server) and relay (with TURN servers) candidates;
        raise if there are none."""
        if self.host_filter:
            self._conn.host_addresses = select_host_addresses(self.host_filter, local_interfaces())
        await self._conn.gather_candidates()
        candidates = self._conn.local_candidates
        if not candidates:
            where = f"the host filter {list(self.host_filter)}" if self.host_filter else "any interface"
            raise ConnectFailed(f"ICE gathered no candidates: no address of {where} could be bound")
        for stun in self._conn.host_protocols():
            demux = CandidateDemux(stun)
            stun.transport.set_protocol(demux)
            self._demuxes[stun] = demux
        for demux in self._conn.relay_demuxes:
            self._demuxes[demux.stun] = demux
        if self.turn.servers and not self._conn.relay_demuxes:
            log.warning("ice.no_relay_candidate", servers=[s.uri for s in self.turn.servers])
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
                f"({self._describe_candidates()}): {self._advice()}"
            ) from None
        except ConnectionError as exc:
            raise ConnectFailed(
                f"ICE failed: every candidate pair failed its checks ({exc}; "
                f"{self._describe_candidates()}); {self._advice()}"
            ) from None
        self._connected_at = time.monotonic()
        self._connect_ms = round((self._connected_at - started) * 1000, 1)
        if self._in_use is not None:  # data already follows the peer's pair (an ICE restart): keep it
            self._conn.adopt(self._in_use)
            self._selected = self._name(self._in_use)
            return self._selected
        self._selected = self._name(self._conn.nominated_pair())
        return self._selected

    def path(self) -> IcePath:
        """The controlling side's path: the pair it nominated (after :meth:`connect`)."""
        if self._selected is None:
            raise RuntimeError("IceAgent.path() before connect() succeeded")
        return self._use(self._conn.nominated_pair())

    async def follow_peer(self) -> IcePath:
        """The controlled side's path: the validated pair the controlling peer's first
        non-STUN datagram (its QUIC Initial) arrives on (after :meth:`connect`).

        Why not our own nominated pair: aioice nominates aggressively (every check of the
        controlling side carries USE-CANDIDATE), so several pairs get nominated and each side
        keeps the last one it saw complete; with relay candidates the two often differ (ours
        host->relay, theirs relay->relay) and each would send where the other does not listen.
        The controlling side decides (RFC 8445 section 8.1.1), so we use the pair it sends on.
        Bound this with a timeout; datagrams from addresses ICE did not validate are ignored.
        An ICE restart runs it beside :meth:`connect` (the peer's pair is validated before our
        own checks end); ``connect`` then keeps the pair in use for consent freshness.
        """
        arrived = asyncio.Event()
        for demux in self._demuxes.values():
            demux.on_early = arrived.set
        try:
            while True:
                for demux in self._demuxes.values():
                    for _, addr in demux.early:
                        pair = self._conn.validated_pair(demux.stun, (addr[0], addr[1]))
                        if pair is not None:
                            return self._use(pair)
                arrived.clear()
                await arrived.wait()
        finally:
            for demux in self._demuxes.values():
                demux.on_early = None

    def _name(self, pair: aioice.ice.CandidatePair) -> SelectedPair:
        demux = self._demuxes.get(pair.protocol)
        seen = demux.mapped.get(pair.remote_addr) if demux is not None else None
        local_type, local = local_candidate_seen(pair.local_candidate, seen, self._conn.local_candidates)
        return SelectedPair(local, local_type, pair.remote_addr, pair.remote_candidate.type)

    def _use(self, pair: aioice.ice.CandidatePair) -> IcePath:
        """Carry data on ``pair`` from now on; logged once as ``session.path``."""
        demux = self._demuxes.get(pair.protocol)
        if demux is None:  # every host socket and TURN allocation has one
            raise RuntimeError(f"no demultiplexer for the pair {pair}")
        self._conn.adopt(pair)
        self._in_use = pair
        self._selected = selected = self._name(pair)
        log.info(
            "session.path",
            path=selected.path,
            route=selected.route,
            local=f"{selected.local[0]}:{selected.local[1]}",
            local_type=selected.local_type,
            local_base=f"{pair.local_addr[0]}:{pair.local_addr[1]}",
            remote=f"{selected.remote[0]}:{selected.remote[1]}",
            remote_type=selected.remote_type,
            ice_ms=self._connect_ms,
            follow_ms=round((time.monotonic() - self._connected_at) * 1000, 1) if self._connected_at else 0.0,
        )
        return IcePath(self, demux, pair)

    def loss_reason(self, exc: Exception | None) -> str:
        if self._closing:
            return "the ICE session was closed locally"
        if isinstance(exc, LocalAddressGone):
            return f"the ICE path's local address is gone ({exc.strerror}): this host was re-addressed"
        if exc is not None:
            return f"the ICE socket failed: {exc}"
        return "ICE consent expired: the peer stopped answering connectivity checks (~30 s)"

    async def close(self) -> None:
        if self._closing:  # closed already (an ICE restart closes the agent it moved away from)
            return
        self._closing = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._conn.close()
        except TimeoutError:  # a TURN server that no longer answers: its allocation expires alone
            log.warning("ice.close_timeout", seconds=CLOSE_TIMEOUT)

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

    def _advice(self) -> str:
        relays = [c for c in (*self._conn.local_candidates, *self._conn.remote_candidates) if c.type == "relay"]
        if relays:
            return "check firewalls, the host filter, and that the TURN server relays between the peers"
        return (
            "check firewalls and the host filter, give both sides a STUN server, and behind symmetric "
            "NATs (or where UDP between the peers is blocked) a TURN server: --turn-server turn:HOST:PORT "
            "with --turn-user and --turn-password-file"
        )
