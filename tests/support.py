"""Test plumbing: run a coroutine under a deadline, loopback peers that are always cleaned up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tunnelpy.bench.harness import Peer, start_receiver, start_sender
from tunnelpy.bench.manual_pair import ManualPair


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
        return await start_sender(self.work, self.peers, mode=mode, extra=list(extra), name=name)

    async def receiver(
        self, ticket: str, source: str, *extra: str, name: str = "receiver", wait: bool = True
    ) -> tuple[Peer, tuple[str, int] | None]:
        return await start_receiver(self.work, self.peers, ticket, source, name=name, extra=list(extra), wait=wait)

    def manual_pair(
        self,
        mode: str,
        source: str,
        sender_args: list[str],
        receiver_args: list[str],
        edit_answer: Callable[[list[bytes]], list[bytes]] | None = None,
    ) -> ManualPair:
        return ManualPair(self.work, self.peers, mode, source, sender_args, receiver_args, edit_answer)

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
