"""The lab is what it claims: NATs of the named kind, no route between the LANs, and drills
that really change addresses and links."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import pytest

from tests.nat.lab import PUBLIC_A, Lab, NatKind
from tests.nat.traffic import expected_sha256


def test_cone_nat_keeps_one_mapping_and_symmetric_nat_gives_one_per_server(nat_lab: Callable[..., Lab]) -> None:
    lab = nat_lab(NatKind.CONE, NatKind.SYMMETRIC)
    turn = lab.start_coturn()
    cone = lab.stun_mapping(lab.left, turn)
    assert {ip for ip, _ in cone} == {lab.nat_public(lab.left)}
    assert len(set(cone)) == 1, f"cone NAT mapped one socket to {cone}"
    symmetric = lab.stun_mapping(lab.right, turn)
    assert {ip for ip, _ in symmetric} == {lab.nat_public(lab.right)}
    assert len(set(symmetric)) == 2, f"symmetric NAT reused a mapping: {symmetric}"


_PROBE = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], 9), timeout=1)\n"
    "    print('open')\n"
    "except ConnectionRefusedError:\n"
    "    print('refused')\n"
    "except TimeoutError:\n"
    "    print('timeout')\n"
    "except OSError as exc:\n"
    "    print(exc.__class__.__name__, exc.errno)\n"
)


def _reach(lab: Lab, ip: str) -> str:
    """'refused' = the address answered (a RST); anything else = it cannot be reached."""
    return lab.left.run([sys.executable, "-c", _PROBE, ip]).stdout.strip()


def test_the_lans_cannot_reach_each_other_directly(nat_lab: Callable[..., Lab]) -> None:
    lab = nat_lab()
    assert _reach(lab, PUBLIC_A) == "refused"
    assert _reach(lab, lab.right.addr) != "refused"  # no route to the other LAN
    assert _reach(lab, lab.nat_public(lab.right)) == "timeout"  # its router drops the unsolicited
    # nothing of the host's own network is there
    routes = lab.left.run(["ip", "-4", "route", "show"]).stdout
    assert "10.1.0.1" in routes and "198.18" not in routes


def test_readdress_changes_the_public_mapping_and_a_second_uplink_carries_traffic_when_the_first_is_cut(
    nat_lab: Callable[..., Lab],
) -> None:
    lab = nat_lab()
    turn = lab.start_coturn()
    before = lab.stun_mapping(lab.left, turn)[0]
    old = lab.left.addr
    new = lab.readdress(lab.left)
    assert new != old and new in lab.left.run(["ip", "-4", "addr"]).stdout
    assert old not in lab.left.run(["ip", "-4", "addr"]).stdout
    assert lab.stun_mapping(lab.left, turn)[0][0] == before[0]  # same router, same public IP

    second = lab.add_uplink(lab.left)
    assert lab.stun_mapping(lab.left, turn)[0][0] == lab.nat_public(lab.left)
    lab.cut(lab.primary(lab.left))
    assert lab.stun_mapping(lab.left, turn)[0][0] == second.public
    lab.restore(lab.primary(lab.left))
    assert lab.stun_mapping(lab.left, turn)[0][0] == lab.nat_public(lab.left)


def test_traffic_ends_move_a_known_stream_inside_a_host(nat_lab: Callable[..., Lab]) -> None:
    lab = nat_lab()
    server = lab.left.popen([sys.executable, "-m", "tests.nat.traffic", "serve", "0", "300000"], stdout=-1)
    assert server.stdout is not None
    port = json.loads(server.stdout.readline())["ready"]
    done = lab.left.run([sys.executable, "-m", "tests.nat.traffic", "fetch", f"127.0.0.1:{port}"])
    result = json.loads(done.stdout)
    assert result["bytes"] == 300000 and result["sha256"] == expected_sha256(300000)


def test_shape_delays_and_loses_what_the_routers_forward(nat_lab: Callable[..., Lab]) -> None:
    lab = nat_lab()
    turn = lab.start_coturn()

    lab.shape(40, 0)
    assert lab.stun_rtt(lab.left, turn) >= 0.080  # 40 ms each way through the left router
    lab.shape(0, 100)  # everything lost
    with pytest.raises(RuntimeError, match="no STUN answer"):
        lab.stun_mapping(lab.left, turn, timeout=1)
    lab.shape(0, 0)
    lab.stun_mapping(lab.left, turn)
