"""What a Prometheus scrape costs the supervisor: N idle sessions, CPU with and without scrapes.

One sender with ``--metrics-listen``; N sessions opened from this process (as in
:mod:`tunnelpy.bench.idle`) and held idle. The supervisor's CPU time (utime + stime from
/proc/PID/stat) is read over a window with no scrape, then over a window with one ``GET
/metrics`` a second; the difference, per scrape, is the cost. The idle window is not zero:
N workers send a heartbeat a second each. Run with ``scripts/measure-scrape-cpu [N] [SECONDS]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tunnelpy.bench.harness import Peer, start_sender
from tunnelpy.cli.status import fetch_status
from tunnelpy.common.config import NetOptions
from tunnelpy.worker.forwarding import wire
from tunnelpy.worker.receiver.iroh_mode import request_session
from tunnelpy.worker.transport import iroh_transport

SESSIONS_PER_ENDPOINT = 25  # the sender admits at most 30 sessions a minute per receiver id
OFFLINE = NetOptions(no_relay=True, bind=("127.0.0.1", 0))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


async def scrape(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = await reader.read()
    writer.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    return len(data)


async def _window(pid: int, seconds: float, port: int | None) -> dict[str, Any]:
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    latencies, size = [], 0
    while (now := time.monotonic()) - start < seconds:
        if port is not None:
            size = await scrape(port)
            latencies.append(time.monotonic() - now)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
    elapsed = time.monotonic() - start
    return {
        "cpu_s": cpu_seconds(pid) - start_cpu,
        "elapsed_s": elapsed,
        "scrapes": len(latencies),
        "latency_ms_median": statistics.median(latencies) * 1000 if latencies else None,
        "bytes": size,
    }


async def measure(work: Path, count: int, seconds: float) -> dict[str, Any]:
    peers: list[Peer] = []
    endpoints: list[Any] = []
    conns: list[Any] = []
    try:
        extra = ["--allow-any-receiver", "--allowed-tcp", "127.0.0.1/32", "--max-sessions", str(count)]
        sender, ticket = await start_sender(
            work, peers, name="scrape", extra=[*extra, "--metrics-listen", "127.0.0.1:0"]
        )
        port = int((await sender.wait_event("metrics.listening"))["address"].rsplit(":", 1)[1])
        for _ in range(0, count, SESSIONS_PER_ENDPOINT):
            endpoints.append(await iroh_transport.bind_endpoint(OFFLINE, secret=None, alpns=[]))
        gate = asyncio.Semaphore(8)

        async def open_one(endpoint: Any) -> Any:
            async with gate:
                accepted = await request_session(endpoint, ticket, "tcp://127.0.0.1:9")
                return await iroh_transport.connect(
                    endpoint, iroh_transport.peer_addr(accepted.worker_ticket), wire.ALPN
                )

        conns = list(await asyncio.gather(*(open_one(endpoints[i // SESSIONS_PER_ENDPOINT]) for i in range(count))))
        async with asyncio.timeout(60):
            while sum(s["state"] == "connected" for s in (await fetch_status(work / "scrape.sock")).sessions) < count:
                await asyncio.sleep(0.5)
        assert sender.proc is not None
        pid = sender.proc.pid
        await scrape(port)  # the first scrape imports and warms what later ones reuse
        idle = await _window(pid, seconds, None)
        scraped = await _window(pid, seconds, port)
        base = idle["cpu_s"] / idle["elapsed_s"]
        with_scrapes = scraped["cpu_s"] / scraped["elapsed_s"]
        return {
            "sessions": count,
            "window_s": seconds,
            "supervisor_cpu_idle_pct": round(base * 100, 2),
            "supervisor_cpu_scraped_pct": round(with_scrapes * 100, 2),
            "cpu_ms_per_scrape": round((scraped["cpu_s"] - base * scraped["elapsed_s"]) / scraped["scrapes"] * 1000, 2),
            "scrape_latency_ms_median": round(scraped["latency_ms_median"], 2),
            "scrape_bytes": scraped["bytes"],
            "clock_tick_s": 1 / TICKS,
        }
    finally:
        for conn in conns:
            conn.close(0, "bench done")
        for endpoint in endpoints:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await endpoint.close()
        for peer in peers:
            await peer.stop()


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 100
    seconds = float(argv[1]) if len(argv) > 1 else 30.0
    with tempfile.TemporaryDirectory(prefix="tunnel-py-scrape-") as work:
        result = asyncio.run(measure(Path(work), count, seconds))
    for key, val in result.items():
        print(f"{key}: {val}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
