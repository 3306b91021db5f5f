"""The front door under abuse, with real processes: silent and garbage connections, then a crowd.

1,000 hostile connections (half never speak, half send garbage) come from 127.0.0.2; then 200
genuine requests at once from 127.0.0.1 reach a sender at --max-sessions 100: exactly 100
sessions and 100 clean at-capacity refusals, no slot leaked, no worker left, and the
supervisor's memory back near where it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import pytest

from tests.support import Cluster, pid_alive, run
from tunnelpy.bench.harness import EchoService
from tunnelpy.bench.memory import read_memory
from tunnelpy.cli.status import fetch_status
from tunnelpy.common.config import NetOptions
from tunnelpy.common.errors import SessionRefused, TunnelError
from tunnelpy.signaling import session_wire as sw
from tunnelpy.worker.forwarding import wire
from tunnelpy.worker.receiver.iroh_mode import request_session
from tunnelpy.worker.transport import iroh_transport

pytestmark = pytest.mark.e2e

HOSTILE = 1000
CROWD = 200
MAX_SESSIONS = 100
PER_ENDPOINT = 25  # requests per receiver identity (the sender admits 30 a minute from one)


async def hostile_visit(endpoint: Any, addr: Any, garbage: bool) -> str:
    """Connect and never send a request (or send junk); returns how it ended."""
    try:
        async with asyncio.timeout(20):
            conn = await iroh_transport.connect(endpoint, addr, sw.ALPN)
            try:
                if garbage:
                    stream = await conn.open_stream()
                    await stream.write(os.urandom(64))
                    await stream.finish()
                return await conn.wait_closed()
            finally:
                conn.close(0, "bye")
    except (TunnelError, TimeoutError) as exc:
        return f"refused: {exc}"


async def genuine_request(endpoint: Any, ticket: str, source: str) -> tuple[str, Any]:
    try:
        accepted = await request_session(endpoint, ticket, source)
    except SessionRefused as exc:
        return "refused", exc
    conn = await iroh_transport.connect(endpoint, iroh_transport.peer_addr(accepted.worker_ticket), wire.ALPN)
    return "accepted", conn


def rss_mb(pid: int) -> float:
    memory = read_memory(pid, descendants=False)
    assert memory is not None
    return memory[0]


def test_hostile_connections_then_a_crowd_at_max_sessions(work):
    async def main() -> None:
        endpoints: list[Any] = []
        conns: list[Any] = []
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(
                "--allow-any-receiver",
                "--allowed-tcp",
                "127.0.0.1/32",
                "--max-sessions",
                str(MAX_SESSIONS),
                "--max-pending",
                str(CROWD),
                "--max-startups",
                "256",
            )
            assert sender.proc is not None
            front = iroh_transport.peer_addr(ticket)
            try:
                hostile_net = NetOptions(no_relay=True, bind=("127.0.0.2", 0))
                for _ in range(10):
                    endpoints.append(await iroh_transport.bind_endpoint(hostile_net, secret=None, alpns=[]))
                before = rss_mb(sender.proc.pid)
                visits = [hostile_visit(endpoints[n % 10], front, garbage=n % 2 == 1) for n in range(HOSTILE)]
                outcomes = await asyncio.gather(*visits)
                during = rss_mb(sender.proc.pid)
                assert len(outcomes) == HOSTILE
                refused_early = sum(o.startswith("refused") for o in outcomes)
                print(f"hostile: {refused_early} refused before any work, rss {before:.0f} -> {during:.0f} MB")

                genuine_net = NetOptions(no_relay=True, bind=("127.0.0.1", 0))
                crowd_endpoints = [
                    await iroh_transport.bind_endpoint(genuine_net, secret=None, alpns=[])
                    for _ in range(CROWD // PER_ENDPOINT)
                ]
                endpoints += crowd_endpoints
                source = f"tcp://127.0.0.1:{echo.tcp_port}"
                results = await asyncio.gather(
                    *(genuine_request(crowd_endpoints[n // PER_ENDPOINT], ticket, source) for n in range(CROWD))
                )
                accepted = [conn for kind, conn in results if kind == "accepted"]
                refusals = [exc for kind, exc in results if kind == "refused"]
                conns = accepted
                assert len(accepted) == MAX_SESSIONS, [str(e) for e in refusals[:3]]
                assert len(refusals) == CROWD - MAX_SESSIONS
                assert all("at capacity (100/100 sessions)" in str(e) for e in refusals), str(refusals[0])

                status = await fetch_status(work / "sender.sock")
                assert len(status.sessions) == MAX_SESSIONS
                workers = {s["pid"] for s in status.sessions}
                for conn in accepted:
                    conn.close(0, "done")
                conns = []
                async with asyncio.timeout(60):  # every slot comes back, every worker is gone
                    while (await fetch_status(work / "sender.sock")).sessions or any(map(pid_alive, workers)):
                        await asyncio.sleep(0.2)
                kind, conn = await genuine_request(crowd_endpoints[0], ticket, source)  # no slot leaked
                assert kind == "accepted"
                conns = [conn]
                # Memory comes back: the supervisor trims its heap every 10 s (malloc_trim).
                async with asyncio.timeout(40):
                    while (after := rss_mb(sender.proc.pid)) > before + 15:
                        await asyncio.sleep(1)
                print(f"supervisor RSS: before {before:.0f} MB, during hostile {during:.0f} MB, after {after:.0f} MB")
            finally:
                for conn in conns:
                    conn.close(0, "done")
                for endpoint in endpoints:
                    with contextlib.suppress(Exception):
                        await iroh_transport.close_endpoint(endpoint)

    run(main(), timeout=240)
