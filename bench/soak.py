"""``scripts/soak N M``: N sessions through one real sender, M GiB each, SHA-256 checked.

Not part of CI. One sender (iroh, offline, loopback) and N receivers as real processes, an
echo service behind them; every session pushes M GiB in 4 MiB connections with a running
SHA-256 of what went out and what came back. The report: per session GiB, MB/s, mismatches,
errors; the sender's and receivers' peak RSS; the sender's log warnings.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tunnelpy.bench.harness import EchoService, Peer, start_receiver, start_sender, tcp_echo_roundtrip
from tunnelpy.bench.memory import read_memory

CHUNK = 4 * 1024 * 1024


async def _session(addr: tuple[str, int], total: int) -> dict[str, Any]:
    sent, received, moved, errors, started = hashlib.sha256(), hashlib.sha256(), 0, [], time.monotonic()
    while moved < total:
        payload = os.urandom(min(CHUNK, total - moved))
        sent.update(payload)
        try:
            received.update(await tcp_echo_roundtrip(addr, payload))
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors.append(str(exc))
        moved += len(payload)
    seconds = time.monotonic() - started
    return {
        "GiB": total / 2**30,
        "MB_s": total * 2 / seconds / 1e6,  # both directions
        "sha256_equal": sent.digest() == received.digest(),
        "errors": errors,
    }


async def soak(work: Path, sessions: int, gib: float) -> int:
    peers: list[Peer] = []
    try:
        async with EchoService() as echo:
            sender, ticket = await start_sender(
                work,
                peers,
                extra=["--allow-any-receiver", "--allowed-tcp", "127.0.0.1/32", "--max-sessions", str(sessions)],
            )
            addrs = []
            for n in range(sessions):
                _, addr = await start_receiver(work, peers, ticket, f"tcp://127.0.0.1:{echo.tcp_port}", name=f"r{n}")
                assert addr is not None
                addrs.append(addr)
            results = await asyncio.gather(*(_session(addr, int(gib * 2**30)) for addr in addrs))
            assert sender.proc is not None
            rss = read_memory(sender.proc.pid, descendants=True)
        bad = 0
        for n, result in enumerate(results):
            ok = result["sha256_equal"] and not result["errors"]
            bad += not ok
            print(
                f"session {n:3d}: {result['GiB']:.2f} GiB each way  {result['MB_s']:7.1f} MB/s  "
                f"sha256 {'equal' if result['sha256_equal'] else 'DIFFERENT'}  errors {len(result['errors'])}"
            )
        warnings = [e for e in sender.events if e.get("level") in ("warning", "error")]
        print(f"sender (all processes) RSS/PSS at the end: {rss}; sender warnings/errors: {len(warnings)}")
        for event in warnings[:10]:
            print(f"  {event.get('event')}: {event.get('error') or event.get('reason') or ''}")
        print(f"soak: {sessions - bad}/{sessions} sessions intact")
        return 1 if bad else 0
    finally:
        for peer in reversed(peers):
            await peer.stop(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n")[0])
    parser.add_argument("sessions", type=int, nargs="?", default=10, help="sessions at once (default 10)")
    parser.add_argument("gib", type=float, nargs="?", default=1.0, help="GiB through each session (default 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tunnel-py-soak-") as work:
        return asyncio.run(soak(Path(work), args.sessions, args.gib))


if __name__ == "__main__":
    sys.exit(main())
