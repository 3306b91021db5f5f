"""How the selected ICE pair is named: the local candidate the peer saw (RFC 8445 7.2.5.3.1),
the route and the path type, the demultiplexer noting that view from check answers, and the
route as status, the receiver's status line and the metric show it."""

from __future__ import annotations

import dataclasses
from typing import Any

import aioice
from aioice import stun

from tests.unit.test_metrics import VIEW, reply, scrape
from tunnelpy.cli.status import render
from tunnelpy.supervisor.counters import Counters
from tunnelpy.worker.forwarding.tcp import Traffic
from tunnelpy.worker.receiver.status_line import Sample, describe
from tunnelpy.worker.transport.ice import SelectedPair, local_candidate_seen
from tunnelpy.worker.transport.ice_sockets import MAPPED_KEPT, CandidateDemux
from tunnelpy.worker.transport.interface import TransportStats


def candidate(kind: str, host: str, port: int) -> aioice.Candidate:
    return aioice.Candidate("1", 1, "udp", 1, host, port, kind)


HOST = candidate("host", "10.1.0.2", 40000)
SRFLX = candidate("srflx", "198.18.0.2", 40000)
RELAY = candidate("relay", "198.18.0.10", 49200)


def test_the_peer_s_view_names_the_local_candidate() -> None:
    gathered = [HOST, SRFLX, RELAY]
    assert local_candidate_seen(HOST, None, gathered) == ("host", ("10.1.0.2", 40000))
    assert local_candidate_seen(HOST, ("10.1.0.2", 40000), gathered) == ("host", ("10.1.0.2", 40000))
    assert local_candidate_seen(HOST, ("198.18.0.2", 40000), gathered) == ("srflx", ("198.18.0.2", 40000))
    # a symmetric NAT: the peer saw a port no STUN server saw
    assert local_candidate_seen(HOST, ("198.18.0.2", 51111), gathered) == ("prflx", ("198.18.0.2", 51111))
    # a relay candidate stays one, whatever the peer saw (its allocation)
    assert local_candidate_seen(RELAY, ("198.18.0.10", 49200), gathered) == ("relay", ("198.18.0.10", 49200))


def test_route_and_path() -> None:
    direct = SelectedPair(("198.18.0.2", 1), "srflx", ("198.18.0.3", 2), "srflx")
    assert (direct.route, direct.path, direct.relayed) == ("srflx->srflx", "direct", False)
    theirs = SelectedPair(("198.18.0.2", 1), "prflx", ("198.18.0.10", 2), "relay")
    assert (theirs.route, theirs.path) == ("prflx->relay", "relay")
    ours = SelectedPair(("198.18.0.10", 1), "relay", ("198.18.0.3", 2), "prflx")
    assert (ours.route, ours.path) == ("relay->prflx", "relay")


class _Stun:
    """What the demux forwards STUN to (aioice's StunProtocol in the agent)."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, Any]] = []
        self.transport = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((data, addr))


def _success(mapped: tuple[str, int]) -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE)
    message.attributes["XOR-MAPPED-ADDRESS"] = mapped
    return bytes(message)


def test_the_demux_notes_the_mapped_address_of_check_answers_and_passes_stun_on() -> None:
    inner = _Stun()
    demux = CandidateDemux(inner)  # type: ignore[arg-type]
    answer = _success(("198.18.0.2", 40000))
    demux.datagram_received(answer, ("198.18.0.3", 50000))
    request = bytes(stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST))
    demux.datagram_received(request, ("198.18.0.3", 50001))
    assert demux.mapped == {("198.18.0.3", 50000): ("198.18.0.2", 40000)}
    assert [addr for _, addr in inner.got] == [("198.18.0.3", 50000), ("198.18.0.3", 50001)]
    demux.datagram_received(b"\x01\x01garbage", ("198.18.0.3", 1))  # not parseable: no entry, still passed on
    assert len(demux.mapped) == 1 and len(inner.got) == 3
    for port in range(2 * MAPPED_KEPT):
        demux.datagram_received(answer, ("198.18.0.4", port))
    assert len(demux.mapped) == MAPPED_KEPT  # bounded, whoever answers


def test_quic_datagrams_wait_for_the_consumer_then_only_the_peer_s_pass() -> None:
    demux = CandidateDemux(_Stun())  # type: ignore[arg-type]
    demux.datagram_received(b"\x40early", ("198.18.0.3", 2))
    got: list[bytes] = []
    demux.attach(("198.18.0.3", 2), lambda data, addr: got.append(data))
    demux.datagram_received(b"\x40from the peer", ("198.18.0.3", 2))
    demux.datagram_received(b"\x40from someone else", ("198.18.0.9", 2))
    assert got == [b"\x40early", b"\x40from the peer"]


def test_the_route_reaches_status_the_status_line_and_the_metric() -> None:
    relayed = dataclasses.replace(VIEW, path="relay", route="relay->prflx")
    row = render(reply(Counters(), relayed)).splitlines()[-1]
    assert " relay " in row and row.endswith(" relay->prflx")
    assert render(reply(Counters(), VIEW)).splitlines()[-1].endswith(" -")  # no route (iroh)
    info = scrape(reply(Counters(), relayed))["tunnelpy_session_info"][0][0]
    assert (info["path"], info["route"]) == ("relay", "relay->prflx")
    line = describe(TransportStats(path="relay", route="relay->srflx"), Traffic(), Sample(1.0, 0, 0), None)
    assert line.startswith("connected via relay (relay->srflx) · ")
