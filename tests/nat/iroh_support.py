"""iroh-mode plumbing for the NAT lab (tests/nat/lab.py): the iroh relay on the server host,
senders and receivers as real tunnel-py processes inside lab hosts, and the traffic ends of
tests/nat/traffic.py around them.

The relay (tests/iroh_relay.py) listens on PUBLIC_A:3340 (plain HTTP, dev mode) with QUIC
address discovery on PUBLIC_A:7842, so endpoints behind a NAT learn their public address
(iroh's direct addresses come from QAD); both ends trust its throwaway CA through
``--relay-ca-file``. Discovery is off (custom relay, no --dns-server): the receiver gets the
sender's ticket, which names the relay.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.iroh_relay import IrohRelay, probe_in, receiver_args, sender_args
from tests.nat.lab import PUBLIC_A, Host, Lab
from tests.nat.traffic import expected_sha256
from tunnelpy.bench.harness import Peer, cli_command
from tunnelpy.cli.status import fetch_status
from tunnelpy.signaling import manual_blocks as mb

RELAY_PORT = 3340
LISTEN = "127.0.0.1:4000"  # the receiver's local listener, inside its own namespace


def start_relay(lab: Lab, work: Path, **options: Any) -> IrohRelay:
    server = lab.server
    relay = IrohRelay(
        work / "iroh-relay", PUBLIC_A, RELAY_PORT, qad=True, popen=server.popen, probe=probe_in(server), **options
    )
    return relay.start()


def relay_flags(relay: IrohRelay, *extra: str) -> list[str]:
    assert relay.ca_file is not None
    return ["--relay-url", relay.url, "--relay-ca-file", str(relay.ca_file), "--no-portmap", *extra]


@dataclass
class Tunnel:
    """The processes of one tunnel in the lab; :meth:`close` stops them all."""

    work: Path
    peers: list[Peer] = field(default_factory=list)
    receiver_started: float = 0.0  # time.monotonic() at the receiver's start (ttfb counts from there)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def peer(self, host: Host, name: str, args: list[str]) -> Peer:
        peer = Peer(name, args, self.work, command=host.argv(cli_command()))
        self.peers.append(peer)
        return peer

    async def close(self) -> None:
        for peer in reversed(self.peers):
            await peer.stop(timeout=10)

    @property
    def control(self) -> Path:
        return self.work / "sender.sock"


async def start_sender(tunnel: Tunnel, host: Host, mode_flags: list[str]) -> tuple[Peer, str]:
    sender = tunnel.peer(host, "sender", sender_args(mode_flags, tunnel.work / "sender.ticket", tunnel.control))
    await sender.start()
    online = await sender.wait_event("supervisor.online", timeout=30)
    return sender, str(online["ticket"])


async def start_receiver(tunnel: Tunnel, host: Host, ticket: str, port: int, mode_flags: list[str]) -> Peer:
    tunnel.receiver_started = time.monotonic()
    receiver = tunnel.peer(host, "receiver", receiver_args(mode_flags, ticket, port, LISTEN))
    await receiver.start()
    return receiver


async def fetch(tunnel: Tunnel, host: Host, size: int, timeout: float = 60) -> dict[str, Any]:
    """Fetch the known bytes through the receiver's listener (retrying until it listens);
    checks the SHA-256 and returns traffic.py's report, ``ttfb_s`` counted from the receiver's
    start (process start, session setup, first byte through the tunnel)."""
    argv = [sys.executable, "-m", "tests.nat.traffic", "fetch", LISTEN, "--timeout", str(timeout)]
    started = time.monotonic()
    done = await asyncio.to_thread(host.run, argv, timeout + 30)
    result: dict[str, Any] = json.loads(done.stdout)
    result["ttfb_s"] = round(started - tunnel.receiver_started + result["ttfb_s"], 3)
    assert result["bytes"] == size, result
    assert result["sha256"] == expected_sha256(size), "the transfer arrived damaged"
    return result


async def session(tunnel: Tunnel) -> dict[str, Any]:
    """The one session of the sender's status (waits for it)."""
    async with asyncio.timeout(20):
        while True:
            sessions = (await fetch_status(tunnel.control)).sessions
            if sessions and sessions[0]["path"]:
                return dict(sessions[0])
            await asyncio.sleep(0.2)


