"""Fail-over: a receiver that names several senders (``--node-id`` repeated).

Real processes on 127.0.0.1 (relays off): two senders, one receiver. The sender in use is
SIGKILLed mid-run; the receiver's local listener stays up and the next local connection goes
through the other sender. A refusal by one sender moves on to the next; refused as unknown by
all of them, the receiver exits 3 as it would with one. Times are printed, never asserted.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.support import Cluster, run
from tunnelpy.bench.harness import EchoService, Peer, tcp_echo_roundtrip
from tunnelpy.cli.status import fetch_status
from tunnelpy.common.errors import ExitCode

pytestmark = pytest.mark.e2e

STRANGER = "ab" * 32  # an EndpointId no receiver here has


async def echo_ok(addr: tuple[str, int], size: int = 64 * 1024) -> None:
    payload = os.urandom(size)
    assert await tcp_echo_roundtrip(addr, payload) == payload


async def sessions_of(work, name: str) -> int:  # type: ignore[no-untyped-def]
    return len((await fetch_status(work / f"{name}.sock")).sessions)


async def endpoint_of(work, name: str) -> str:  # type: ignore[no-untyped-def]
    return (await fetch_status(work / f"{name}.sock")).endpoint_id


def accepted_by(receiver: Peer) -> list[str]:
    """The short EndpointIds of the senders that admitted the receiver, in order."""
    return [e["sender"] for e in receiver.events if e.get("event") == "receiver.session_accepted"]


def test_killing_the_sender_in_use_moves_the_tunnel_to_the_other(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            first, first_ticket = await cluster.sender(*any_receiver, name="a")
            _, second_ticket = await cluster.sender(*any_receiver, name="b")
            id_a, id_b = await endpoint_of(work, "a"), await endpoint_of(work, "b")
            receiver, addr = await cluster.receiver(
                first_ticket,
                f"tcp://127.0.0.1:{echo.tcp_port}",
                *("--node-id", second_ticket, "--reconnect-max", "2"),
            )
            assert addr is not None
            await echo_ok(addr)
            assert id_a.startswith(accepted_by(receiver)[0])  # in order: the first sender first
            assert (await sessions_of(work, "a"), await sessions_of(work, "b")) == (1, 0)

            assert first.proc is not None
            first.proc.send_signal(signal.SIGKILL)  # the supervisor; its worker exits by itself
            await first.wait()
            lost = await receiver.wait_event("receiver.lost", timeout=60)
            back = await receiver.wait_event("receiver.reconnected", timeout=60)
            assert back["address"] == f"{addr[0]}:{addr[1]}"  # the same local listener throughout
            await echo_ok(addr)  # a new local connection, through the second sender
            assert id_b.startswith(accepted_by(receiver)[-1])
            assert await sessions_of(work, "b") == 1
            # The next sender first: the dead one was not asked again before the live one.
            assert not receiver.find("receiver.sender_failed")
            print(f"sender killed: receiver lost at {lost['timestamp']}, back through the other at {back['timestamp']}")

    run(main(), timeout=150)


def test_a_full_sender_passes_the_receiver_to_the_next(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            source = f"tcp://127.0.0.1:{echo.tcp_port}"
            _, full_ticket = await cluster.sender(*any_receiver, "--max-sessions", "1", name="full")
            _, spare_ticket = await cluster.sender(*any_receiver, name="spare")
            _, addr = await cluster.receiver(full_ticket, source, name="occupant")
            assert addr is not None and await sessions_of(work, "full") == 1
            second, addr2 = await cluster.receiver(full_ticket, source, "--node-id", spare_ticket, name="second")
            assert addr2 is not None
            await echo_ok(addr2)
            failed = second.find("receiver.sender_failed")
            assert failed is not None and failed["exit_code"] == ExitCode.AT_CAPACITY
            assert (await endpoint_of(work, "spare")).startswith(accepted_by(second)[0])

    run(main(), timeout=120)


def test_refused_as_unknown_by_every_sender_exits_3(work):
    async def main() -> None:
        keys = work / "authorized_keys"
        keys.write_text(f"{STRANGER}\n")
        args = ("--authorized-keys", str(keys), "--allowed-tcp", "127.0.0.1/32")
        async with EchoService() as echo, Cluster(work) as cluster:
            _, ticket_a = await cluster.sender(*args, name="a")
            _, ticket_b = await cluster.sender(*args, name="b")
            receiver, _ = await cluster.receiver(
                ticket_a, f"tcp://127.0.0.1:{echo.tcp_port}", "--node-id", ticket_b, wait=False
            )
            assert await receiver.wait(timeout=60) == ExitCode.UNAUTHORIZED
            failures = [e for e in receiver.events if e.get("event") == "receiver.sender_failed"]
            assert [f["exit_code"] for f in failures] == [ExitCode.UNAUTHORIZED] * 2

    run(main(), timeout=120)


def test_a_malformed_second_sender_is_refused_before_any_request(work, any_receiver):
    async def main() -> None:
        async with Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*any_receiver)
            bad = ("--node-id", "endpointnonsense")
            receiver, _ = await cluster.receiver(ticket, "tcp://127.0.0.1:9", *bad, wait=False)
            assert await receiver.wait(timeout=30) == ExitCode.CONFIG
            assert not sender.find("session.opened")

    run(main(), timeout=90)
