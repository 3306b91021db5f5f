"""nostr mode's peers on loopback: a local relay, key files, a sender and receivers (bench, tests).

Everything stays on 127.0.0.1: the relay binds there, ICE gathers only 127.0.0.1 candidates and
STUN is off (:data:`NOSTR_LOOPBACK`); a public relay is never named.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tunnelpy.bench import nostr_relay
from tunnelpy.bench.harness import Peer, start_mode_receiver
from tunnelpy.signaling.nostr_keys import generate_key_file

NOSTR_LOOPBACK = ["--no-stun", "--ice-host", "127.0.0.1"]
NOT_INSTALLED = "skipped: nostr-relay not installed (scripts/setup-nostr-relay)"


def make_key(work: Path, name: str) -> tuple[Path, str]:
    """A fresh key file ``work/name.nsec`` (0600); returns it and its npub."""
    path = work / f"{name}.nsec"
    return path, generate_key_file(path)


async def start_relay_peer(work: Path, peers: list[Peer], name: str = "relay") -> tuple[Peer, str]:
    """A relay as a :class:`Peer` (stopped with the others); returns it and its ws:// URL."""
    relay = nostr_relay.start_relay(work / name, running=False)  # writes its config, picks a port
    peer = Peer(name, ["-c", str(relay.config), "serve"], work, command=[str(nostr_relay.RELAY_BIN)])
    peers.append(peer)
    await peer.start()
    async with asyncio.timeout(nostr_relay.START_TIMEOUT):
        while not await asyncio.to_thread(nostr_relay.accepts_websocket, relay.port):
            if peer.proc is not None and peer.proc.returncode is not None:
                raise RuntimeError(f"{name} exited before it served:\n{peer.tail()}")
            await asyncio.sleep(0.05)
    return peer, relay.url


def relay_flags(relays: list[str]) -> list[str]:
    return [flag for url in relays for flag in ("--relay", url)]


async def start_nostr_sender(
    work: Path,
    peers: list[Peer],
    relays: list[str],
    key: Path,
    receivers: list[str],
    *,
    extra: list[str] | None = None,
    name: str = "sender",
) -> tuple[Peer, str]:
    """A nostr sender admitting ``receivers`` (npubs); returns it once online, and its npub."""
    args = [
        "sender",
        "nostr",
        "--nsec-file",
        str(key),
        *[flag for npub in receivers for flag in ("--peer-npub", npub)],
        *relay_flags(relays),
        *NOSTR_LOOPBACK,
        "--control",
        str(work / f"{name}.sock"),
        "--log-format",
        "json",
        *(extra or []),
    ]
    peer = Peer(name, args, work)
    peers.append(peer)
    await peer.start()
    online = await peer.wait_event("supervisor.online", timeout=30)
    return peer, online["endpoint_id"]


async def start_nostr_receiver(
    work: Path,
    peers: list[Peer],
    relays: list[str],
    key: Path,
    sender: str,
    source: str,
    *,
    name: str = "receiver",
    extra: list[str] | None = None,
    wait: bool = True,
) -> tuple[Peer, tuple[str, int] | None]:
    """A nostr receiver asking ``sender`` (npub) for ``source``; returns it and where it listens."""
    mode_args = ["nostr", "--nsec-file", str(key), "--peer-npub", sender, *relay_flags(relays), *NOSTR_LOOPBACK]
    return await start_mode_receiver(work, peers, mode_args, source, name=name, extra=extra, wait=wait, timeout=60)


class NostrSessions:
    """nostr: a relay and one sender per turn; one receiver (and worker) per session, each its own key."""

    sender_ends_with_session = False

    async def start(self, work: Path, peers: list[Peer]) -> None:
        _, url = await start_relay_peer(work, peers)
        self.relays = [url]
        sender_key, _ = make_key(work, "sender")
        self.receiver_key, receiver_npub = make_key(work, "receiver")
        self.sender, self.npub = await start_nostr_sender(
            work, peers, self.relays, sender_key, [receiver_npub], extra=["--allowed-tcp", "127.0.0.1/32"]
        )

    async def open_session(self, work: Path, peers: list[Peer], source: str, index: int):  # type: ignore[no-untyped-def]
        from tunnelpy.bench.modes import OpenedSession

        receiver, address = await start_nostr_receiver(
            work, peers, self.relays, self.receiver_key, self.npub, source, name=f"receiver{index}"
        )
        assert address is not None
        return OpenedSession(receiver, address, self.sender)


def unavailable() -> str | None:
    """Why nostr mode cannot run here, or None."""
    return None if nostr_relay.installed() else NOT_INSTALLED
