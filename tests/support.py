"""Test plumbing: run a coroutine under a deadline, loopback peers that are always cleaned up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from tunnelpy.supervisor.local_run import Peer, start_receiver, start_sender


def run(coro, timeout: float = 90.0):  # type: ignore[no-untyped-def]
    """Run one test coroutine under a deadline (no test may hang)."""

    async def bounded():  # type: ignore[no-untyped-def]
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


class Cluster:
    """Starts senders/receivers as real processes and stops every one of them at exit."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.peers: list[Peer] = []

    async def sender(self, *extra: str, name: str = "sender", mode: str = "iroh") -> tuple[Peer, str]:
        peer, ticket = await start_sender(self.work, mode=mode, extra=list(extra), name=name)
        self.peers.append(peer)
        return peer, ticket

    async def receiver(
        self, ticket: str, source: str, *extra: str, name: str = "receiver", wait: bool = True
    ) -> tuple[Peer, tuple[str, int] | None]:
        peer, addr = await start_receiver(self.work, ticket, source, name=name, extra=list(extra), wait=wait)
        self.peers.append(peer)
        return peer, addr

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for peer in reversed(self.peers):
            await peer.stop(timeout=10)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


async def _relay_block(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, edit: Callable[[list[bytes]], list[bytes]] | None
) -> list[bytes]:
    """Copy one printed block to the other side, as a person pasting it would; returns its lines.

    ``edit`` may change the block's lines; an edited block ends the other side's input (EOF),
    so a truncated paste is seen as such rather than waited on.
    """
    lines = []
    while line := await source.readline():
        lines.append(line)
        if line.startswith(b"-----END"):
            break
    with contextlib.suppress(ConnectionError):
        sink.writelines(edit(lines) if edit else lines)
        await sink.drain()
        if edit:
            sink.close()
    return lines


class ManualPair:
    """A receiver and a sender of a copy-paste mode, their stdout piped into each other's stdin.

    ``edit_answer`` may change the lines of the sender's answer on their way to the receiver.
    """

    def __init__(
        self,
        cluster: Cluster,
        mode: str,
        source: str,
        sender_args: list[str],
        receiver_args: list[str],
        edit_answer: Callable[[list[bytes]], list[bytes]] | None = None,
    ) -> None:
        self.cluster, self.mode, self.source = cluster, mode, source
        self.sender_args, self.receiver_args, self.edit_answer = sender_args, receiver_args, edit_answer
        self.pumps: list[asyncio.Task[list[bytes]]] = []

    async def start(self) -> tuple[Peer, Peer]:
        work = self.cluster.work
        receiver = Peer(
            "receiver",
            [
                "receiver",
                self.mode,
                "--source",
                self.source,
                "--target",
                "127.0.0.1:0",
                "--log-format",
                "json",
                *self.receiver_args,
            ],
            work,
        )
        sender = Peer(
            "sender",
            ["sender", self.mode, "--control", str(work / "sender.sock"), "--log-format", "json", *self.sender_args],
            work,
        )
        for peer in (receiver, sender):
            await peer.start(stdin=asyncio.subprocess.PIPE)
            self.cluster.peers.append(peer)
        assert receiver.proc and sender.proc and receiver.proc.stdout and sender.proc.stdout
        assert receiver.proc.stdin and sender.proc.stdin
        self.pumps = [
            asyncio.create_task(_relay_block(receiver.proc.stdout, sender.proc.stdin, None)),
            asyncio.create_task(_relay_block(sender.proc.stdout, receiver.proc.stdin, self.edit_answer)),
        ]
        return receiver, sender

    async def offer(self) -> bytes:
        """The OFFER block as the receiver printed it."""
        return b"".join(await self.pumps[0])

    async def listening(self, receiver: Peer, timeout: float = 40.0) -> tuple[str, int]:
        event = await receiver.wait_event("receiver.listening", timeout=timeout)
        host, port = event["address"].rsplit(":", 1)
        return host, int(port)
