"""Memory and CPU of the bench's processes: RSS and PSS from /proc/PID/smaps_rollup, idle and peak
under load; CPU seconds (utime + stime) from /proc/PID/stat."""

from __future__ import annotations

import asyncio
import contextlib
import os
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


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
    return found


def read_cpu_s(pid: int, descendants: bool) -> float | None:
    """CPU seconds (user + system) of ``pid``, with its live descendants and the children it
    reaped if ``descendants`` (socat's and sshd's forks); None if it is gone."""
    ticks, found = 0, False
    for current in _descendants(pid) if descendants else [pid]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            # after the command: state is field 3; utime 14, stime 15, cutime 16, cstime 17
            ticks += int(fields[11]) + int(fields[12])
            if descendants:
                ticks += int(fields[13]) + int(fields[14])
            found = True
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


def read_cpus(pids: dict[str, tuple[int, bool]]) -> dict[str, float]:
    return {role: cpu for role, (pid, d) in pids.items() if (cpu := read_cpu_s(pid, d)) is not None}


def record_cpu(
    metrics: dict[str, float], before: dict[str, float], after: dict[str, float], forwarded_bytes: int
) -> None:
    """``cpu.ROLE.s_per_GB``: CPU seconds each process spent per GB forwarded between the reads."""
    for role, start in before.items():
        if role in after and forwarded_bytes:
            metrics[br.cpu_key(role)] = (after[role] - start) / (forwarded_bytes / 1e9)
