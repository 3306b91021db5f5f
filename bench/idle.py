"""Memory of many idle sessions: one iroh sender, N admitted sessions held open, nothing flowing.

The N sessions come from one client process (this one) with a few iroh endpoints (the
sender admits at most 30 sessions a minute from one receiver id), so the figure is the
sender's alone: the supervisor, its forkserver and N workers, each summed from
/proc/PID/smaps_rollup. Per worker: the median PSS, which at this scale is close to the
worker's private memory (the pages it shares with the forkserver are split N ways).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from pathlib import Path
from typing import Any

from tunnelpy.bench.harness import Peer, start_sender
from tunnelpy.bench.memory import read_memory
from tunnelpy.cli.status import fetch_status
from tunnelpy.common.config import NetOptions
from tunnelpy.worker.forwarding import wire
from tunnelpy.worker.receiver.iroh_mode import request_session
from tunnelpy.worker.transport import iroh_transport

SESSIONS_PER_ENDPOINT = 25
OPEN_CONCURRENCY = 8
OFFLINE = NetOptions(no_relay=True, bind=("127.0.0.1", 0))


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                found += children
                pending += children
    return found


async def _open(endpoint: Any, ticket: str, source: str, gate: asyncio.Semaphore) -> Any:
    async with gate:
        accepted = await request_session(endpoint, ticket, source)
        return await iroh_transport.connect(endpoint, iroh_transport.peer_addr(accepted.worker_ticket), wire.ALPN)


async def measure_idle_sessions(work: Path, count: int, source: str) -> dict[str, Any]:
    """Open ``count`` sessions to a fresh sender, wait until all are connected, read memory."""
    peers: list[Peer] = []
    endpoints: list[Any] = []
    conns: list[Any] = []
    try:
        sender, ticket = await start_sender(
            work,
            peers,
            name="idle",
            extra=["--allow-any-receiver", "--allowed-tcp", "127.0.0.1/32", "--max-sessions", str(count)],
        )
        for _ in range(0, count, SESSIONS_PER_ENDPOINT):
            endpoints.append(await iroh_transport.bind_endpoint(OFFLINE, secret=None, alpns=[]))
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)
        conns = list(
            await asyncio.gather(
                *(_open(endpoints[i // SESSIONS_PER_ENDPOINT], ticket, source, gate) for i in range(count))
            )
        )
        async with asyncio.timeout(30):
            while sum(s["state"] == "connected" for s in (await fetch_status(work / "idle.sock")).sessions) < count:
                await asyncio.sleep(0.2)
        assert sender.proc is not None
        supervisor = read_memory(sender.proc.pid, descendants=False)
        children = [(pid, read_memory(pid, descendants=False)) for pid in _descendants(sender.proc.pid)]
        workers = [m for pid, m in children if m and pid in _worker_pids(sender)]
        total = read_memory(sender.proc.pid, descendants=True)
        return {
            "sessions": count,
            "workers_measured": len(workers),
            "supervisor_pss_MB": supervisor[1] if supervisor else None,
            "worker_pss_median_MB": statistics.median(m[1] for m in workers) if workers else None,
            "worker_rss_median_MB": statistics.median(m[0] for m in workers) if workers else None,
            "sender_total_pss_MB": total[1] if total else None,
        }
    finally:
        for conn in conns:
            conn.close(0, "bench done")
        for endpoint in endpoints:
            await iroh_transport.close_endpoint(endpoint)
        for peer in peers:
            await peer.stop()


def _worker_pids(sender: Peer) -> set[int]:
    return {e["pid"] for e in sender.events if e.get("event") == "worker.ready"}


def render_idle(figures: dict[str, Any]) -> str:
    if "error" in figures:
        return f"Idle sessions: failed: {figures['error']}"
    return (
        f"Idle sessions, MB PSS: {figures['sessions']} sessions held open with no traffic -> whole sender "
        f"(supervisor + forkserver + workers) {figures['sender_total_pss_MB']:.0f} MB; supervisor "
        f"{figures['supervisor_pss_MB']:.1f}; per worker median {figures['worker_pss_median_MB']:.1f} "
        f"(RSS {figures['worker_rss_median_MB']:.1f})"
    )
