"""The sockets under an ICE agent: the demultiplexer on each candidate, and TURN allocations.

Every local candidate that can carry data (a host socket, or a TURN allocation) gets a
:class:`CandidateDemux` between the transport and aioice's ``StunProtocol``: STUN goes to
aioice (checks, consent freshness), other datagrams (QUIC) straight to the one consumer.

Relay candidates (RFC 8656) are gathered here and not by aioice's own TURN support, because
aioice takes one TURN server per ``Connection`` and puts its ``StunProtocol`` directly on the
allocation, where no demultiplexer could sit. :func:`relayed_candidates` allocates on every
configured server at once through aioice's public ``turn.create_turn_endpoint`` with a
:class:`CandidateDemux` as the receiving protocol; a server that refuses or does not answer
within the gathering deadline is logged and left out, the others still count.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aioice
import aioice.ice
from aioice import stun, turn
from aioice.candidate import candidate_foundation, candidate_priority

from tunnelpy.common.logs import get_logger
from tunnelpy.common.turn import TurnOptions, TurnServer
from tunnelpy.worker.transport.ice_hosts import local_interfaces

log = get_logger(__name__)

STUN_MAX_FIRST_BYTE = 3  # RFC 7983/9443: 0-3 is STUN; the rest goes to the consumer (QUIC)
EARLY_PACKETS = 64  # QUIC packets kept per socket until the consumer attaches
TURN_ALLOCATE_TIMEOUT = 5.0  # as long as aioice waits for its STUN (srflx) answers
TURN_CHANNEL_OVERHEAD = 4  # the ChannelData header before each relayed datagram (RFC 8656 12.4)
MAPPED_KEPT = 32  # remote addresses whose view of us is remembered (a session has a few candidates)
_BINDING_SUCCESS = b"\x01\x01"  # STUN message type of a Binding success response
# What sending from a socket whose bound address was removed fails with (Linux: ENETUNREACH).
_NO_SOURCE = {errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EINVAL}
ADDRESS_CHECK_INTERVAL = 1.0  # at most one look at the interfaces per second while sends fail

PacketHandler = Callable[[bytes, tuple[Any, ...]], None]


class LocalAddressGone(OSError):
    """What a path's consumer is told when its socket's address left the host."""


class CandidateDemux(asyncio.DatagramProtocol):
    """Sits between one candidate's transport and aioice's protocol for it.

    For a host socket it replaces aioice's protocol (``transport.set_protocol``); for a TURN
    allocation it is the allocation's receiver from the start. STUN goes to aioice; other
    datagrams go straight to the consumer (no queue, no task) once it is attached, and only
    from the selected remote address. Until then a few are kept, because the peer may finish
    ICE first and send its first QUIC packet right away.

    ``mapped`` notes, per remote address, the address that peer saw us at (XOR-MAPPED-ADDRESS
    of its answers to our checks): what RFC 8445 section 7.2.5.3.1 names the valid pair's
    local candidate by (srflx or prflx behind a NAT, though aioice pairs the host socket).

    A host socket whose address left the host (re-addressed, DHCP, interface gone) can never
    send again: once sends fail for that reason, the attached consumer is told at once
    (``on_lost``), not ~30 s later when ICE consent expires.
    """

    def __init__(self, stun_protocol: aioice.ice.StunProtocol) -> None:
        self.stun = stun_protocol
        self.consumer: PacketHandler | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.on_lost: Callable[[Exception | None], None] | None = None
        self.on_early: Callable[[], None] | None = None  # told of each datagram kept in ``early``
        self.early: deque[tuple[bytes, tuple[Any, ...]]] = deque(maxlen=EARLY_PACKETS)
        self.mapped: dict[tuple[str, int], tuple[str, int]] = {}
        self._address_checked = 0.0

    @property
    def transport(self) -> Any:
        """The candidate's transport: a UDP socket's, or aioice's ``TurnTransport``."""
        return self.stun.transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stun.connection_made(transport)  # a TURN allocation is ready

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if data and data[0] > STUN_MAX_FIRST_BYTE:
            consumer = self.consumer
            if consumer is None:
                self.early.append((data, addr))
                if self.on_early is not None:
                    self.on_early()
            elif addr[1] == self.peer[1] and addr[0] == self.peer[0]:
                consumer(data, addr)
            return
        if data[:2] == _BINDING_SUCCESS and len(self.mapped) < MAPPED_KEPT:
            self._note_mapped(data, (addr[0], addr[1]))
        self.stun.datagram_received(data, addr)

    def _note_mapped(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            mapped = stun.parse_message(data).attributes.get("XOR-MAPPED-ADDRESS")
        except ValueError:
            return
        if mapped:
            self.mapped[addr] = (mapped[0], mapped[1])

    def error_received(self, exc: Exception) -> None:
        self.stun.error_received(exc)
        if self.on_lost is not None and isinstance(exc, OSError) and exc.errno in _NO_SOURCE:
            now = time.monotonic()
            if now - self._address_checked >= ADDRESS_CHECK_INTERVAL:
                self._address_checked = now
                if address := self._bound_address_gone():
                    on_lost, self.on_lost = self.on_lost, None
                    on_lost(LocalAddressGone(exc.errno, f"{address} is no longer an address of this host"))

    def _bound_address_gone(self) -> str | None:
        """This socket's own address if it is no longer on any interface (a TURN allocation:
        never, its socket is the TURN client's)."""
        sockname = self.transport.get_extra_info("sockname") if self.stun.local_candidate.type == "host" else None
        if not sockname or any(sockname[0] in addresses for _, addresses in local_interfaces()):
            return None
        return str(sockname[0])

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


async def relayed_candidates(
    connection: aioice.Connection, component: int, options: TurnOptions
) -> list[CandidateDemux]:
    """One relay candidate per TURN server that grants an allocation, each behind a demux
    whose ``stun.local_candidate`` is set; the failures are logged (``ice.turn_failed``)."""
    results: list[CandidateDemux | None] = [None] * len(options.servers)

    async def allocate(index: int, server: TurnServer) -> None:
        try:
            async with asyncio.timeout(TURN_ALLOCATE_TIMEOUT):
                results[index] = await _allocate(connection, component, server, options)
        except (OSError, ConnectionError, TimeoutError, stun.TransactionError) as exc:
            log.warning("ice.turn_failed", server=server.uri, error=_turn_error(exc))

    async with asyncio.TaskGroup() as tg:
        for index, server in enumerate(options.servers):
            tg.create_task(allocate(index, server))
    return [demux for demux in results if demux is not None]


async def _allocate(
    connection: aioice.Connection, component: int, server: TurnServer, options: TurnOptions
) -> CandidateDemux:
    _, demux = await turn.create_turn_endpoint(
        lambda: CandidateDemux(aioice.ice.StunProtocol(connection)),
        server_addr=(server.host, server.port),
        username=options.username,
        password=options.password,
        ssl=server.tls,
        transport=server.transport,
    )
    relayed = demux.transport.get_extra_info("sockname")
    mapped = demux.transport.get_extra_info("related_address")
    demux.stun.local_candidate = aioice.Candidate(
        foundation=candidate_foundation("relay", "udp", relayed[0]),
        component=component,
        transport="udp",
        priority=candidate_priority(component, "relay"),
        host=relayed[0],
        port=relayed[1],
        type="relay",
        related_address=mapped[0],
        related_port=mapped[1],
    )
    log.info("ice.turn_allocated", server=server.uri, relayed=f"{relayed[0]}:{relayed[1]}")
    return demux


def _turn_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no allocation within {TURN_ALLOCATE_TIMEOUT:g} s (is the server reachable over its transport?)"
    if isinstance(exc, stun.TransactionFailed) and "ERROR-CODE" in exc.response.attributes:
        code, reason = exc.response.attributes["ERROR-CODE"]
        hint = " (check --turn-user and --turn-password-file)" if code == 401 else ""
        return f"the server refused the allocation: {code} {reason}{hint}"
    return str(exc) or type(exc).__name__
