"""iroh mode through a real iroh relay server on 127.0.0.1 (``iroh-relay --dev``, tests/iroh_relay.py).

``--relay-only`` on both sides: every packet goes through the relay, so the path status shows
is ``relay``, and a relay that checks tokens (``access.shared_token``) admits the right
``--relay-auth-token-file`` and shuts out a wrong one. Discovery is off with custom relays and
no ``--dns-server``, so nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.iroh_relay import IrohRelay, iroh_relay, receiver_args, sender_args  # noqa: F401  (the fixture)
from tests.support import Cluster, run
from tunnelpy.bench.harness import EchoService, Peer, listening_address, tcp_echo_roundtrip
from tunnelpy.cli.status import fetch_status
from tunnelpy.common.errors import ExitCode

pytestmark = pytest.mark.e2e


def relay_args(relay: IrohRelay, token_file: Path | None = None) -> list[str]:
    args = ["--relay-url", relay.url, "--relay-only", "--no-portmap"]
    return args + (["--relay-auth-token-file", str(token_file)] if token_file else [])


def token_file(work: Path, name: str, token: str) -> Path:
    path = work / name
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


async def start_sender(cluster: Cluster, relay_flags: list[str]) -> tuple[Peer, str]:
    work = cluster.work
    sender = Peer("sender", sender_args(relay_flags, work / "sender.ticket", work / "sender.sock"), work)
    cluster.peers.append(sender)
    await sender.start()
    online = await sender.wait_event("supervisor.online")
    return sender, online["ticket"]


async def start_receiver(cluster: Cluster, ticket: str, port: int, relay_flags: list[str], name: str) -> Peer:
    args = receiver_args([*relay_flags, "--no-reconnect"], ticket, port, "127.0.0.1:0")
    receiver = Peer(name, args, cluster.work)
    cluster.peers.append(receiver)
    await receiver.start()
    return receiver


async def assert_transfer(receiver: Peer, size: int) -> None:
    payload = os.urandom(size)
    echoed = await tcp_echo_roundtrip(await listening_address(receiver), payload)
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()


async def session_path(work: Path) -> str | None:
    async with asyncio.timeout(10):  # the next heartbeat carries it
        while True:
            sessions = (await fetch_status(work / "sender.sock")).sessions
            if sessions and sessions[0]["path"]:
                return sessions[0]["path"]
            await asyncio.sleep(0.2)


def test_relay_only_carries_the_tunnel_and_status_says_relay(work: Path, iroh_relay: Callable[..., IrohRelay]) -> None:  # noqa: F811
    relay = iroh_relay()

    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await start_sender(cluster, relay_args(relay))
            receiver = await start_receiver(cluster, ticket, echo.tcp_port, relay_args(relay), "receiver")
            await assert_transfer(receiver, 2 * 1024 * 1024)
            assert await session_path(work) == "relay"
            changed = await sender.wait_event("session.path_changed")
            assert changed["to"] == "relay" and changed["paths"][0].startswith(f"relay {relay.url}")

    run(main())


def test_relay_auth_token_admits_the_right_one_and_refuses_a_wrong_one(
    work: Path,
    iroh_relay: Callable[..., IrohRelay],  # noqa: F811
) -> None:
    relay = iroh_relay(tokens=["right-token"])
    right = token_file(work, "right.token", "right-token")
    wrong = token_file(work, "wrong.token", "wrong-token")

    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            _, ticket = await start_sender(cluster, relay_args(relay, right))
            refused = await start_receiver(cluster, ticket, echo.tcp_port, relay_args(relay, wrong), "refused")
            assert await refused.wait(timeout=40) == ExitCode.CONNECT_FAILED
            assert f"the relay {relay.url}/ refused our token" in refused.tail(), refused.tail()
            admitted = await start_receiver(cluster, ticket, echo.tcp_port, relay_args(relay, right), "admitted")
            await assert_transfer(admitted, 256 * 1024)
            assert await session_path(work) == "relay"

    run(main())
