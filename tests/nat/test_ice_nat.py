"""The ICE modes across real NATs (tests/nat/lab.py): custom-manual and nostr, direct through
cone NATs, over a TURN relay (coturn on the server host) between symmetric NATs, and a clear
failure there without TURN.

The receiver runs in the left LAN, the sender and its service in the right one. Each test moves
a known 2 MB stream from the sender's 127.0.0.1 to a client of the receiver's --listen, checks
its SHA-256, and prints one ``NAT-RESULT`` line: the path (direct/relay) and the ICE route the
receiver logged (``session.path``) and the sender's ``tunnel-py status`` showed, and the time to
first byte of that local client (pytest -s shows them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.nat.ice_support import (
    LabRelay,
    Peers,
    connected_session,
    fetch,
    paste,
    result_line,
    start_source,
    turn_flags,
)
from tests.nat.lab import Lab, NatKind
from tests.support import run
from tunnelpy.bench.harness import Peer
from tunnelpy.bench.nostr_peers import make_key

CONE, SYMMETRIC = NatKind.CONE, NatKind.SYMMETRIC
ALLOW = ["--allowed-tcp", "127.0.0.0/8"]
FAIL_WITHIN = 45.0  # ICE gives up after 30 s of checks (ICE_CONNECT_TIMEOUT); the rest is start-up


def kinds(left: NatKind, right: NatKind) -> str:
    return f"{left.value}/{right.value}"


async def _transfer_and_report(
    lab: Lab, receiver: Peer, control: Path, mode: str, nat: str, expect_path: str, expect_type: str, started: float
) -> None:
    """Once the receiver listens: the pair it chose, a transfer through it, the sender's view of
    the same session, and the result lines for the note."""
    listening = await receiver.wait_event("receiver.listening", timeout=40)
    setup_s = time.monotonic() - started
    chosen = receiver.find("session.path")
    assert chosen is not None and chosen["path"] == expect_path and expect_type in chosen["route"], chosen
    fetched = await fetch(lab.left, listening["address"])
    session = await connected_session(control)
    assert session["path"] == expect_path and expect_type in session["route"], session
    print(result_line(mode, nat, chosen["path"], chosen["route"], fetched, setup_s))
    print(f"NAT-RESULT-SENDER mode={mode} nat={nat} path={session['path']} route={session['route']}")


async def _custom_manual(lab: Lab, work: Path, nat: str, *, turn: bool, expect_path: str, expect_type: str) -> None:
    coturn = lab.start_coturn()
    port = start_source(lab.right)
    net = ["--stun-server", coturn.stun, *(turn_flags(coturn, work) if turn else [])]
    control = work / "sender.sock"
    async with Peers(work) as peers:
        started = time.monotonic()
        pipe = asyncio.subprocess.PIPE
        receiver = await peers.start(
            lab.left,
            "receiver",
            ["receiver", "custom-manual", "--source", f"tcp://127.0.0.1:{port}", "--listen", "127.0.0.1:0", *net],
            stdin=pipe,
        )
        sender = await peers.start(
            lab.right, "sender", ["sender", "custom-manual", *ALLOW, "--control", str(control), *net], stdin=pipe
        )
        assert receiver.proc and sender.proc and receiver.proc.stdout and sender.proc.stdout
        assert receiver.proc.stdin and sender.proc.stdin
        await paste(receiver.proc.stdout, sender.proc.stdin)  # the OFFER
        await paste(sender.proc.stdout, receiver.proc.stdin)  # the ANSWER
        await _transfer_and_report(lab, receiver, control, "custom-manual", nat, expect_path, expect_type, started)


def test_custom_manual_crosses_two_cone_nats_on_a_direct_srflx_path(
    nat_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    """The regression test: it worked by hand before TURN existed."""
    lab = nat_lab(CONE, CONE)
    run(
        _custom_manual(lab, tmp_path, kinds(CONE, CONE), turn=False, expect_path="direct", expect_type="srflx"),
        timeout=90,
    )


def test_custom_manual_between_symmetric_nats_relays_through_turn(nat_lab: Callable[..., Lab], tmp_path: Path) -> None:
    lab = nat_lab(SYMMETRIC, SYMMETRIC)
    run(
        _custom_manual(lab, tmp_path, kinds(SYMMETRIC, SYMMETRIC), turn=True, expect_path="relay", expect_type="relay"),
        timeout=90,
    )


def test_custom_manual_between_symmetric_nats_without_turn_fails_clearly(
    nat_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = nat_lab(SYMMETRIC, SYMMETRIC)
    coturn = lab.start_coturn()
    port = start_source(lab.right)
    net = ["--stun-server", coturn.stun]

    async def main() -> None:
        async with Peers(tmp_path) as peers:
            started = time.monotonic()
            pipe = asyncio.subprocess.PIPE
            receiver = await peers.start(
                lab.left,
                "receiver",
                ["receiver", "custom-manual", "--source", f"tcp://127.0.0.1:{port}", "--listen", "127.0.0.1:0", *net],
                stdin=pipe,
            )
            sender_args = ["sender", "custom-manual", *ALLOW, "--control", str(tmp_path / "s.sock"), *net]
            sender = await peers.start(lab.right, "sender", sender_args, stdin=pipe)
            assert receiver.proc and sender.proc and receiver.proc.stdout and sender.proc.stdout
            assert receiver.proc.stdin and sender.proc.stdin
            await paste(receiver.proc.stdout, sender.proc.stdin)
            await paste(sender.proc.stdout, receiver.proc.stdin)
            code = await receiver.wait(timeout=FAIL_WITHIN)
            failed_after = time.monotonic() - started
            error = receiver.tail(3)
            assert code == 10, f"exit {code}: {error}"
            assert "ICE found no working path" in error and "--turn-server turn:HOST:PORT" in error, error
            assert receiver.find("session.path") is None
            print(
                f"NAT-RESULT mode=custom-manual nat=symmetric/symmetric path=none route=none "
                f"failed_after_s={failed_after:.1f} exit={code}"
            )

    run(main(), timeout=FAIL_WITHIN + 30)


async def _nostr(lab: Lab, work: Path, nat: str, *, turn: bool, expect_path: str, expect_type: str) -> None:
    coturn = lab.start_coturn()
    relay = LabRelay(lab, work)
    try:
        port = start_source(lab.right)
        net = ["--relay", relay.url, "--stun-server", coturn.stun]
        # The receiver reaches the TURN server over UDP, the sender over TCP: both legs are exercised.
        receiver_turn = turn_flags(coturn, work) if turn else []
        sender_turn = turn_flags(coturn, work, "?transport=tcp") if turn else []
        sender_key, sender_npub = make_key(work, "sender")
        receiver_key, receiver_npub = make_key(work, "receiver")
        control = work / "sender.sock"
        async with Peers(work) as peers:
            keys = ["--nsec-file", str(sender_key), "--peer-npub", receiver_npub]
            sender = await peers.start(
                lab.right, "sender", ["sender", "nostr", *keys, *ALLOW, *net, *sender_turn, "--control", str(control)]
            )
            await sender.wait_event("supervisor.online", timeout=30)
            started = time.monotonic()
            keys = ["--nsec-file", str(receiver_key), "--peer-npub", sender_npub]
            local = ["--source", f"tcp://127.0.0.1:{port}", "--listen", "127.0.0.1:0"]
            receiver = await peers.start(
                lab.left, "receiver", ["receiver", "nostr", *keys, *net, *receiver_turn, *local]
            )
            await _transfer_and_report(lab, receiver, control, "nostr", nat, expect_path, expect_type, started)
    finally:
        relay.stop()


def test_nostr_crosses_two_cone_nats_on_a_direct_path(nat_lab: Callable[..., Lab], tmp_path: Path) -> None:
    lab = nat_lab(CONE, CONE)
    run(_nostr(lab, tmp_path, kinds(CONE, CONE), turn=False, expect_path="direct", expect_type="srflx"), timeout=120)


def test_nostr_between_symmetric_nats_relays_through_turn(nat_lab: Callable[..., Lab], tmp_path: Path) -> None:
    lab = nat_lab(SYMMETRIC, SYMMETRIC)
    run(
        _nostr(lab, tmp_path, kinds(SYMMETRIC, SYMMETRIC), turn=True, expect_path="relay", expect_type="relay"),
        timeout=120,
    )


@pytest.fixture(autouse=True)
def _print_on_a_line_of_its_own() -> None:
    print()  # pytest -s writes the test id first: the NAT-RESULT line starts a line
