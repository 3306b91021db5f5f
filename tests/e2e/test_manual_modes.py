"""The copy-paste modes end to end: the real CLI on both sides, blocks relayed through pipes.

custom-manual runs ICE on 127.0.0.1 only (``--ice-host``) and iroh-manual binds 127.0.0.1;
STUN is off except in the coturn test, which starts its own STUN server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support import Cluster, run
from tunnelpy.bench.harness import EchoService, listening_address, tcp_echo_roundtrip, udp_echo_roundtrip
from tunnelpy.bench.manual_pair import MANUAL_LOOPBACK, ManualPair
from tunnelpy.common.errors import ExitCode
from tunnelpy.signaling.manual_blocks import BlockKind, IceOffer, decode_block
from tunnelpy.worker.transport.stun_probe import public_address

pytestmark = pytest.mark.e2e

MODES = sorted(MANUAL_LOOPBACK)


def loopback_pair(cluster: Cluster, mode: str, source: str, allow: str = "127.0.0.1/32", **kwargs: Any) -> ManualPair:
    """A pair on 127.0.0.1 with STUN off; the sender allows ``allow`` for the source's protocol."""
    flag = "--allowed-udp" if source.startswith("udp:") else "--allowed-tcp"
    return cluster.manual_pair(mode, source, [flag, allow, *MANUAL_LOOPBACK[mode]], MANUAL_LOOPBACK[mode], **kwargs)


@pytest.mark.parametrize("mode", MODES)
def test_tcp_echo_20mb_and_the_sender_stops_after_the_session(work, mode):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            pair = loopback_pair(cluster, mode, f"tcp://127.0.0.1:{echo.tcp_port}")
            receiver, sender = await pair.start()
            address = await listening_address(receiver, timeout=40)
            payload = os.urandom(20 * 1024 * 1024)
            echoed = await tcp_echo_roundtrip(address, payload)
            assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
            await receiver.stop()
            assert await sender.wait(timeout=20) == 0  # one session, then the sender is done
            assert sender.find("worker.reaped") is not None

    run(main())


@pytest.mark.parametrize("mode", MODES)
def test_udp_echo(work, mode):
    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            pair = loopback_pair(cluster, mode, f"udp://127.0.0.1:{echo.udp_port}")
            receiver, _ = await pair.start()
            address = await listening_address(receiver, timeout=40)
            batches = [[f"{mode} client {c} #{i}".encode() for i in range(20)] for c in range(2)]
            await asyncio.gather(
                *(udp_echo_roundtrip(address, batch) for batch in batches),
                udp_echo_roundtrip(address, [os.urandom(3000)]),
            )

    run(main())


@pytest.mark.parametrize("mode", MODES)
def test_source_outside_the_allow_list_is_refused_by_the_sender(work, mode):
    async def main() -> None:
        async with Cluster(work) as cluster:
            pair = loopback_pair(cluster, mode, "tcp://127.0.0.1:22", allow="10.0.0.0/8")
            _, sender = await pair.start()
            assert await sender.wait(timeout=20) == ExitCode.NOT_ALLOWED
            assert "127.0.0.1 is outside the sender's --allowed-tcp list" in sender.tail()
            assert sender.find("worker.ready") is None  # refused before any worker was spawned

    run(main())


@pytest.mark.parametrize("mode", MODES)
def test_truncated_answer_is_refused_by_the_receiver(work, mode):
    def cut(lines: list[bytes]) -> list[bytes]:
        return lines[:2]  # BEGIN and the first body line; the END line never comes

    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            pair = loopback_pair(cluster, mode, f"tcp://127.0.0.1:{echo.tcp_port}", edit_answer=cut)
            receiver, _ = await pair.start()
            assert await receiver.wait(timeout=20) == ExitCode.CONFIG
            assert "the paste was truncated" in receiver.tail()
            assert "Traceback" not in receiver.tail()

    run(main())


@pytest.mark.parametrize("mode", MODES)
def test_corrupted_answer_names_the_failed_check(work, mode):
    def corrupt(lines: list[bytes]) -> list[bytes]:
        body = bytearray(lines[1])
        body[-3] = ord("A") if body[-3] != ord("A") else ord("B")  # one character changed while copying
        return [lines[0], bytes(body), *lines[2:]]

    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            pair = loopback_pair(cluster, mode, f"tcp://127.0.0.1:{echo.tcp_port}", edit_answer=corrupt)
            receiver, _ = await pair.start()
            assert await receiver.wait(timeout=20) == ExitCode.CONFIG
            tail = receiver.tail()
            assert "CRC" in tail or "base64" in tail, tail

    run(main())


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def coturn(work) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """A STUN server (Debian coturn) on 127.0.0.1, started for this test only."""
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.fail("coturn is not installed: run scripts/setup-test-env")
    port = _free_udp_port()
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-n",
        "--stun-only",
        "--listening-ip=127.0.0.1",
        f"--listening-port={port}",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--log-file=stdout",
        f"--pidfile={work / 'turnserver.pid'}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    server = f"127.0.0.1:{port}"
    try:
        async with asyncio.timeout(10):
            while await public_address(server, timeout=0.3) is None:
                pass
        yield server
    finally:
        proc.kill()
        await proc.wait()


def test_custom_manual_with_coturn_stun_shows_a_server_reflexive_candidate(work):
    async def main() -> None:
        async with coturn(work) as stun, EchoService() as echo, Cluster(work) as cluster:
            ice = ["--stun-server", stun, "--ice-host", "127.0.0.1"]
            pair = cluster.manual_pair(
                "custom-manual",
                f"tcp://127.0.0.1:{echo.tcp_port}",
                ["--allowed-tcp", "127.0.0.1/32", *ice],
                ice,
            )
            receiver, _ = await pair.start()
            offer = decode_block((await pair.offer()).decode(), BlockKind.ICE_OFFER)
            assert isinstance(offer, IceOffer)
            assert any(" typ srflx " in c and "127.0.0.1" in c for c in offer.ice.candidates), offer.ice.candidates
            address = await listening_address(receiver, timeout=40)
            assert await tcp_echo_roundtrip(address, b"through STUN-gathered ICE") == b"through STUN-gathered ICE"

    run(main())


@pytest.mark.parametrize("mode", MODES)
def test_signals_stop_both_sides_while_they_wait_for_a_paste(work, mode):
    """Nobody pastes anything: SIGTERM must still end the sender (waiting for an offer) and the
    receiver (waiting for an answer) cleanly, with exit 0 and no worker left."""

    async def main() -> None:
        async with Cluster(work) as cluster:
            receiver, sender = await loopback_pair(cluster, mode, "tcp://127.0.0.1:9").start(relay=False)
            assert receiver.proc and receiver.proc.stdout
            assert (await receiver.proc.stdout.readline()).startswith(b"-----BEGIN TUNNEL-PY")  # offer printed
            await sender.wait_event("manual.awaiting_offer")
            for peer in (sender, receiver):
                assert peer.proc is not None
                peer.proc.send_signal(signal.SIGTERM)
                assert await peer.wait(timeout=15) == 0, peer.tail()
            assert sender.find("worker.ready") is None

    run(main())
