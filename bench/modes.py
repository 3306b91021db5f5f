"""The tunnel modes ``tunnel-py bench`` can run, and what one session of each takes.

A mode gives the bench a fresh :class:`ModeSessions` per turn. Its ``open_session`` returns the
session's receiver, the local address that receiver listens on, and the sender serving it. How
many sessions a sender serves differs by mode: an iroh sender (a supervisor that spawns one
worker per session) serves every session of the turn, while a copy-paste sender serves exactly
one session and then exits, so each of its sessions is a :class:`ManualPair` of its own. Every
flag here keeps the peers on 127.0.0.1 with relays and STUN off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple, Protocol

from tunnelpy.bench.harness import Peer, listening_address, start_receiver, start_sender
from tunnelpy.bench.manual_pair import MANUAL_LOOPBACK, ManualPair
from tunnelpy.bench.net import SETUP_DEADLINE
from tunnelpy.common.modes import Mode

SENDER_ALLOWS = ["--allowed-tcp", "127.0.0.1/32"]  # the bench server, and nothing else
# Both sides of a copy-paste mode: gather only 127.0.0.1 candidates / bind 127.0.0.1, no STUN.


class OpenedSession(NamedTuple):
    receiver: Peer
    address: tuple[str, int]  # where the receiver listens
    sender: Peer  # its log carries the session's worker.ready (with the worker's pid)


class ModeSessions(Protocol):
    """One turn of one mode. Every Peer it starts joins ``peers`` before it is waited on, so the
    bench stops it even when the wait fails."""

    sender_ends_with_session: bool  # True: the sender exits by itself once its receiver is gone

    async def start(self, work: Path, peers: list[Peer]) -> None:
        """Start what the turn's sessions share (nothing for the copy-paste modes)."""

    async def open_session(self, work: Path, peers: list[Peer], source: str, index: int) -> OpenedSession:
        """Start session ``index`` (1, 2, ...) to ``source`` (``tcp://host:port``) and return once it listens."""
        ...


class IrohSessions:
    """iroh: one sender per turn, started before the first session; one receiver (and worker) per session."""

    sender_ends_with_session = False

    async def start(self, work: Path, peers: list[Peer]) -> None:
        self.sender, self.ticket = await start_sender(work, peers, extra=["--allow-any-receiver", *SENDER_ALLOWS])

    async def open_session(self, work: Path, peers: list[Peer], source: str, index: int) -> OpenedSession:
        receiver, address = await start_receiver(work, peers, self.ticket, source, name=f"receiver{index}")
        assert address is not None
        return OpenedSession(receiver, address, self.sender)


class ManualSessions:
    """A copy-paste mode: each session is a receiver and a sender with their OFFER/ANSWER piped across."""

    sender_ends_with_session = True

    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def start(self, work: Path, peers: list[Peer]) -> None:
        return None

    async def open_session(self, work: Path, peers: list[Peer], source: str, index: int) -> OpenedSession:
        # A pair's logs and control socket have fixed names, so each pair gets a directory; a short
        # one, as a unix socket path has at most 107 bytes.
        pair_dir = work / f"p{index}"
        pair_dir.mkdir()
        loopback = MANUAL_LOOPBACK[self.mode]
        pair = ManualPair(pair_dir, peers, self.mode, source, [*SENDER_ALLOWS, *loopback], loopback)
        receiver, sender = await pair.start()
        receiver.name, sender.name = f"receiver{index}", f"sender{index}"  # tell the pairs apart in notes
        return OpenedSession(receiver, await _listening(receiver, sender), sender)


async def _listening(receiver: Peer, sender: Peer) -> tuple[str, int]:
    """Where ``receiver`` listens. Fails at once, with the sender's log, if the sender exits first:
    the receiver would otherwise wait out the deadline for an ANSWER that never comes."""
    assert sender.proc is not None
    listening = asyncio.create_task(listening_address(receiver, timeout=SETUP_DEADLINE))
    sender_ended = asyncio.create_task(sender.proc.wait())
    try:
        done, _ = await asyncio.wait([listening, sender_ended], return_when=asyncio.FIRST_COMPLETED)
    finally:  # both tasks end here, whatever happened
        for task in (listening, sender_ended):
            task.cancel()
        await asyncio.gather(listening, sender_ended, return_exceptions=True)
    if listening in done:
        return listening.result()
    raise RuntimeError(
        f"{sender.name} exited ({sender_ended.result()}) before {receiver.name} listened:\n{sender.tail()}"
    )


def _nostr_sessions() -> ModeSessions:
    from tunnelpy.bench.nostr_peers import NostrSessions

    return NostrSessions()


# A fresh ModeSessions per turn; a mode missing here is shown as not implemented.
SESSIONS: dict[Mode, Callable[[], ModeSessions]] = {
    Mode.IROH: IrohSessions,
    Mode.IROH_MANUAL: partial(ManualSessions, Mode.IROH_MANUAL),
    Mode.CUSTOM_MANUAL: partial(ManualSessions, Mode.CUSTOM_MANUAL),
    Mode.NOSTR: _nostr_sessions,
}


def unavailable(mode: Mode) -> str | None:
    """Why a mode cannot run on this machine (shown as its row's status), or None."""
    if mode is Mode.NOSTR:
        from tunnelpy.bench.nostr_peers import unavailable as nostr_unavailable

        return nostr_unavailable()
    return None
