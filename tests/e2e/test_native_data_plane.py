"""The native data plane end to end (installed CLI, relays off): bulk integrity, backpressure,
and the QUIC idle timeout freeing a vanished receiver's slot."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time

import pytest

from tests.support import Cluster, run
from tunnelpy.bench.memory import read_memory

pytestmark = pytest.mark.e2e

GIB = 1 << 30
CHUNK = 1 << 20


def worker_pid(sender) -> int:  # type: ignore[no-untyped-def]
    return next(e["pid"] for e in sender.events if e.get("event") == "worker.ready")


def rss_mb(pid: int) -> float:
    memory = read_memory(pid, descendants=False)
    assert memory is not None, f"process {pid} is gone"
    return memory[0]


def test_one_gib_through_one_tcp_tunnel_keeps_its_sha256(work, any_receiver):
    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        while data := await reader.read(CHUNK):
            digest.update(data)
        writer.write(digest.hexdigest().encode())  # after the client's FIN: half-close carried
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, Cluster(work) as cluster:
            _, ticket = await cluster.sender(*any_receiver)
            _, addr = await cluster.receiver(ticket, f"tcp://127.0.0.1:{port}")
            assert addr is not None
            reader, writer = await asyncio.open_connection(*addr)
            block = os.urandom(CHUNK)
            sent = hashlib.sha256()
            started = time.monotonic()
            for n in range(GIB // CHUNK):
                piece = n.to_bytes(8, "big") + block[8:]
                sent.update(piece)
                writer.write(piece)
                await writer.drain()
            writer.write_eof()
            async with asyncio.timeout(120):
                echoed = await reader.read()
            elapsed = time.monotonic() - started
            print(f"1 GiB through the tunnel in {elapsed:.1f} s ({GIB / elapsed / 1e6:.0f} MB/s)")
            assert echoed.decode() == sent.hexdigest()
            writer.close()

    run(main(), timeout=400)


def test_a_client_that_never_reads_keeps_both_sides_bounded(work, any_receiver):
    pushed = [0]

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        block = b"x" * CHUNK
        try:
            while True:
                writer.write(block)
                await writer.drain()
                pushed[0] += len(block)
        except (ConnectionError, OSError):
            pass

    async def main() -> None:
        server = await asyncio.start_server(firehose, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*any_receiver)
            receiver, addr = await cluster.receiver(ticket, f"tcp://127.0.0.1:{port}")
            assert addr is not None and receiver.proc is not None
            _reader, writer = await asyncio.open_connection(*addr)  # and never read
            worker = worker_pid(sender)
            await asyncio.sleep(2)
            first = (rss_mb(receiver.proc.pid), rss_mb(worker))
            samples = []
            for _ in range(18):  # the source pushes for 20 s in all
                await asyncio.sleep(1)
                samples.append((rss_mb(receiver.proc.pid), rss_mb(worker)))
            peak = (max(s[0] for s in samples), max(s[1] for s in samples))
            print(
                f"pushed {pushed[0] / 1e6:.0f} MB; RSS receiver {first[0]:.0f}->{peak[0]:.0f} MB, "
                f"worker {first[1]:.0f}->{peak[1]:.0f} MB"
            )
            assert pushed[0] < 256 * CHUNK, "the source was never stalled"
            assert peak[0] < first[0] + 48 and peak[1] < first[1] + 48
            writer.close()

    run(main(), timeout=120)


def test_a_sigkilled_receivers_worker_is_reaped_within_the_idle_timeout(work, any_receiver):
    async def main() -> None:
        async with Cluster(work) as cluster:
            sender, ticket = await cluster.sender(*any_receiver)
            receiver, addr = await cluster.receiver(ticket, "tcp://127.0.0.1:9")
            assert addr is not None and receiver.proc is not None
            session = next(e["session_id"] for e in sender.events if e.get("event") == "worker.ready")
            killed = time.monotonic()
            receiver.proc.send_signal(signal.SIGKILL)
            await receiver.wait()
            await sender.wait_event("worker.reaped", timeout=60, session_id=session)
            took = time.monotonic() - killed
            print(f"worker reaped {took:.1f} s after its receiver's SIGKILL (idle timeout 15 s)")
            assert took < 60

    run(main(), timeout=120)
