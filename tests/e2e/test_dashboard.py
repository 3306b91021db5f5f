"""The dashboard in a real browser: headless Debian chromium driven by Playwright.

A real sender (with --metrics-listen), receiver and echo service; traffic flows through the
tunnel while the page is open. The test sees the session appear with a moving byte count over
server-sent events, takes a screenshot (``$TUNNELPY_DASHBOARD_SCREENSHOT``, else the test's
temp folder; README's docs/dashboard.png comes from such a run), clicks Close and sees the row
go. Playwright's own browser download is not used: chromium comes from Debian
(scripts/setup-test-env installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.e2e.test_metrics import metrics_port
from tests.support import Cluster, run
from tunnelpy.bench.harness import EchoService
from tunnelpy.common.errors import ExitCode

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
# --no-sandbox: the tests run as root in a network namespace, where chromium's sandbox cannot start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
WAIT_MS = 30_000


async def pump(address: tuple[str, int]) -> None:
    """Keep bytes flowing through the tunnel (an echo client) until cancelled or the tunnel goes."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        reader, writer = await asyncio.open_connection(*address)
        chunk = os.urandom(32 * 1024)
        while True:
            writer.write(chunk)
            await writer.drain()
            await reader.readexactly(len(chunk))
            await asyncio.sleep(0.05)


def test_live_session_table_and_close(work, any_receiver):
    assert Path(CHROMIUM).exists(), "install Debian chromium (scripts/setup-test-env does)"
    screenshot = Path(os.environ.get("TUNNELPY_DASHBOARD_SCREENSHOT") or work / "dashboard.png")

    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster, async_playwright() as pw:
            sender, ticket = await cluster.sender(*any_receiver, "--metrics-listen", "127.0.0.1:0")
            port = await metrics_port(sender)
            # --no-reconnect: a session the operator closes must stay closed for this test to see it go
            receiver, addr = await cluster.receiver(ticket, f"tcp://127.0.0.1:{echo.tcp_port}", "--no-reconnect")
            assert addr is not None
            session_id = (await sender.wait_event("session.opened"))["session_id"]
            traffic = asyncio.create_task(pump(addr))
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                # bypass_csp: Playwright's waits evaluate strings, which the page's CSP rightly forbids.
                context = await browser.new_context(viewport={"width": 1180, "height": 640}, bypass_csp=True)
                page = await context.new_page()
                await page.goto(f"http://127.0.0.1:{port}/")
                row = page.locator(f'tr[data-session-id="{session_id}"]')
                await row.wait_for(timeout=WAIT_MS)
                await page.wait_for_function(
                    "document.getElementById('feed').dataset.state === 'live'", timeout=WAIT_MS
                )
                bytes_up = row.locator(".up .bytes")
                first = await bytes_up.inner_text()
                # The count moves while the page stays loaded: pushed by SSE, no reload.
                await page.wait_for_function(
                    "([sel, before]) => { const el = document.querySelector(sel);"
                    " return el !== null && el.textContent !== before; }",
                    arg=[f'tr[data-session-id="{session_id}"] .up .bytes', first],
                    timeout=WAIT_MS,
                )
                await page.wait_for_function(  # a few rate samples, so the sparkline shows a line
                    "[...document.querySelectorAll('svg.spark polyline')]"
                    ".some((line) => line.getAttribute('points').split(' ').length >= 6)",
                    timeout=WAIT_MS,
                )
                assert await row.locator(".path").inner_text() == "direct"
                assert await page.locator("#active").inner_text() == "1 / 100"
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(screenshot), full_page=True)
                await page.set_viewport_size({"width": 390, "height": 844})  # a phone: rows become cards
                assert await page.locator("#sessions thead").is_hidden()
                await page.screenshot(path=str(screenshot.with_name(screenshot.stem + "-phone.png")), full_page=True)

                await row.locator("button.close").click()
                await row.wait_for(state="detached", timeout=WAIT_MS)
                await page.wait_for_function("!document.getElementById('empty').hidden", timeout=WAIT_MS)
            finally:
                traffic.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await traffic
                await browser.close()
            assert await receiver.wait(timeout=30) == ExitCode.CONNECTION_LOST
            assert sender.find("session.closing", session_id=session_id, why="operator")

    run(main(), timeout=110)
