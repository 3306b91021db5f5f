"""An ICE receiver whose address changes mid-transfer (lab.readdress), in nostr mode.

What is proven: the receiver notices at once that its path's address is gone (not ~30 s later
through ICE consent) and restarts ICE for the same session through Nostr (new ufrag/pwd, new
candidates on both sides); the QUIC connection and its streams survive, so the local
connection open during the change sees only a pause and gets the whole stream intact, and the
sender keeps the same session and worker. When the restart gets no answer (here: the
session's worker is gone), the receiver falls back to a new session on the same --listen.
custom-manual cannot restart or re-signal without a person: its receiver exits 11 (untested here).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.nat.ice_support import (
    SIZE,
    LabPeer,
    LabRelay,
    Peers,
    connected_session,
    fetch,
    fetch_raw,
    start_source,
)
from tests.nat.lab import Lab, NatKind
from tests.nat.traffic import expected_sha256
from tests.support import run
from tunnelpy.bench.nostr_peers import make_key

RATE = 1_000_000  # bytes/s: the first transfer (SIZE bytes) spans the re-addressing


async def _start(
    lab: Lab, relay: LabRelay, tmp_path: Path, peers: Peers, port: int
) -> tuple[LabPeer, LabPeer, Path, str]:
    """A cone/cone nostr sender and receiver; the sender's control socket and the --listen address."""
    coturn = lab.start_coturn()
    net = ["--relay", relay.url, "--stun-server", coturn.stun]
    sender_key, sender_npub = make_key(tmp_path, "sender")
    receiver_key, receiver_npub = make_key(tmp_path, "receiver")
    keys = ["--nsec-file", str(sender_key), "--peer-npub", receiver_npub]
    control = tmp_path / "sender.sock"
    sender = await peers.start(
        lab.right,
        "sender",
        ["sender", "nostr", *keys, "--allowed-tcp", "127.0.0.0/8", *net, "--control", str(control)],
    )
    await sender.wait_event("supervisor.online", timeout=30)
    keys = ["--nsec-file", str(receiver_key), "--peer-npub", sender_npub]
    local = ["--source", f"tcp://127.0.0.1:{port}", "--listen", "127.0.0.1:0"]
    receiver = await peers.start(lab.left, "receiver", ["receiver", "nostr", *keys, *net, *local])
    listening = (await receiver.wait_event("receiver.listening", timeout=40))["address"]
    return sender, receiver, control, listening


def _events(peer: LabPeer, name: str) -> list[dict[str, Any]]:
    return [e for e in peer.events if e.get("event") == name]


def test_nostr_receiver_readdressed_mid_transfer_restarts_ice_and_the_open_connection_completes(
    nat_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = nat_lab(NatKind.CONE, NatKind.CONE)
    relay = LabRelay(lab, tmp_path)

    async def main() -> None:
        port = start_source(lab.right, rate=RATE)
        async with Peers(tmp_path) as peers:
            sender, receiver, control, listening = await _start(lab, relay, tmp_path, peers, port)
            in_flight = asyncio.create_task(fetch_raw(lab.left, listening, timeout=60))
            before = await connected_session(control)
            await asyncio.sleep(SIZE / RATE / 3)
            old = lab.left.addr
            moved_at = time.monotonic()
            new = await asyncio.to_thread(lab.readdress, lab.left)
            lost = await receiver.wait_event("receiver.path_lost", timeout=15)
            noticed_s = time.monotonic() - moved_at
            assert "re-addressed" in lost["reason"] and old in lost["reason"], lost
            restarted = await receiver.wait_event("session.ice_restart", timeout=30)
            restarted_s = time.monotonic() - moved_at
            done = await in_flight
            assert done.returncode == 0, done.stderr[-2000:]
            kept = json.loads(done.stdout)
            assert kept["bytes"] == SIZE and kept["sha256"] == expected_sha256(SIZE), kept
            paths = _events(receiver, "session.path")
            assert len(paths) == 2 and paths[1]["local_base"].startswith(new + ":"), paths
            assert not _events(receiver, "receiver.lost") and not _events(receiver, "receiver.reconnected")
            worker_restart = await sender.wait_event("session.ice_restart", timeout=10)
            after = await connected_session(control)
            assert (after["session_id"], after["pid"]) == (before["session_id"], before["pid"]), (before, after)
            assert after["route"] == worker_restart["route"], (after, worker_restart)
            print(
                f"NAT-RESULT mode=nostr nat=cone/cone drill=readdress in_flight=kept "
                f"pause_s={kept['max_gap_s']:.2f} noticed_s={noticed_s:.2f} restarted_s={restarted_s:.2f} "
                f"restart_took_s={restarted['took_s']:.2f} route={restarted['route']} "
                f"sender_route={after['route']} transfer_s={kept['total_s']:.2f} bytes={kept['bytes']}"
            )

    try:
        run(main(), timeout=120)
    finally:
        relay.stop()


def test_an_unanswered_ice_restart_falls_back_to_a_new_session_on_the_same_listener(
    nat_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = nat_lab(NatKind.CONE, NatKind.CONE)
    relay = LabRelay(lab, tmp_path)

    async def main() -> None:
        port = start_source(lab.right, rate=RATE)
        async with Peers(tmp_path) as peers:
            _, receiver, control, listening = await _start(lab, relay, tmp_path, peers, port)
            in_flight = asyncio.create_task(fetch_raw(lab.left, listening, timeout=60))
            worker = (await connected_session(control))["pid"]
            await asyncio.sleep(SIZE / RATE / 3)
            moved_at = time.monotonic()
            new = await asyncio.to_thread(lab.readdress, lab.left)
            os.kill(worker, signal.SIGTERM)  # its goodbye goes to the old address: the receiver cannot hear it
            failed = await receiver.wait_event("receiver.ice_restart_failed", timeout=30)
            assert "did not answer" in failed["error"], failed
            lost = await receiver.wait_event("receiver.lost", timeout=5)
            assert "re-addressed" in lost["reason"], lost
            back = await receiver.wait_event("receiver.reconnected", timeout=30)
            recovered_s = time.monotonic() - moved_at
            assert back["address"] == listening  # the same listener all along
            paths = _events(receiver, "session.path")
            assert len(paths) == 2 and paths[1]["local_base"].startswith(new + ":"), paths
            cut = await in_flight
            cut_bytes = json.loads(cut.stdout)["bytes"] if cut.returncode == 0 else None
            assert cut_bytes != SIZE, "the in-flight transfer cannot survive a new session"
            fetched = await fetch(lab.left, listening)  # the next connection, on the new session
            print(
                f"NAT-RESULT mode=nostr nat=cone/cone drill=readdress+worker_gone in_flight=reset "
                f"fallback=new_session recovered_s={recovered_s:.2f} next_ttfb_s={fetched['ttfb_s']:.3f} "
                f"route={paths[1]['route']}"
            )

    try:
        run(main(), timeout=120)
    finally:
        relay.stop()
