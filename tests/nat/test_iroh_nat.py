"""iroh modes across real NATs (tests/nat/lab.py): the sender behind the left router, the
receiver behind the right one, the iroh relay (with QUIC address discovery) on the public
server host. Each test moves known bytes through the tunnel (SHA-256 checked) and prints one
``NAT-RESULT`` line; ``ttfb_s`` runs from the receiver's start to the first byte fetched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.nat import iroh_support as irs
from tests.nat.lab import Lab, NatKind
from tests.support import run

SMALL = 256 * 1024


async def _tunnel(lab: Lab, work: Path, size: int, *, relay_only: bool = False, rate: float | None = None):  # type: ignore[no-untyped-def]
    relay = irs.start_relay(lab, work)
    flags = irs.relay_flags(relay, *(["--relay-only"] if relay_only else []))
    tunnel = irs.Tunnel(work)
    port = irs.serve_bytes(lab.left, size, rate)
    sender, ticket = await irs.start_sender(tunnel, lab.left, flags)
    await irs.start_receiver(tunnel, lab.right, ticket, port, flags)
    return tunnel, sender


def test_cone_nats_upgrade_from_relay_to_a_direct_path(nat_lab: Callable[..., Lab], work: Path) -> None:
    lab = nat_lab(NatKind.CONE, NatKind.CONE)

    async def main() -> None:
        tunnel, sender = await _tunnel(lab, work, SMALL)
        try:
            result = await irs.fetch(lab.right, SMALL)
            direct = await irs.wait_path(tunnel, "direct")
            assert direct["paths"][0].startswith(f"direct {lab.nat_public(lab.right)}:"), direct["paths"]
            changes = irs.path_changes(sender)
            assert changes[-1][1] == "direct", changes
            irs.report("iroh", "cone/cone", "direct", result, changes=">".join(str(t) for _, t in changes))
        finally:
            await tunnel.close()

    run(main())


def test_symmetric_nats_fall_back_to_the_relay(nat_lab: Callable[..., Lab], work: Path) -> None:
    lab = nat_lab(NatKind.SYMMETRIC, NatKind.SYMMETRIC)

    async def main() -> None:
        tunnel, sender = await _tunnel(lab, work, SMALL)
        try:
            result = await irs.fetch(lab.right, SMALL)
            await asyncio.sleep(3)  # holepunching had its chance
            state = await irs.wait_path(tunnel, "relay")
            assert state["paths"][0].startswith("relay "), state["paths"]
            irs.report("iroh", "symmetric/symmetric", "relay", result)
        finally:
            await tunnel.close()

    run(main())


def test_relay_only_keeps_every_packet_on_the_relay(nat_lab: Callable[..., Lab], work: Path) -> None:
    lab = nat_lab(NatKind.CONE, NatKind.CONE)

    async def main() -> None:
        tunnel, sender = await _tunnel(lab, work, SMALL, relay_only=True)
        try:
            result = await irs.fetch(lab.right, SMALL)
            await asyncio.sleep(2)  # a direct path would have appeared by now through cone NATs
            state = await irs.wait_path(tunnel, "relay")
            assert all(p.startswith("relay ") for p in state["paths"]), state["paths"]
            assert irs.path_changes(sender) == [(None, "relay")]
            irs.report("iroh", "cone/cone --relay-only", "relay", result)
        finally:
            await tunnel.close()

    run(main())


def test_iroh_manual_crosses_cone_nats_with_its_stun_seen_address(nat_lab: Callable[..., Lab], work: Path) -> None:
    lab = nat_lab(NatKind.CONE, NatKind.CONE)
    turn = lab.start_coturn()

    async def main() -> None:
        tunnel = irs.Tunnel(work)
        try:
            port = irs.serve_bytes(lab.left, SMALL)
            receiver, sender = await irs.start_manual_pair(tunnel, lab, port, turn.stun)
            result = await irs.fetch(lab.right, SMALL)
            offer = await sender.wait_event("manual.offer")
            assert offer["receiver_id"]
            state = await irs.wait_path(tunnel, "direct")
            assert state["paths"][0].startswith(f"direct {lab.nat_public(lab.right)}:"), state["paths"]
            irs.report("iroh-manual", "cone/cone", "direct", result)
        finally:
            await tunnel.close()

    run(main())


def test_the_session_survives_the_receiver_changing_its_address(nat_lab: Callable[..., Lab], work: Path) -> None:
    lab = nat_lab(NatKind.CONE, NatKind.CONE)
    size, rate = 6_000_000, 1_000_000  # six seconds of transfer around the move

    async def main() -> None:
        tunnel, sender = await _tunnel(lab, work, size, rate=rate)
        try:
            fetching = asyncio.create_task(irs.fetch(lab.right, size))
            before = await irs.wait_path(tunnel, "direct")
            old, new = lab.right.addr, lab.readdress(lab.right)
            result = await fetching  # SHA-256 checked: not a byte lost or doubled
            after = await irs.session(tunnel)
            assert after["session_id"] == before["session_id"] and after["state"] == "connected"
            assert len([e for e in sender.events if e.get("event") == "worker.receiver_connected"]) == 1
            irs.report("iroh", "cone/cone readdress", after["path"], result, moved=f"{old}>{new}")
        finally:
            await tunnel.close()

    run(main())


def test_a_second_uplink_carries_the_transfer_when_the_first_is_cut(nat_lab: Callable[..., Lab], work: Path) -> None:
    lab = nat_lab(NatKind.CONE, NatKind.CONE)
    second = lab.add_uplink(lab.right)
    size, rate = 6_000_000, 1_000_000

    async def main() -> None:
        tunnel, sender = await _tunnel(lab, work, size, rate=rate)
        try:
            fetching = asyncio.create_task(irs.fetch(lab.right, size))
            before = await irs.wait_path(tunnel, "direct")
            assert len(before["paths"]) >= 2, before["paths"]  # the direct path and the relay's
            lab.cut(lab.primary(lab.right))
            result = await fetching
            after = await irs.session(tunnel)
            assert after["session_id"] == before["session_id"]
            irs.report(
                "iroh", "cone/cone+uplink cut", after["path"], result, paths=len(before["paths"]), second=second.public
            )
            print(f"NAT-PATHS before={before['paths']} after={after['paths']}", flush=True)
        finally:
            await tunnel.close()

    run(main())
