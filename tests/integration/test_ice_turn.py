"""TURN relay candidates on 127.0.0.1 with a real coturn: one allocation per listed server, a
dead server logged and left out, wrong credentials told as such, and QUIC carried through the
relay when each side offers the other only its relay candidate (what symmetric NATs leave)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tunnelpy.common.turn import TurnOptions, TurnServer
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.worker.transport.ice import IceAgent
from tunnelpy.worker.transport.quic.connect import connect_quic, create_server_identity
from tunnelpy.worker.transport.quic.settings import QuicSettings

from .test_ice_quic import LOOPBACK, run

USER, PASSWORD = "tunnel", "loopback-turn-secret"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[TurnServer]:
    """coturn on 127.0.0.1 (UDP and TCP), long-term credentials, loopback peers allowed."""
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.fail("coturn is not installed: run scripts/setup-test-env")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--listening-ip=127.0.0.1",
            f"--listening-port={port}",
            "--relay-ip=127.0.0.1",
            "--allow-loopback-peers",
            "--lt-cred-mech",
            "--realm=tunnel-py.test",
            f"--user={USER}:{PASSWORD}",
            "--fingerprint",
            f"--pidfile={tmp_path / 'turnserver.pid'}",
            "--log-file=stdout",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_tcp(port)
        yield TurnServer("127.0.0.1", port)
    finally:
        proc.kill()
        proc.wait()


def _wait_for_tcp(port: int, timeout: float = 10.0) -> None:
    """coturn listens on TCP and UDP at once: the TCP port accepting means it is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def turn_options(*servers: TurnServer, password: str = PASSWORD) -> TurnOptions:
    return TurnOptions(servers=servers, username=USER, password=password)


def relay_only(params: IceParameters) -> IceParameters:
    """The parameters without host candidates: as if only the relay could be reached."""
    return IceParameters(params.ufrag, params.pwd, tuple(c for c in params.candidates if " typ relay" in c))


def test_one_relay_candidate_per_live_server_and_the_dead_one_logged(coturn: TurnServer) -> None:
    dead = TurnServer("127.0.0.1", free_port())  # nothing listens: no allocation within 5 s
    tcp = TurnServer(coturn.host, coturn.port, transport="tcp")

    async def scenario() -> None:
        with capture_logs() as logs:
            async with IceAgent(controlling=True, host_filter=LOOPBACK, turn=turn_options(coturn, dead, tcp)) as agent:
                params = await agent.gather()
        relays = [c for c in params.candidates if " typ relay " in c]
        assert len(relays) == 2, params.candidates  # UDP and TCP to the live server
        allocated = sorted(e["server"] for e in logs if e["event"] == "ice.turn_allocated")
        assert allocated == sorted([coturn.uri, tcp.uri])
        failed = [e for e in logs if e["event"] == "ice.turn_failed"]
        assert [e["server"] for e in failed] == [dead.uri]
        assert "no allocation within 5 s" in failed[0]["error"]

    run(scenario)


def test_wrong_credentials_are_told_and_ice_goes_on_without_a_relay(coturn: TurnServer) -> None:
    async def scenario() -> None:
        with capture_logs() as logs:
            turn = turn_options(coturn, password="wrong")
            async with IceAgent(controlling=True, host_filter=LOOPBACK, turn=turn) as agent:
                params = await agent.gather()
        assert params.candidates and not any(" typ relay " in c for c in params.candidates)
        (failed,) = [e for e in logs if e["event"] == "ice.turn_failed"]
        assert "401" in failed["error"] and "--turn-password-file" in failed["error"]
        assert any(e["event"] == "ice.no_relay_candidate" for e in logs)

    run(scenario)


@contextlib.asynccontextmanager
async def relayed_agents(coturn: TurnServer) -> AsyncIterator[tuple[IceAgent, IceAgent]]:
    turn = turn_options(coturn)
    async with (
        IceAgent(controlling=True, host_filter=LOOPBACK, turn=turn) as receiver,
        IceAgent(controlling=False, host_filter=LOOPBACK, turn=turn) as sender,
    ):
        pr, ps = await asyncio.gather(receiver.gather(), sender.gather())
        await receiver.set_remote(relay_only(ps))
        await sender.set_remote(relay_only(pr))
        await asyncio.gather(receiver.connect(15), sender.connect(15))
        yield receiver, sender


def test_quic_through_the_relay_reports_a_relay_path(coturn: TurnServer) -> None:
    payload = os.urandom(1_500_000)

    async def scenario() -> None:
        with capture_logs() as logs:
            async with relayed_agents(coturn) as (receiver, sender):
                for agent in (receiver, sender):
                    pair = agent.selected_pair
                    # relay->relay, or relay->prflx where the peer's host socket reached our allocation
                    assert pair is not None and pair.relayed and pair.path == "relay", pair
                identity = create_server_identity()
                settings = QuicSettings()
                client, server = await asyncio.gather(
                    connect_quic(receiver, is_client=True, cert_fingerprint=identity.fingerprint, settings=settings),
                    connect_quic(sender, is_client=False, identity=identity, settings=settings),
                )
                # Room for the ChannelData header, and no path-MTU probes through a relay.
                assert client.packet_size == server.packet_size == settings.packet_size - 4
                stream = await client.open_stream()
                await stream.write(payload)
                await stream.finish()
                incoming = await server.accept_stream()
                received = bytearray()
                while chunk := await incoming.read(1 << 16):
                    received += chunk
                assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
                stats = client.stats()
                assert (stats.path, stats.route) == ("relay", receiver.selected_pair.route)  # type: ignore[union-attr]
                assert client.packet_size == settings.packet_size - 4  # no probe raised it
                client.close(0, "test over")
                await client.wait_closed()
        (chosen, *_) = [e for e in logs if e["event"] == "session.path"]
        assert chosen["path"] == "relay" and "relay" in chosen["route"]

    run(scenario)
