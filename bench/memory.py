"""Memory of the bench's processes: RSS and PSS from /proc/PID/smaps_rollup, idle and peak under load."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from tunnelpy.bench import report as br


def read_memory(pid: int, descendants: bool) -> tuple[float, float] | None:
    """(RSS, PSS) MB of ``pid`` (plus its descendants, e.g. socat's forks), None if it is gone."""
    total, found = [0.0, 0.0], False
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, KeyError):
            rss, pss = br.parse_smaps_rollup(Path(f"/proc/{current}/smaps_rollup").read_text())
            total[0], total[1], found = total[0] + rss, total[1] + pss, True
        if descendants:
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{current}/task").iterdir():
                    pending += [int(c) for c in (task / "children").read_text().split()]
    return (total[0], total[1]) if found else None


def record_memory(
    metrics: dict[str, float],
    phase: str,
    pids: dict[str, tuple[int, bool]],
    peaks: dict[str, tuple[float, float]] | None = None,
) -> None:
    for role, (pid, descendants) in pids.items():
        figures = peaks.get(role) if peaks is not None else read_memory(pid, descendants)
        if figures:
            metrics[br.memory_key(role, phase, "rss")], metrics[br.memory_key(role, phase, "pss")] = figures


@contextlib.asynccontextmanager
async def peak_memory(pids: dict[str, tuple[int, bool]], every: float = 0.1):  # type: ignore[no-untyped-def]
    """Yields a dict role -> peak (RSS, PSS) that a sampling task updates while the block runs."""
    peaks: dict[str, tuple[float, float]] = {}

    async def sample() -> None:
        while True:
            for role, (pid, descendants) in pids.items():
                if (now := read_memory(pid, descendants)) is not None:
                    old = peaks.get(role, (0.0, 0.0))
                    peaks[role] = (max(old[0], now[0]), max(old[1], now[1]))
            await asyncio.sleep(every)

    sampler = asyncio.create_task(sample())
    try:
        yield peaks
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
