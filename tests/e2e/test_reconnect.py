"""Staying up: receivers that re-establish their session by themselves, and ghost slots.

Real processes on 127.0.0.1 (relays off): a worker SIGKILLed, a sender killed and restarted
with the same identity and address, a receiver restarted with the same key at --max-sessions 1.
The local listener stays up throughout; times are logged, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from datetime import UTC, datetime

import pytest

from tests.support import Cluster, run
from tunnelpy.bench.harness import EchoService, Peer, tcp_echo_roundtrip
from tunnelpy.cli.status import fetch_status
from tunnelpy.common.errors import ExitCode

pytestmark = pytest.mark.e2e


def worker_pids(sender: Peer) -> dict[str, int]:
    return {e["session_id"]: e["pid"] for e in sender.events if e.get("event") == "worker.ready"}


async def echo_ok(addr: tuple[str, int], size: int = 64 * 1024) -> None:
    payload = os.urandom(size)
    assert await tcp_echo_roundtrip(addr, payload) == payload


def at(event: dict) -> datetime:  # type: ignore[type-arg]
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))


def seconds_between(first: dict, second: dict) -> float:  # type: ignore[type-arg]
    return (at(second) - at(first)).total_seconds()


async def keygen(work, name: str) -> str:  # type: ignore[no-untyped-def]
    proc = await asyncio.create_subprocess_exec(
        "tunnel-py", "generate-iroh-key", "-o", str(work / name), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode().split("EndpointId:")[1].strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_receiver_reconnects_after_its_worker_is_killed(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*any_receiver)
            receiver, addr = await cluster.receiver(ticket, f"tcp://127.0.0.1:{echo.tcp_port}")
            assert addr is not None
            await echo_ok(addr)
            ((session_id, pid),) = worker_pids(sender).items()
            killed_at = datetime.now(UTC)
            os.kill(pid, signal.SIGKILL)
            reaped = await sender.wait_event("worker.reaped", session_id=session_id)
            lost = await receiver.wait_event("receiver.lost", timeout=60)
            back = await receiver.wait_event("receiver.reconnected", timeout=60)
            assert back["address"] == f"{addr[0]}:{addr[1]}"  # the same local listener
            await echo_ok(addr)  # through the new session, the local client touched nothing
            assert len(worker_pids(sender)) == 2
            print(
                f"worker killed -> slot free {(at(reaped) - killed_at).total_seconds():.2f} s, "
                f"receiver lost -> reconnected {seconds_between(lost, back):.2f} s"
            )

    run(main(), timeout=150)


class _UdpClient(asyncio.DatagramProtocol):
    """One local UDP client whose address stays the same for the whole test."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.inbox.put_nowait(data)


async def udp_echo_ok(client: tuple[asyncio.DatagramTransport, _UdpClient], payload: bytes) -> None:
    """Resend ``payload`` until its echo comes back (UDP may drop), within 30 s."""
    transport, proto = client
    async with asyncio.timeout(30):
        while True:
            transport.sendto(payload)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    while await proto.inbox.get() != payload:
                        pass
                    return


