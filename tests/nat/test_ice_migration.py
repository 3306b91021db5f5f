"""An ICE receiver whose address changes mid-transfer (lab.readdress): nostr mode re-signals and
carries new connections on the same --listen; custom-manual cannot (no one to paste new blocks).

What is proven and what is not: the receiver notices at once that its path's address is gone
(not ~30 s later through ICE consent), starts a new session through Nostr while --listen stays
up, and the next local connection gets the whole stream. The local connection that was open
during the change is reset, not paused: there is no ICE restart under a live QUIC connection yet.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.nat.ice_support import (
    SIZE,
    LabRelay,
    Peers,
    fetch,
    fetch_raw,
    start_source,
)
from tests.nat.lab import Lab, NatKind
from tests.support import run
from tunnelpy.bench.nostr_peers import make_key

RATE = 1_000_000  # bytes/s: the first transfer (SIZE bytes) spans the re-addressing


def test_nostr_receiver_readdressed_mid_transfer_comes_back_on_the_same_listener(
    nat_lab: Callable[..., Lab], tmp_path: Path
) -> None:
    lab = nat_lab(NatKind.CONE, NatKind.CONE)
    coturn = lab.start_coturn()
    relay = LabRelay(lab, tmp_path)

    async def main() -> None:
        port = start_source(lab.right, rate=RATE)
        net = ["--relay", relay.url, "--stun-server", coturn.stun]
        sender_key, sender_npub = make_key(tmp_path, "sender")
        receiver_key, receiver_npub = make_key(tmp_path, "receiver")
        async with Peers(tmp_path) as peers:
            keys = ["--nsec-file", str(sender_key), "--peer-npub", receiver_npub]
            control = ["--control", str(tmp_path / "sender.sock")]
            sender = await peers.start(
                lab.right, "sender", ["sender", "nostr", *keys, "--allowed-tcp", "127.0.0.0/8", *net, *control]
            )
            await sender.wait_event("supervisor.online", timeout=30)
            keys = ["--nsec-file", str(receiver_key), "--peer-npub", sender_npub]
            local = ["--source", f"tcp://127.0.0.1:{port}", "--listen", "127.0.0.1:0"]
            receiver = await peers.start(lab.left, "receiver", ["receiver", "nostr", *keys, *net, *local])
            listening = (await receiver.wait_event("receiver.listening", timeout=40))["address"]
            in_flight = asyncio.create_task(fetch_raw(lab.left, listening, timeout=60))
            await asyncio.sleep(SIZE / RATE / 3)
            old = lab.left.addr
            moved_at = time.monotonic()
            new = await asyncio.to_thread(lab.readdress, lab.left)
            lost = await receiver.wait_event("receiver.lost", timeout=15)
            noticed_s = time.monotonic() - moved_at
            assert "re-addressed" in lost["reason"] and old in lost["reason"], lost
            back = await receiver.wait_event("receiver.reconnected", timeout=30)
            recovered_s = time.monotonic() - moved_at
            assert back["address"] == listening  # the same listener all along
            paths = [e for e in receiver.events if e.get("event") == "session.path"]
            assert len(paths) == 2 and paths[1]["local_base"].startswith(new + ":"), paths
            cut = await in_flight
            cut_bytes = json.loads(cut.stdout)["bytes"] if cut.returncode == 0 else None
            assert cut_bytes != SIZE, "the in-flight transfer cannot have survived: no ICE restart yet"
            fetched = await fetch(lab.left, listening)  # the next connection, on the new session
            print(
                f"NAT-RESULT mode=nostr nat=cone/cone drill=readdress noticed_s={noticed_s:.2f} "
                f"recovered_s={recovered_s:.2f} in_flight=reset next_ttfb_s={fetched['ttfb_s']:.3f} "
                f"route={paths[1]['route']}"
            )

    try:
        run(main(), timeout=120)
    finally:
        relay.stop()
