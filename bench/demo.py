"""``tunnel-py demo``: a sender supervisor, receivers and an echo service on loopback, offline.

Pushes data through a real tunnel in TCP (with a SHA-256 check and the throughput next to
the same transfer made directly) and UDP (two local clients at once), shows the
supervisor's status view, then drains the sender. Exits non-zero if anything did not match.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from pathlib import Path

from tunnelpy.bench.harness import (
    EchoService,
    Peer,
    start_receiver,
    start_sender,
    tcp_echo_roundtrip,
    udp_echo_roundtrip,
)
from tunnelpy.cli.status import fetch_status, render


def say(text: str) -> None:
    print(text, flush=True)


async def _timed_echo(address: tuple[str, int], payload: bytes) -> float:
    start = time.perf_counter()
    echoed = await tcp_echo_roundtrip(address, payload)
    elapsed = time.perf_counter() - start
    if hashlib.sha256(echoed).digest() != hashlib.sha256(payload).digest():
        raise RuntimeError(f"TCP echo through {address} differs: {len(echoed)} of {len(payload)} bytes")
    return len(payload) / elapsed / 1e6


async def demo(size_mb: int, work: Path) -> int:
    peers: list[Peer] = []
    try:
        async with EchoService() as echo:
            say(f"echo service on 127.0.0.1 (tcp {echo.tcp_port}, udp {echo.udp_port})")
            allow = ["--allow-any-receiver", "--allowed-tcp", "127.0.0.1/32", "--allowed-udp", "127.0.0.1/32"]
            sender, ticket = await start_sender(work, peers, extra=allow)
            say(f"sender online (relays off), ticket {ticket[:32]}...")

            started = time.perf_counter()
            tcp_receiver, tcp_addr = await start_receiver(
                work, peers, ticket, f"tcp://127.0.0.1:{echo.tcp_port}", name="receiver-tcp"
            )
            assert tcp_addr is not None
            say(f"tcp receiver listening on {tcp_addr[0]}:{tcp_addr[1]} after {time.perf_counter() - started:.2f} s")
            payload = os.urandom(size_mb * 1_000_000)
            tunnel = await _timed_echo(tcp_addr, payload)
            direct = await _timed_echo(("127.0.0.1", echo.tcp_port), payload)
            say(
                f"TCP: {size_mb} MB echoed with equal SHA-256: tunnel {tunnel:.1f} MB/s each way, "
                f"direct {direct:.1f} MB/s ({tunnel / direct:.2f}x direct)"
            )

            udp_receiver, udp_addr = await start_receiver(
                work, peers, ticket, f"udp://127.0.0.1:{echo.udp_port}", name="receiver-udp"
            )
            assert udp_addr is not None
            clients = [[f"client{c} datagram {i}".encode() for i in range(20)] for c in (1, 2)]
            resent = await asyncio.gather(*(udp_echo_roundtrip(udp_addr, batch) for batch in clients))
            say(f"UDP: 2 clients x 20 datagrams echoed through the tunnel ({sum(resent)} resent)")

            say("\n" + render(await fetch_status(work / "sender.sock")) + "\n")
            for receiver in (tcp_receiver, udp_receiver):
                await receiver.stop()
            code = await sender.stop()
            say(f"sender drained and stopped (exit {code})")
            return 0 if code == 0 else 1
    finally:
        for peer in peers:
            await peer.stop()


def run_demo(size_mb: int) -> int:
    with tempfile.TemporaryDirectory(prefix="tunnel-py-demo-") as tmp:
        try:
            return asyncio.run(demo(size_mb, Path(tmp)))
        except (RuntimeError, TimeoutError, OSError) as exc:
            print(f"demo failed: {exc}")
            return 1
