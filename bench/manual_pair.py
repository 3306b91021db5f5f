"""A copy-paste mode's two peers with their OFFER/ANSWER blocks piped across, as a person
pasting them would (bench, tests and the demo)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from tunnelpy.bench.harness import Peer, cli_command


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


#: Flags that keep a copy-paste mode on 127.0.0.1 with STUN off (tests, bench, demo).
MANUAL_LOOPBACK = {
    "custom-manual": ["--no-stun", "--ice-host", "127.0.0.1"],
    "iroh-manual": ["--no-stun", "--bind", "127.0.0.1:0"],
}


class ManualPair:
    """A receiver and a sender of a copy-paste mode, their stdout piped into each other's stdin.

    ``edit_answer`` may change the lines of the sender's answer on their way to the receiver;
    ``sender_prefix`` runs the sender through another command (``ip netns exec NS``).
    """

    def __init__(
        self,
        work: Path,
        peers: list[Peer],
        mode: str,
        source: str,
        sender_args: list[str],
        receiver_args: list[str],
        edit_answer: Callable[[list[bytes]], list[bytes]] | None = None,
        sender_prefix: list[str] | None = None,
    ) -> None:
        self.work, self.peers, self.mode, self.source = work, peers, mode, source
        self.sender_args, self.receiver_args, self.edit_answer = sender_args, receiver_args, edit_answer
        self.sender_command = [*sender_prefix, *cli_command()] if sender_prefix else None
        self.pumps: list[asyncio.Task[list[bytes]]] = []

    async def start(self, relay: bool = True) -> tuple[Peer, Peer]:
        """Start both peers; ``relay=False`` leaves their stdin open and empty (nobody pastes)."""
        work = self.work
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
            command=self.sender_command,
        )
        for peer in (receiver, sender):
            self.peers.append(peer)
            await peer.start(stdin=asyncio.subprocess.PIPE)
        assert receiver.proc and sender.proc and receiver.proc.stdout and sender.proc.stdout
        assert receiver.proc.stdin and sender.proc.stdin
        if not relay:
            return receiver, sender
        self.pumps = [
            asyncio.create_task(_relay_block(receiver.proc.stdout, sender.proc.stdin, None)),
            asyncio.create_task(_relay_block(sender.proc.stdout, receiver.proc.stdin, self.edit_answer)),
        ]
        return receiver, sender

    async def offer(self) -> bytes:
        """The OFFER block as the receiver printed it."""
        return b"".join(await self.pumps[0])
