"""The receiver's status line, seen through a pseudo-terminal (stderr on a pty, as in a shell)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket

import pytest

from tests.support import Cluster, run
from tunnelpy.bench.harness import EchoService, cli_command, tcp_echo_roundtrip

pytestmark = pytest.mark.e2e

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class PtyReceiver:
    """A receiver whose stderr is the slave side of a pty; the master side is read into ``text``."""

    def __init__(self, ticket: str, source: str, *extra: str) -> None:
        self.args = ["receiver", "iroh", "--no-relay", "--node-id", ticket, "--source", source, *extra]
        self.raw = b""
        self.eof = asyncio.Event()
        self._changed = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    async def start(self) -> None:
        master, slave = os.openpty()
        self._master = master
        self.proc = await asyncio.create_subprocess_exec(
            *cli_command(),
            *self.args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except OSError:  # EIO: every slave end is closed (the receiver exited)
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._master)
            self.eof.set()
        self.raw += data
        self._changed.set()

    async def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        try:
            async with asyncio.timeout(timeout):
                while not (match := re.search(pattern, self.text)):
                    assert not self.eof.is_set(), f"receiver exited before {pattern!r}:\n{self.text[-2000:]}"
                    self._changed.clear()
                    await self._changed.wait()
                return match
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} on the terminal:\n{self.text[-2000:]}") from None

    async def stop(self) -> None:
        """SIGTERM, then read the terminal to its end (everything the receiver ever wrote)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await self.proc.wait()
                await self.eof.wait()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
            if not self.eof.is_set():
                asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_status_line_on_a_terminal(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            _, ticket = await cluster.sender(*any_receiver)
            receiver = PtyReceiver(ticket, f"tcp://127.0.0.1:{echo.tcp_port}", "--target", "127.0.0.1:0")
            await receiver.start()
            try:
                listening = await receiver.wait_for(r"receiver\.listening.*address=127\.0\.0\.1:(\d+)")
                await receiver.wait_for(r"connected via direct · RTT [<0-9]")
                payload = os.urandom(3 << 20)
                assert len(await tcp_echo_roundtrip(("127.0.0.1", int(listening.group(1))), payload)) == len(payload)
                await receiver.wait_for(r"↑ 3\.\d MB [0-9.]+ [KMG]?B/s · ↓ 3\.\d MB")
                assert "\x1b[2K" in receiver.raw.decode(errors="replace")  # redrawn in place
            finally:
                await receiver.stop()

    run(main())


def test_quiet_receiver_draws_nothing(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            _, ticket = await cluster.sender(*any_receiver)
            port = free_port()
            receiver = PtyReceiver(
                ticket, f"tcp://127.0.0.1:{echo.tcp_port}", "--target", f"127.0.0.1:{port}", "--quiet"
            )
            await receiver.start()
            try:
                async with asyncio.timeout(30):  # --quiet logs no receiver.listening: try until it serves
                    while True:
                        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                            if await tcp_echo_roundtrip(("127.0.0.1", port), b"ping") == b"ping":
                                break
                        await asyncio.sleep(0.2)
            finally:
                await receiver.stop()
            # It served through the tunnel on a terminal, and wrote neither the line nor info logs.
            assert "connected via" not in receiver.text and "receiver.listening" not in receiver.text

    run(main())
