"""Run tunnel-py peers as real child processes on loopback: used by ``demo``, ``bench`` and the e2e tests.

:class:`Peer` wraps one ``tunnel-py`` process: its stderr (JSON log lines) is read
continuously into memory and a file, so callers can wait for an event such as
``receiver.listening`` with a deadline. :class:`EchoService` is a TCP+UDP echo server on
127.0.0.1. Everything here sends traffic only to loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import orjson


def cli_command() -> list[str]:
    """The installed ``tunnel-py`` entry point, or the module when run from a source tree."""
    script = Path(sys.executable).with_name("tunnel-py")
    if script.exists():
        return [str(script)]
    found = shutil.which("tunnel-py")
    return [found] if found else [sys.executable, "-m", "tunnelpy.cli.main"]


class Peer:
    """One tunnel-py child process and its parsed log events."""

    def __init__(self, name: str, args: list[str], log_dir: Path, command: list[str] | None = None) -> None:
        self.name, self.args = name, args
        self.command = command or cli_command()
        self.log_path = log_dir / f"{name}.log"
        self.events: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, stdin: int | None = asyncio.subprocess.DEVNULL) -> Peer:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = await asyncio.create_subprocess_exec(
            *self.command,
            *self.args,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read_stderr())
        return self

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with self.log_path.open("ab") as log:
            while line := await self.proc.stderr.readline():
                log.write(line)
                log.flush()
                with contextlib.suppress(orjson.JSONDecodeError):
                    event = orjson.loads(line)
                    if isinstance(event, dict):
                        self.events.append(event)
                async with self._changed:
                    self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    def find(self, event: str, **fields: Any) -> dict[str, Any] | None:
        for item in self.events:
            if item.get("event") == event and all(item.get(k) == v for k, v in fields.items()):
                return item
        return None

    async def wait_event(self, event: str, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        """Wait for a log event; fails early, with the log tail, if the process exits first."""

        async def found() -> dict[str, Any]:
            async with self._changed:
                while True:
                    hit = self.find(event, **fields)
                    if hit is not None:
                        return hit
                    if self._reader is not None and self._reader.done():
                        code = await self.proc.wait() if self.proc else "?"
                        raise RuntimeError(f"{self.name} exited ({code}) before {event}:\n{self.tail()}")
                    await self._changed.wait()

        try:
            async with asyncio.timeout(timeout):
                return await found()
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no {event} within {timeout} s:\n{self.tail()}") from None

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            if self._reader is not None:
                await self._reader
        return code

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the process, wait, and SIGKILL its whole session if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                return await self.wait(timeout)
            except TimeoutError:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        code = await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        return code


async def start_sender(
    work: Path,
    peers: list[Peer],
    *,
    mode: str = "iroh",
    extra: list[str] | None = None,
    name: str = "sender",
    bind: str = "127.0.0.1:0",
    prefix: list[str] | None = None,
) -> tuple[Peer, str]:
    """Start an offline iroh sender on ``bind``; returns the peer and its endpoint ticket.

    ``prefix`` runs it through another command (``ip netns exec NS``: the NAT lab's hosts).
    The peer joins ``peers`` before anything is awaited, so the caller's cleanup stops it even
    if it never comes online (the same holds for every ``start_*`` here).
    """
    ticket = work / f"{name}.ticket"
    args = [
        "sender",
        mode,
        "--no-relay",
        "--bind",
        bind,
        "--ticket-file",
        str(ticket),
        "--control",
        str(work / f"{name}.sock"),
        "--log-format",
        "json",
        *(extra or []),
    ]
    peer = Peer(name, args, work, command=[*prefix, *cli_command()] if prefix else None)
    peers.append(peer)
    await peer.start()
    await peer.wait_event("supervisor.online")
    return peer, ticket.read_text().strip()


async def start_receiver(
    work: Path,
    peers: list[Peer],
    ticket: str,
    source: str,
    *,
    name: str = "receiver",
    extra: list[str] | None = None,
    wait: bool = True,
) -> tuple[Peer, tuple[str, int] | None]:
    """Start an iroh receiver listening on an ephemeral loopback port; returns it and its address."""
    return await start_mode_receiver(
        work, peers, ["iroh", "--no-relay", "--node-id", ticket], source, name=name, extra=extra, wait=wait
    )


async def start_mode_receiver(
    work: Path,
    peers: list[Peer],
    mode_args: list[str],
    source: str,
    *,
    name: str = "receiver",
    extra: list[str] | None = None,
    wait: bool = True,
    timeout: float = 20.0,
) -> tuple[Peer, tuple[str, int] | None]:
    """A receiver (``mode_args``: the mode and how it finds its sender) for ``source``, listening
    on an ephemeral loopback port; returns it and, with ``wait``, where it listens."""
    args = [
        "receiver",
        *mode_args,
        "--source",
        source,
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        *(extra or []),
    ]
    peer = Peer(name, args, work)
    peers.append(peer)
    await peer.start()
    return peer, (await listening_address(peer, timeout=timeout) if wait else None)


async def listening_address(receiver: Peer, timeout: float = 20.0) -> tuple[str, int]:
    """The local address a receiver listens on, from its ``receiver.listening`` event."""
    event = await receiver.wait_event("receiver.listening", timeout=timeout)
    host, port = event["address"].rsplit(":", 1)
    return host, int(port)


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class EchoService:
    """TCP and UDP echo on 127.0.0.1 (ephemeral ports), as an async context manager."""

    async def __aenter__(self) -> EchoService:
        self._tcp = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        self.tcp_port = self._tcp.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
        self.udp_port = self._udp.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._tcp.close()
        self._udp.close()

    @staticmethod
    async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(256 * 1024):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        writer.close()


async def tcp_echo_roundtrip(address: tuple[str, int], payload: bytes, chunk: int = 256 * 1024) -> bytes:
    """Send ``payload`` and half-close, reading the echo concurrently; returns what came back."""
    reader, writer = await asyncio.open_connection(*address, limit=1 << 20)

    async def send() -> None:
        view = memoryview(payload)
        for start in range(0, len(view), chunk):
            writer.write(view[start : start + chunk])
            await writer.drain()
        writer.write_eof()

    async def receive() -> bytes:
        parts = []
        while data := await reader.read(1 << 20):
            parts.append(data)
        return b"".join(parts)

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(send())
            received = tg.create_task(receive())
        return received.result()
    finally:
        writer.close()


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)


async def udp_echo_roundtrip(address: tuple[str, int], payloads: list[bytes], timeout: float = 2.0) -> int:
    """Send each payload until its exact echo comes back (3 tries); returns how many were resent.

    Late duplicates of earlier echoes are skipped, so a resend never misaligns the check.
    """
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_UdpClient, remote_addr=address)
    resent = 0
    try:
        for payload in payloads:
            for attempt in range(3):
                transport.sendto(payload)
                resent += attempt > 0
                if await _await_echo(client.queue, payload, timeout):
                    break
            else:
                raise TimeoutError(f"no UDP echo from {address} for a {len(payload)}-byte datagram")
    finally:
        transport.close()
    return resent


async def _await_echo(queue: asyncio.Queue[bytes], payload: bytes, timeout: float) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while await queue.get() != payload:
                pass
            return True
    return False