async def wait_path(tunnel: Tunnel, want: str, timeout: float = 20) -> dict[str, Any]:
    """The session once status shows path ``want``; a timeout names the path it has."""
    deadline = time.monotonic() + timeout
    while True:
        current = await session(tunnel)
        if current["path"] == want:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"status shows path {current['path']!r}, not {want!r}: {current.get('paths')}")
        await asyncio.sleep(0.3)


def path_changes(sender: Peer) -> list[tuple[str | None, str]]:
    """Every ``session.path_changed`` the sender's worker logged, as (from, to)."""
    return [(e.get("from"), e["to"]) for e in sender.events if e.get("event") == "session.path_changed"]


def report(mode: str, nat: str, path: str, result: dict[str, Any], **extra: object) -> None:
    """The one line per test the coordinator collects for the closing note."""
    more = "".join(f" {k}={v}" for k, v in extra.items())
    print(f"NAT-RESULT mode={mode} nat={nat} path={path} ttfb_s={result['ttfb_s']}{more}", flush=True)


async def _copy_block(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> str:
    """One printed OFFER/ANSWER block from one side's stdout to the other's stdin, as pasted."""
    lines = []
    while line := await source.readline():
        sink.write(line)
        lines.append(line.decode())
        if line.startswith(b"-----END"):
            break
    await sink.drain()
    return "".join(lines)


async def start_manual_pair(tunnel: Tunnel, lab: Lab, port: int, stun: str) -> tuple[mb.IrohOffer, mb.IrohAnswer]:
    """iroh-manual: the receiver on the right host, the sender on the left, blocks piped across."""
    tunnel.receiver_started = time.monotonic()
    receiver = tunnel.peer(
        lab.right,
        "receiver",
        [
            *("receiver", "iroh-manual", "--stun-server", stun, "--source", f"tcp://127.0.0.1:{port}"),
            *("--target", LISTEN, "--log-format", "json"),
        ],
    )
    sender = tunnel.peer(
        lab.left,
        "sender",
        [
            *("sender", "iroh-manual", "--stun-server", stun, "--allowed-tcp", "127.0.0.0/8"),
            *("--control", str(tunnel.control), "--log-format", "json"),
        ],
    )
    for peer in (receiver, sender):
        await peer.start(stdin=asyncio.subprocess.PIPE)
    assert receiver.proc and sender.proc
    assert receiver.proc.stdout and sender.proc.stdout and receiver.proc.stdin and sender.proc.stdin
    offer = mb.decode_block(await _copy_block(receiver.proc.stdout, sender.proc.stdin), mb.BlockKind.IROH_OFFER)
    answer = mb.decode_block(await _copy_block(sender.proc.stdout, receiver.proc.stdin), mb.BlockKind.IROH_ANSWER)
    assert isinstance(offer, mb.IrohOffer) and isinstance(answer, mb.IrohAnswer)
    return offer, answer


def udp_mappings(router: Host, lan_ip: str) -> list[tuple[str, int]]:
    """(destination, public port) of each UDP flow the router NATs for ``lan_ip`` (its conntrack)."""
    out = []
    for line in router.run(["cat", "/proc/net/nf_conntrack"]).stdout.splitlines():
        words = line.split()
        if "udp" not in words or f"src={lan_ip}" not in words:
            continue
        # the original tuple comes first (its dst: the peer), the reply tuple second (its dport:
        # the public port the router gave this flow)
        dst = next(w.split("=", 1)[1] for w in words if w.startswith("dst="))
        public_port = [w.split("=", 1)[1] for w in words if w.startswith("dport=")][-1]
        out.append((dst, int(public_port)))
    return out
