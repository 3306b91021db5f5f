"""Metrics end to end: a real sender with --metrics-listen, a receiver and an echo service.

Scrapes /metrics while a session lives and after it ended, closes the session the way the
dashboard does (POST with the page's CSRF token), checks the Grafana dashboard's queries
against the live names, and the bearer token rule off loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.http_client import http, request, samples
from tests.support import Cluster, run
from tunnelpy.bench.harness import EchoService, Peer, tcp_echo_roundtrip
from tunnelpy.cli.status import fetch_status
from tunnelpy.common.errors import ExitCode

pytestmark = pytest.mark.e2e

GRAFANA = Path(__file__).parents[2] / "deploy" / "grafana" / "tunnel-py.json"
TOKEN = "e2e-token-" + "7" * 32


async def metrics_port(sender: Peer) -> int:
    event = await sender.wait_event("metrics.listening")
    return int(event["address"].rsplit(":", 1)[1])


async def scrape(port: int, *headers: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, _, body = await request(port, http("GET", "/metrics", *headers))
    assert status == 200, body
    return samples(body.decode())


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while not (result := await check()):
                await asyncio.sleep(0.2)
            return result
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


def value(found: dict, name: str, **labels: str) -> float | None:  # type: ignore[type-arg]
    for sample_labels, sample_value in found.get(name, []):
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return sample_value
    return None


def grafana_names() -> set[str]:
    text = json.dumps(json.loads(GRAFANA.read_text()))
    return set(re.findall(r"\btunnelpy_[a-z0-9_]+", text))


def test_scrape_follows_a_session_and_forgets_it(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*any_receiver, "--metrics-listen", "127.0.0.1:0")
            port = await metrics_port(sender)
            # --no-reconnect: a session the operator closes must stay closed for this test to see it go
            receiver, addr = await cluster.receiver(ticket, f"tcp://127.0.0.1:{echo.tcp_port}", "--no-reconnect")
            session_id = (await sender.wait_event("session.opened"))["session_id"]

            async def connected() -> Any:
                found = await scrape(port)
                on = value(found, "tunnelpy_session_info", session_id=session_id, state="connected")
                rtt = value(found, "tunnelpy_session_rtt_seconds", session_id=session_id)
                return found if on and rtt is not None else None

            before = await until(connected, "the session is connected and its RTT measured")
            assert value(before, "tunnelpy_sessions_active") == 1
            assert value(before, "tunnelpy_sessions_admitted_total") == 1
            info = next(labels for labels, _ in before["tunnelpy_session_info"])
            assert info["path"] == "direct" and info["source"] == f"tcp://127.0.0.1:{echo.tcp_port}"
            assert value(before, "tunnelpy_session_setup_seconds_count") == 1
            assert value(before, "tunnelpy_worker_proportional_memory_bytes", session_id=session_id) > 0
            assert value(before, "tunnelpy_process_resident_memory_bytes") > 0
            assert value(before, "tunnelpy_process_open_fds") > 0

            payload = os.urandom(1 << 20)
            assert len(await tcp_echo_roundtrip(addr, payload)) == len(payload)

            async def moved() -> Any:
                found = await scrape(port)
                up = value(found, "tunnelpy_session_bytes_total", session_id=session_id, direction="up") or 0
                return found if up >= len(payload) else None

            during = await until(moved, "the session's byte counter shows the 1 MB")
            assert value(during, "tunnelpy_bytes_total", direction="down") >= len(payload)
            assert value(during, "tunnelpy_streams_opened_total") >= 1
            assert value(during, "tunnelpy_session_uptime_seconds", session_id=session_id) > 0

            # One source: tunnel-py status reads the same snapshot.
            status = await fetch_status(work / "sender.sock")
            assert status.totals["sessions_admitted"] == 1 and status.sessions[0]["session_id"] == session_id
            assert status.totals["bytes_up"] >= len(payload)

            # Close it as the dashboard does: the page's CSRF token, then POST.
            _, _, page = await request(port, http("GET", "/"))
            csrf = re.search(rb'name="csrf-token" content="([^"]+)"', page).group(1).decode()  # type: ignore[union-attr]
            closing = http("POST", f"/api/sessions/{session_id}/close", f"X-CSRF-Token: {csrf}")
            assert (await request(port, closing))[0] == 202
            assert await receiver.wait(timeout=30) == ExitCode.CONNECTION_LOST

            async def gone() -> Any:
                found = await scrape(port)
                return found if value(found, "tunnelpy_sessions_active") == 0 else None

            after = await until(gone, "the session is gone from /metrics")
            assert not [name for name in after if name.startswith("tunnelpy_session_") and "setup" not in name]
            assert not [name for name in after if name.startswith("tunnelpy_worker_") and "exits" not in name]
            assert value(after, "tunnelpy_worker_exits_total", reason="ok", signal="") == 1
            assert value(after, "tunnelpy_bytes_total", direction="up") >= len(payload)  # totals keep ended sessions

            missing = grafana_names() - set(during) - set(after)
            assert not missing, f"deploy/grafana/tunnel-py.json queries metrics that do not exist: {sorted(missing)}"
            assert "\x1b[2K" not in receiver.log_path.read_text()  # not a TTY: no status line

            # Drain from the dashboard: with no session left the sender stops by itself.
            assert (await request(port, http("POST", "/api/drain", f"X-CSRF-Token: {csrf}")))[0] == 202
            assert await sender.wait(timeout=30) == ExitCode.OK
            assert sender.find("supervisor.draining", signal="operator")

    run(main())


def test_a_non_loopback_listener_needs_a_private_token(work, any_receiver):
    async def main() -> None:
        async with Cluster(work) as cluster:
            refused = Peer("open", ["sender", "iroh", *any_receiver, "--metrics-listen", "0.0.0.0:0"], work)
            cluster.peers.append(refused)
            await refused.start()
            assert await refused.wait() == ExitCode.CONFIG
            assert "--metrics-token-file PATH is required" in refused.tail()

            token = work / "metrics.token"
            token.write_text(TOKEN + "\n")
            token.chmod(0o644)
            readable = Peer("readable", ["sender", "iroh", *any_receiver, "--metrics-listen", "0.0.0.0:0",
                                         "--metrics-token-file", str(token)], work)  # fmt: skip
            cluster.peers.append(readable)
            await readable.start()
            assert await readable.wait() == ExitCode.CONFIG
            assert "chmod 600" in readable.tail()

            token.chmod(0o600)
            sender, _ = await cluster.sender(
                *any_receiver, "--metrics-listen", "0.0.0.0:0", "--metrics-token-file", str(token)
            )
            port = await metrics_port(sender)
            for path in ("/metrics", "/", "/events", "/api/status"):
                assert (await request(port, http("GET", path)))[0] == 401, path
            assert (await request(port, http("GET", "/metrics", "Authorization: Bearer wrong")))[0] == 401
            found = await scrape(port, f"Authorization: Bearer {TOKEN}")
            assert value(found, "tunnelpy_sessions_limit") == 100

    run(main())