def test_udp_clients_resume_after_the_worker_is_killed(work, any_receiver):
    """The receiver keeps its UDP socket: the same client addresses (one sending datagrams
    above the QUIC datagram size, framed on the stream) work again over the new session."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*any_receiver)
            receiver, addr = await cluster.receiver(ticket, f"udp://127.0.0.1:{echo.udp_port}")
            assert addr is not None
            clients = [await loop.create_datagram_endpoint(_UdpClient, remote_addr=addr) for _ in range(2)]
            try:
                for round_ in ("before", "after"):
                    for i, client in enumerate(clients):
                        await udp_echo_ok(client, f"client {i} {round_}".encode())
                    await udp_echo_ok(clients[0], os.urandom(4000))
                    if round_ == "before":
                        ((_, pid),) = worker_pids(sender).items()
                        os.kill(pid, signal.SIGKILL)
                        await receiver.wait_event("receiver.lost", timeout=60)
                        await receiver.wait_event("receiver.reconnected", timeout=60)
                assert len(worker_pids(sender)) == 2
                async with asyncio.timeout(10):  # the two client addresses -> two flows in the new worker
                    while [s["flows_open"] for s in (await fetch_status(work / "sender.sock")).sessions] != [2]:
                        await asyncio.sleep(0.2)
            finally:
                for transport, _ in clients:
                    transport.close()

    run(main(), timeout=150)


def test_receiver_survives_a_sender_restart_with_the_same_identity(work):
    async def main() -> None:
        await keygen(work, "sender.key")
        port = free_port()
        args = [
            "--secret-file",
            str(work / "sender.key"),
            "--allow-any-receiver",
            "--allowed-tcp",
            "127.0.0.1/32",
            "--bind",
            f"127.0.0.1:{port}",
        ]
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*args)
            receiver, addr = await cluster.receiver(ticket, f"tcp://127.0.0.1:{echo.tcp_port}", "--reconnect-max", "2")
            assert addr is not None
            await echo_ok(addr)
            assert sender.proc is not None
            sender.proc.send_signal(signal.SIGKILL)
            await sender.wait()
            lost = await receiver.wait_event("receiver.lost", timeout=60)
            retrying = await receiver.wait_event("receiver.retrying", timeout=10)
            assert retrying["delay_s"] <= 2
            await cluster.sender(*args, name="restarted")
            back = await receiver.wait_event("receiver.reconnected", timeout=90)
            await echo_ok(addr)
            print(f"sender restarted: receiver lost -> reconnected {seconds_between(lost, back):.2f} s")

    run(main(), timeout=200)


def test_a_restarted_receiver_replaces_its_ghost_at_once(work):
    """SIGKILL leaves the worker waiting for the QUIC idle timeout; the same key, restarted,
    gets its session at once even at --max-sessions 1 (its ghost is replaced)."""

    async def main() -> None:
        await keygen(work, "receiver.key")
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(
                "--allow-any-receiver", "--allowed-tcp", "127.0.0.1/32", "--max-sessions", "1"
            )
            source = f"tcp://127.0.0.1:{echo.tcp_port}"
            key = ("--secret-file", str(work / "receiver.key"))
            first, addr = await cluster.receiver(ticket, source, *key, name="first")
            assert addr is not None
            await echo_ok(addr)
            assert first.proc is not None
            first.proc.send_signal(signal.SIGKILL)
            await first.wait()
            _, addr2 = await cluster.receiver(ticket, source, *key, name="second")
            assert addr2 is not None
            replaced = await sender.wait_event("session.replaced")
            await echo_ok(addr2)
            async with asyncio.timeout(15):  # the ghost's worker goes; one session remains, the new one
                while len(sessions := (await fetch_status(work / "sender.sock")).sessions) != 1:
                    await asyncio.sleep(0.2)
            assert sessions[0]["session_id"] != replaced["session_id"]
            third, _ = await cluster.receiver(ticket, source, name="stranger", wait=False)  # another identity
            assert await third.wait() == ExitCode.AT_CAPACITY  # the slot is the second's, not free

    run(main(), timeout=120)


def test_crash_drill_ten_sessions_one_worker_killed(work, any_receiver):
    """10 sessions transferring; SIGKILL one worker: the other 9 finish intact, the slot is
    free at once, and the tenth receiver reconnects by itself and transfers again."""

    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*any_receiver)
            source = f"tcp://127.0.0.1:{echo.tcp_port}"
            receivers = [await cluster.receiver(ticket, source, name=f"r{n}") for n in range(10)]
            assert all(addr for _, addr in receivers)
            workers = worker_pids(sender)
            assert len(workers) == 10
            victim_session, victim = next(iter(workers.items()))
            (victim_receiver, victim_addr), *rest = sorted(
                receivers, key=lambda pair: not pair[0].find("receiver.session_accepted", session_id=victim_session)
            )
            transfers = [asyncio.create_task(echo_ok(addr, 4 * 1024 * 1024)) for _, addr in rest]  # type: ignore[arg-type]
            killed_at = datetime.now(UTC)
            os.kill(victim, signal.SIGKILL)
            reaped = await sender.wait_event("worker.reaped", session_id=victim_session)
            await asyncio.gather(*transfers)  # the other nine, byte for byte
            back = await victim_receiver.wait_event("receiver.reconnected", timeout=90)
            await echo_ok(victim_addr)  # type: ignore[arg-type]
            print(
                f"drill: slot free {(at(reaped) - killed_at).total_seconds():.2f} s after SIGKILL, "
                f"receiver back {(at(back) - killed_at).total_seconds():.1f} s after"
            )

    run(main(), timeout=200)
