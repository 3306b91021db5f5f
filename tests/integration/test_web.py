"""The HTTP listener on a real loopback socket, in process, with a stand-in supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import pytest
import uvloop

from tests.http_client import http, request
from tests.support import run
from tunnelpy.supervisor import control_wire as cw
from tunnelpy.supervisor import web
from tunnelpy.supervisor.counters import Counters

TOKEN = "s3cret-token-0123456789"


class FakeSupervisor:
    def __init__(self) -> None:
        self.closed: list[str] = []
        self.drained = 0

    def status(self) -> cw.StatusReply:
        return cw.StatusReply("iroh", "f" * 64, "t", False, 5, (), Counters().totals([]))

    def close_session(self, session_id: str) -> bool:
        self.closed.append(session_id)
        return session_id == "00aa"

    def drain(self) -> None:
        self.drained += 1


@contextlib.asynccontextmanager
async def listening(token: str | None = None) -> AsyncIterator[tuple[web.WebListener, FakeSupervisor, int]]:
    fake = FakeSupervisor()
    listener = web.WebListener(("127.0.0.1", 0), token, fake)
    await listener.bind()
    assert listener._server is not None
    port = listener._server.sockets[0].getsockname()[1]
    task = asyncio.create_task(listener.serve())
    try:
        yield listener, fake, port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_metrics_and_pages() -> None:
    async def main() -> None:
        async with listening() as (listener, _, port):
            status, headers, body = await request(port, http("GET", "/metrics"))
            assert status == 200 and headers["content-type"].startswith("text/plain")
            assert b"tunnelpy_sessions_limit 5.0" in body and b"tunnelpy_process_open_fds" in body
            status, headers, body = await request(port, http("GET", "/"))
            assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
            assert f'content="{listener.csrf}"'.encode() in body
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            for path in ("/static/app.js", "/static/style.css", "/api/status"):
                assert (await request(port, http("GET", path)))[0] == 200, path

    run(main())


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (http("GET", "/nope"), 404),
        (http("PUT", "/metrics"), 405),
        (http("GET", "/api/drain"), 405),
        (http("POST", "/metrics"), 405),
        (http("GET", "/metrics", host="evil.example:80"), 403),  # DNS rebinding
        (b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (2 * web.MAX_HEAD) + b"\r\n\r\n", 431),
        (http("POST", "/api/drain", body=b"x" * (web.MAX_BODY + 1)), 413),
        (b"NONSENSE\r\n\r\n", 400),
        (
            b"POST /api/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % (web.MAX_BODY + 1)
            + b"x" * (web.MAX_BODY + 1)
            + b"\r\n0\r\n\r\n",
            413,
        ),
    ],
    ids=["unknown", "put", "get-a-post", "post-a-get", "host", "big-head", "big-body", "garbage", "big-chunked"],
)
def test_refusals(raw: bytes, status: int) -> None:
    async def main() -> None:
        async with listening() as (_, _, port):
            assert (await request(port, raw))[0] == status

    run(main())


def test_posts_need_the_csrf_token() -> None:
    async def main() -> None:
        async with listening() as (listener, fake, port):
            assert (await request(port, http("POST", "/api/sessions/00aa/close")))[0] == 403
            assert (await request(port, http("POST", "/api/drain", "X-CSRF-Token: wrong")))[0] == 403
            assert fake.closed == [] and fake.drained == 0
            csrf = f"X-CSRF-Token: {listener.csrf}"
            assert (await request(port, http("POST", "/api/sessions/00aa/close", csrf)))[0] == 202
            assert (await request(port, http("POST", "/api/sessions/00bb/close", csrf)))[0] == 404
            assert (await request(port, http("POST", "/api/drain", csrf)))[0] == 202
            assert fake.closed == ["00aa", "00bb"] and fake.drained == 1

    run(main())


def test_bearer_token_on_every_request() -> None:
    async def main() -> None:
        async with listening(TOKEN) as (listener, _, port):
            for path in ("/metrics", "/", "/events", "/static/app.js"):
                status, headers, _ = await request(port, http("GET", path))
                assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
            assert (await request(port, http("GET", "/metrics", f"Authorization: Bearer {TOKEN}x")))[0] == 401
            assert (await request(port, http("GET", "/metrics", f"Authorization: bearer {TOKEN}")))[0] == 401
            ok = f"Authorization: Bearer {TOKEN}"
            assert (await request(port, http("GET", "/metrics", ok, host="192.0.2.1")))[0] == 200
            post = http("POST", "/api/drain", ok, f"X-CSRF-Token: {listener.csrf}")
            assert (await request(port, post))[0] == 202

    run(main())


def test_events_stream_snapshots_and_shutdown_ends_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "SSE_INTERVAL", 0.05)

    async def main() -> None:
        listener_cm = listening()
        _, _, port = await listener_cm.__aenter__()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(http("GET", "/events"))
        seen = b""
        while seen.count(b"event: status") < 2:
            chunk = await reader.read(65536)
            assert chunk, seen
            seen += chunk
        assert b"content-type: text/event-stream" in seen.lower()
        assert re.search(rb'data: \{"mode":"iroh".*"sampled_at"', seen)
        # Stopping the listener (the arbiter's TaskGroup cancelling it) ends the open stream too.
        await listener_cm.__aexit__(None, None, None)
        while await reader.read(65536):
            pass
        writer.close()

    async def bounded() -> None:
        async with asyncio.timeout(30):
            await main()

    uvloop.run(bounded())  # the supervisor's loop


def test_a_silent_client_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "HEAD_TIMEOUT", 0.2)

    async def main() -> None:
        async with listening() as (_, _, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
            assert (await reader.read()).startswith(b"HTTP/1.1 408")
            writer.close()

    run(main(), timeout=30)


def test_connections_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(web, "HEAD_TIMEOUT", 30.0)

    async def main() -> None:
        async with listening() as (listener, _, port):
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            while listener._connections < 2:  # both accepted and waiting for their request
                await asyncio.sleep(0.01)
            assert (await request(port, http("GET", "/metrics")))[0] == 503
            for _, writer in idle:
                writer.close()

    run(main(), timeout=30)
