"""iroh mode end to end: the installed CLI, a real supervisor, workers, receivers and echo services.

Relays and internet discovery are off (``--no-relay``); every byte stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import struct
import tempfile
from pathlib import Path

import pytest

from tests.support import Cluster, pid_alive, run
from tunnelpy.bench.harness import EchoService, Peer, tcp_echo_roundtrip, udp_echo_roundtrip
from tunnelpy.cli.status import fetch_status
from tunnelpy.common.errors import ExitCode

pytestmark = pytest.mark.e2e


async def assert_echo(address: tuple[str, int], size: int) -> None:
    payload = os.urandom(size)
    echoed = await tcp_echo_roundtrip(address, payload)
    assert len(echoed) == size
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()


def worker_pids(sender: Peer) -> dict[str, int]:
    """session_id -> pid of every worker that reported ready (from the sender's log)."""
    return {e["session_id"]: e["pid"] for e in sender.events if e.get("event") == "worker.ready"}


def test_tcp_echo_20mb_keeps_every_byte(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            _, ticket = await cluster.sender(*any_receiver)
            _, addr = await cluster.receiver(ticket, f"tcp://127.0.0.1:{echo.tcp_port}")
            await assert_echo(addr, 20 * 1024 * 1024)
            # a second connection on the same session works too (one stream per connection)
            await assert_echo(addr, 64 * 1024)

    run(main())


def test_server_speaks_first_protocols_do_not_stall(work, any_receiver):
    """The data-stream header makes the stream visible before the client writes (SSH banner case)."""

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-banner\r\n")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(banner, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, Cluster(work) as cluster:
            _, ticket = await cluster.sender(*any_receiver)
            _, addr = await cluster.receiver(ticket, f"tcp://127.0.0.1:{port}")
            reader, writer = await asyncio.open_connection(*addr)
            async with asyncio.timeout(10):
                assert await reader.read() == b"SSH-2.0-banner\r\n"
            writer.close()

    run(main())


def test_udp_echo_from_two_clients_at_once(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            _, ticket = await cluster.sender(*any_receiver)
            _, addr = await cluster.receiver(ticket, f"udp://127.0.0.1:{echo.udp_port}")
            batches = [[f"client {c} #{i}".encode() * 8 for i in range(30)] for c in range(2)]
            large = [os.urandom(4000)]  # above the QUIC datagram size: travels framed on the stream
            await asyncio.gather(
                *(udp_echo_roundtrip(addr, batch) for batch in batches), udp_echo_roundtrip(addr, large)
            )
            async with asyncio.timeout(10):  # three client addresses -> three flows in the worker
                while (await fetch_status(work / "sender.sock")).sessions[0]["flows_open"] != 3:
                    await asyncio.sleep(0.2)

    run(main())


def test_source_outside_allow_list_is_refused_with_reason(work):
    async def main() -> None:
        async with Cluster(work) as cluster:
            _, ticket = await cluster.sender("--allow-any-receiver", "--allowed-tcp", "127.0.0.2/32")
            receiver, _ = await cluster.receiver(ticket, "tcp://127.0.0.1:22", wait=False)
            assert await receiver.wait() == ExitCode.NOT_ALLOWED
            assert "127.0.0.1 is outside the sender's --allowed-tcp list" in receiver.tail()
            udp, _ = await cluster.receiver(ticket, "udp://127.0.0.2:53", name="udp", wait=False)
            assert await udp.wait() == ExitCode.NOT_ALLOWED
            assert "allows no udp sources" in udp.tail()

    run(main())


def test_unauthorized_receiver_is_refused(work):
    async def main() -> None:
        keys = work / "authorized_keys"
        keys.write_text("# only this one\n" + "ab" * 32 + "\n")
        async with EchoService() as echo, Cluster(work) as cluster:
            _, ticket = await cluster.sender("--authorized-keys", str(keys), "--allowed-tcp", "127.0.0.1/32")
            receiver, _ = await cluster.receiver(ticket, f"tcp://127.0.0.1:{echo.tcp_port}", wait=False)
            assert await receiver.wait() == ExitCode.UNAUTHORIZED
            assert "is not in the sender's --authorized-keys" in receiver.tail()

    run(main())


def test_authorized_receiver_with_persistent_keys(work):
    """Keys made by generate-iroh-key: the sender keeps its EndpointId, the receiver is admitted by id."""

    async def keygen(name: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "tunnel-py", "generate-iroh-key", "-o", str(work / name), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        assert oct((work / name).stat().st_mode & 0o777) == "0o600"
        return out.decode().split("EndpointId:")[1].strip()

    async def main() -> None:
        sender_id, receiver_id = await keygen("sender.key"), await keygen("receiver.key")
        (work / "authorized_keys").write_text(f"{receiver_id}  # the laptop\n")
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(
                "--secret-file",
                str(work / "sender.key"),
                "--authorized-keys",
                str(work / "authorized_keys"),
                "--allowed-tcp",
                "127.0.0.1/32",
            )
            assert (await sender.wait_event("supervisor.online"))["endpoint_id"] == sender_id
            _, addr = await cluster.receiver(
                ticket, f"tcp://127.0.0.1:{echo.tcp_port}", "--secret-file", str(work / "receiver.key")
            )
            await assert_echo(addr, 100_000)

    run(main())


def test_max_sessions_refuses_then_admits_after_one_leaves(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*any_receiver, "--max-sessions", "2")
            source = f"tcp://127.0.0.1:{echo.tcp_port}"
            first, _ = await cluster.receiver(ticket, source, name="r1")
            await cluster.receiver(ticket, source, name="r2")
            third, _ = await cluster.receiver(ticket, source, name="r3", wait=False)
            assert await third.wait() == ExitCode.AT_CAPACITY
            assert "at capacity (2/2 sessions)" in third.tail()
            await first.stop()
            await sender.wait_event("worker.reaped")
            _, addr = await cluster.receiver(ticket, source, name="r4")
            await assert_echo(addr, 100_000)

    run(main())


def test_sigkill_of_one_worker_leaves_the_others_intact(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*any_receiver)
            source = f"tcp://127.0.0.1:{echo.tcp_port}"
            addrs = []
            for n in range(3):
                _, addr = await cluster.receiver(ticket, source, name=f"r{n}")
                addrs.append(addr)
            pids = list(worker_pids(sender).items())
            assert len(pids) == 3
            victim_session, victim = pids[0]
            size = 8 * 1024 * 1024
            transfers = [asyncio.create_task(assert_echo(addr, size)) for addr in addrs[1:]]
            os.kill(victim, signal.SIGKILL)
            reaped = await sender.wait_event("worker.reaped", session_id=victim_session)
            assert reaped["signal"] == "SIGKILL"
            await asyncio.gather(*transfers)
            status = await fetch_status(work / "sender.sock")
            assert {s["session_id"] for s in status.sessions} == {sid for sid, _ in pids[1:]}
            assert len(status.sessions) == 2

    run(main())


def test_stale_worker_is_terminated(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*any_receiver, "--heartbeat-timeout", "1.5")
            await cluster.receiver(ticket, f"tcp://127.0.0.1:{echo.tcp_port}")
            ((session_id, pid),) = worker_pids(sender).items()
            os.kill(pid, signal.SIGSTOP)  # alive but silent: only the heartbeat deadline can catch it
            await sender.wait_event("worker.stale", session_id=session_id, timeout=15)
            reaped = await sender.wait_event("worker.reaped", session_id=session_id, timeout=15)
            assert reaped["signal"] in ("SIGTERM", "SIGKILL")
            assert (await fetch_status(work / "sender.sock")).sessions == ()

    run(main())


def test_sigterm_drains_and_leaves_no_process_behind(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*any_receiver)
            receivers = [
                await cluster.receiver(ticket, f"tcp://127.0.0.1:{echo.tcp_port}", "--no-reconnect", name=f"r{n}")
                for n in range(2)
            ]
            reader, writer = await asyncio.open_connection(*receivers[0][1])  # a live stream during drain
            writer.write(b"ping")
            await writer.drain()
            assert await reader.readexactly(4) == b"ping"
            pids = list(worker_pids(sender).values())
            assert sender.proc is not None
            sender.proc.send_signal(signal.SIGTERM)
            await sender.wait_event("supervisor.draining")
            writer.write(b"pong")  # the live stream still flows while draining
            await writer.drain()
            assert await reader.readexactly(4) == b"pong"
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            assert await sender.wait(timeout=20) == 0
            assert not any(pid_alive(pid) for pid in pids)
            assert not (work / "sender.sock").exists()
            for receiver, _ in receivers:
                assert await receiver.wait(timeout=15) == ExitCode.CONNECTION_LOST

    run(main())


def test_workers_exit_when_the_supervisor_is_killed(work, any_receiver):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*any_receiver)
            await cluster.receiver(ticket, f"tcp://127.0.0.1:{echo.tcp_port}")
            pids = list(worker_pids(sender).values())
            assert sender.proc is not None
            killed = sender.proc.pid
            leftovers = list(Path(tempfile.gettempdir()).glob(f"tunnel-py-run-{killed}-*"))
            assert leftovers and list(leftovers[0].glob("pymp-*")), "the run folder holds multiprocessing's too"
            sender.proc.send_signal(signal.SIGKILL)
            await sender.wait()
            async with asyncio.timeout(10):
                while any(pid_alive(pid) for pid in pids):
                    await asyncio.sleep(0.1)
            assert leftovers[0].exists()  # nobody cleaned up after a SIGKILL...
            await cluster.sender(*any_receiver, name="successor")
            assert not leftovers[0].exists()  # ...until the next supervisor started

    run(main())


def test_tunnel_supervisor_runs_from_yaml_with_flag_override(work):
    async def main() -> None:
        config = work / "sender.yaml"
        config.write_text("mode: iroh\nallow_any_receiver: true\nallowed_tcp: [10.0.0.0/8]\nmax_sessions: 5\n")
        async with EchoService() as echo, Cluster(work) as cluster:
            ticket_file = work / "yaml.ticket"
            peer = Peer(
                "yaml-sender",
                [
                    "--config",
                    str(config),
                    "--allowed-tcp",
                    "127.0.0.1/32",
                    "--no-relay",
                    "--bind",
                    "127.0.0.1:0",
                    "--ticket-file",
                    str(ticket_file),
                    "--control",
                    str(work / "yaml.sock"),
                ],
                work,
                command=["tunnel-supervisor"],
            )
            await peer.start()
            cluster.peers.append(peer)
            await peer.wait_event("supervisor.online")
            _, addr = await cluster.receiver(ticket_file.read_text().strip(), f"tcp://127.0.0.1:{echo.tcp_port}")
            await assert_echo(addr, 10_000)
            status = await fetch_status(work / "yaml.sock")
            assert status.max_sessions == 5

    run(main())


def test_bad_config_names_the_key(work):
    async def main() -> None:
        config = work / "bad.yaml"
        config.write_text("mode: iroh\nallow_any_receiver: true\nallowed_tcp: [127.0.0.1/32]\nmax_sesions: 3\n")
        proc = await asyncio.create_subprocess_exec(
            "tunnel-supervisor", "--config", str(config), stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        assert proc.returncode == ExitCode.CONFIG
        assert "unknown key 'max_sesions'" in err.decode()

        proc = await asyncio.create_subprocess_exec(
            "tunnel-py", "sender", "iroh", "--allowed-tcp", "127.0.0.1/32", stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        assert proc.returncode == ExitCode.CONFIG
        assert "--authorized-keys" in err.decode() and "--allow-any-receiver" in err.decode()

    run(main())


def test_demo_exits_zero():
    async def main() -> None:
        proc = await asyncio.create_subprocess_exec(
            "tunnel-py", "demo", "--size", "4", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
        assert b"equal SHA-256" in out and b"UDP: 2 clients" in out

    run(main())


def test_a_reset_or_refusing_source_reaches_the_local_client_as_a_reset(work, any_receiver):
    """A cut transfer must never look complete: RST and refusal arrive as ECONNRESET, not EOF."""

    async def reset_after_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        writer.write(b"partial")
        await writer.drain()
        # SO_LINGER 0 makes the close an RST instead of a FIN.
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def read_until_reset(addr: tuple[str, int], send: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(send)
        got = b""
        try:
            with pytest.raises(ConnectionResetError):
                async with asyncio.timeout(15):
                    while chunk := await reader.read(1024):
                        got += chunk
                    raise AssertionError(f"clean EOF after {got!r}: the reset was lost")
        finally:
            writer.close()
        return got

    async def main() -> None:
        server = await asyncio.start_server(reset_after_hello, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with socket.socket() as probe:  # a port nobody listens on: the worker's dial is refused
            probe.bind(("127.0.0.1", 0))
            dead_port = probe.getsockname()[1]
        async with server, Cluster(work) as cluster:
            _, ticket = await cluster.sender(*any_receiver)
            _, addr = await cluster.receiver(ticket, f"tcp://127.0.0.1:{port}")
            await read_until_reset(addr, b"hello")  # "partial" may or may not arrive before the RST
            _, dead = await cluster.receiver(ticket, f"tcp://127.0.0.1:{dead_port}", name="dead")
            assert await read_until_reset(dead, b"anyone?") == b""

    run(main())
