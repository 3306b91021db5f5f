"""QUIC over ICE on 127.0.0.1: two IceAgents in one process exchange their parameters in
memory, then run aioquic over the selected pair as the receiver (client) and sender (server)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import aioice.ice
import pytest
import uvloop

from tunnelpy.common.errors import (
    ConfigError,
    ConnectFailed,
    ConnectionLost,
    DatagramTooLarge,
    ProtocolError,
    StreamReset,
)
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.worker.transport.ice import IceAgent, select_host_addresses
from tunnelpy.worker.transport.quic.connect import (
    QuicSettings,
    QuicTransportConnection,
    connect_quic,
    create_server_identity,
    max_datagram_payload,
)
from tunnelpy.worker.transport.quic.pmtud import MAX_PROBES, RAISE_INTERVAL

DEADLINE = 60.0
LOOPBACK = ["127.0.0.1"]


def run(scenario: Callable[[], Awaitable[None]], loop: str = "uvloop") -> None:
    """Run a scenario under a deadline, on uvloop (what workers use) or asyncio's own loop."""

    async def bounded() -> None:
        async with asyncio.timeout(DEADLINE):
            await scenario()

    (uvloop.run if loop == "uvloop" else asyncio.run)(bounded())


async def connect_ice(a: IceAgent, b: IceAgent, timeout: float = 10.0) -> None:
    pa, pb = await asyncio.gather(a.gather(), b.gather())
    await a.set_remote(pb)
    await b.set_remote(pa)
    await asyncio.gather(a.connect(timeout), b.connect(timeout))


async def connect_pinned(
    receiver: IceAgent, sender: IceAgent, settings: QuicSettings | None = None
) -> tuple[QuicTransportConnection, QuicTransportConnection]:
    """QUIC over two connected agents: the receiver is the client pinning the sender's fresh cert."""
    identity = create_server_identity()
    client, server = await asyncio.gather(
        connect_quic(receiver, is_client=True, cert_fingerprint=identity.fingerprint, settings=settings),
        connect_quic(sender, is_client=False, identity=identity, settings=settings),
    )
    return client, server


@contextlib.asynccontextmanager
async def connected_agents() -> AsyncIterator[tuple[IceAgent, IceAgent]]:
    """(receiver = controlling, sender = controlled) agents on loopback, ICE connected; closed after."""
    async with (
        IceAgent(controlling=True, host_filter=LOOPBACK) as receiver,
        IceAgent(controlling=False, host_filter=LOOPBACK) as sender,
    ):
        await connect_ice(receiver, sender)
        yield receiver, sender


@contextlib.asynccontextmanager
async def quic_pair(
    settings: QuicSettings | None = None,
) -> AsyncIterator[tuple[QuicTransportConnection, QuicTransportConnection]]:
    """(client = receiver, server = sender) over ICE on loopback; everything closed after."""
    async with connected_agents() as (receiver, sender):
        client, server = await connect_pinned(receiver, sender, settings)
        try:
            yield client, server
        finally:
            client.close(0, "test over")
            await client.wait_closed()


# --- ICE -----------------------------------------------------------------------------------


def test_host_filter_selects_by_ip_cidr_and_interface_name() -> None:
    interfaces = [("lo", ["127.0.0.1", "::1"]), ("eth0", ["192.0.2.2", "fd00::2"])]
    assert select_host_addresses(["127.0.0.1"], interfaces) == ["127.0.0.1"]
    assert select_host_addresses(["192.0.2.0/24", "lo"], interfaces) == ["192.0.2.2", "127.0.0.1", "::1"]
    assert select_host_addresses(["eth0", "fd00::2"], interfaces) == ["192.0.2.2", "fd00::2"]
    with pytest.raises(ConfigError, match="'wlan0' matches no local address"):
        select_host_addresses(["wlan0"], interfaces)
    with pytest.raises(ConfigError, match=r"10\.0\.0\.1"):
        select_host_addresses(["10.0.0.1"], interfaces)


def test_loopback_filter_gives_a_loopback_host_candidate_and_pair() -> None:
    async def scenario() -> None:
        async with IceAgent(controlling=True, host_filter=LOOPBACK) as a, IceAgent(controlling=False) as b:
            params = await a.gather()
            assert [c.split()[4] for c in params.candidates] == ["127.0.0.1"]
            assert all(" typ host" in c for c in params.candidates)
            b.host_filter = ("lo",)
            await b.set_remote(params)
            pb = await b.gather()
            await a.set_remote(pb)
            started = time.monotonic()
            pair_a, pair_b = await asyncio.gather(a.connect(10), b.connect(10))
            assert time.monotonic() - started < 5
            assert pair_a.local[0] == pair_a.remote[0] == "127.0.0.1"
            assert (pair_a.local, pair_a.remote) == (pair_b.remote, pair_b.local)
            assert a.selected_pair == pair_a
            assert "(host) -> 127.0.0.1" in str(pair_a)

    run(scenario)


def test_ice_deadline_gives_connect_failed_not_a_hang() -> None:
    async def scenario() -> None:
        silent = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        port = silent[0].get_extra_info("sockname")[1]
        try:
            async with IceAgent(controlling=True, host_filter=LOOPBACK) as agent:
                await agent.gather()
                await agent.set_remote(
                    IceParameters("abcd", "x" * 22, (f"1 1 udp 2130706431 127.0.0.1 {port} typ host",))
                )
                started = time.monotonic()
                with pytest.raises(ConnectFailed, match=r"no working path to the peer within 1 s"):
                    await agent.connect(timeout=1.0)
                assert time.monotonic() - started < 3
        finally:
            silent[0].close()

    run(scenario)


def test_ice_without_usable_candidates_fails_fast() -> None:
    async def scenario() -> None:
        async with IceAgent(controlling=True, host_filter=LOOPBACK) as agent:
            await agent.gather()
            await agent.set_remote(IceParameters("abcd", "x" * 22, ()))
            with pytest.raises(ConnectFailed, match="every candidate pair failed"):
                await agent.connect(timeout=10)

    run(scenario)


def test_malformed_remote_parameters_are_protocol_errors() -> None:
    async def scenario() -> None:
        async with IceAgent(controlling=True, host_filter=LOOPBACK) as agent:
            await agent.gather()
            with pytest.raises(ProtocolError, match="malformed ICE candidate"):
                await agent.set_remote(IceParameters("abcd", "x" * 22, ("not a candidate",)))

    run(scenario)


# --- QUIC over ICE -------------------------------------------------------------------------


async def pump(stream, total: int, chunk: int = 64 * 1024) -> str:  # type: ignore[no-untyped-def]
    """Write ``total`` random bytes, then FIN; return their SHA-256."""
    digest = hashlib.sha256()
    block = os.urandom(chunk)
    sent = 0
    while sent < total:
        data = block[: min(chunk, total - sent)]
        digest.update(data)
        await stream.write(data)
        sent += len(data)
    await stream.finish()
    return digest.hexdigest()


async def drain(stream) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """Read to FIN; return the byte count and SHA-256."""
    digest = hashlib.sha256()
    count = 0
    while data := await stream.read(256 * 1024):
        digest.update(data)
        count += len(data)
    return count, digest.hexdigest()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_20_mb_each_way_on_one_stream_with_equal_sha256(loop: str) -> None:
    total = 20 * 1000 * 1000

    async def scenario() -> None:
        async with quic_pair() as (client, server):
            client_stream = await client.open_stream()
            await client_stream.write(b"\x00")  # the marker that makes the stream visible
            server_stream = await server.accept_stream()
            assert await server_stream.read(1) == b"\x00"
            async with asyncio.TaskGroup() as tg:
                up_sent = tg.create_task(pump(client_stream, total))
                down_sent = tg.create_task(pump(server_stream, total))
                up_got = tg.create_task(drain(server_stream))
                down_got = tg.create_task(drain(client_stream))
            assert up_got.result() == (total, up_sent.result())
            assert down_got.result() == (total, down_sent.result())
            stats = client.stats()
            assert stats.rtt_ms is not None and stats.udp_tx_bytes > total
            # Path-MTU discovery is on by default: loopback proves bigger packets mid-transfer.
            assert client.packet_size > 1452 and server.packet_size > 1452

    run(scenario, loop)


def test_half_close_keeps_the_other_direction_open() -> None:
    async def scenario() -> None:
        async with quic_pair() as (client, server):
            stream = await client.open_stream()
            await stream.write(b"request")
            await stream.finish()
            accepted = await server.accept_stream()
            assert await drain(accepted) == (7, hashlib.sha256(b"request").hexdigest())
            await accepted.write(b"reply after the peer's FIN")
            await accepted.finish()
            assert await stream.read(100) == b"reply after the peer's FIN"
            assert await stream.read(100) == b""
            assert await stream.read(100) == b""  # FIN stays sticky

    run(scenario)


def test_reset_reaches_the_peer_reader_and_writer() -> None:
    async def scenario() -> None:
        async with quic_pair() as (client, server):
            stream = await client.open_stream()
            await stream.write(b"x")
            accepted = await server.accept_stream()
            assert await accepted.read(10) == b"x"
            accepted.reset(7)
            with pytest.raises(StreamReset, match="code 7"):
                await stream.read(10)
            with pytest.raises(StreamReset, match="stopped reading"):
                for _ in range(100):  # STOP_SENDING may take a round trip to arrive
                    await stream.write(b"more")
                    await asyncio.sleep(0.01)
            with pytest.raises(StreamReset, match="reset locally"):
                await accepted.read(10)

    run(scenario)


def test_datagrams_round_trip_and_size_limit() -> None:
    async def scenario() -> None:
        async with quic_pair(QuicSettings(max_packet_size=1452)) as (client, server):  # no PMTUD
            limit = client.max_datagram_size()
            assert limit == max_datagram_payload(1452) == 1410
            big = os.urandom(limit)
            await client.send_datagram(big)
            assert await server.recv_datagram() == big
            await server.send_datagram(b"pong")
            assert await client.recv_datagram() == b"pong"
            with pytest.raises(DatagramTooLarge, match="1411-byte"):
                await client.send_datagram(b"x" * (limit + 1))
            assert client.packet_size == server.packet_size == 1452

    run(scenario)


def test_path_mtu_discovery_reaches_the_maximum_on_loopback_and_datagrams_follow() -> None:
    async def scenario() -> None:
        async with quic_pair() as (client, server):
            async with asyncio.timeout(5):
                while client.packet_size < 16384 or server.packet_size < 16384:
                    await asyncio.sleep(0.01)
            limit = client.max_datagram_size()
            assert limit == max_datagram_payload(16384)
            payload = os.urandom(limit)
            await client.send_datagram(payload)
            assert await server.recv_datagram() == payload

    run(scenario)


def test_large_packets_are_a_parameter() -> None:
    async def scenario() -> None:
        async with quic_pair(QuicSettings(packet_size=8000, max_packet_size=8000)) as (client, server):
            assert client.max_datagram_size() == 7958
            payload = os.urandom(7958)
            await server.send_datagram(payload)
            assert await client.recv_datagram() == payload

    run(scenario)


def test_slow_reader_stalls_the_writer_within_the_windows() -> None:
    window, send_buffer = 256 * 1024, 64 * 1024
    settings = QuicSettings(stream_window=window, send_buffer=send_buffer)

    async def scenario() -> None:
        async with quic_pair(settings) as (client, server):
            stream = await client.open_stream()
            written = 0

            async def write_forever() -> None:
                nonlocal written
                while True:
                    await stream.write(b"z" * 16384)
                    written += 16384

            writer = asyncio.create_task(write_forever())
            accepted = await server.accept_stream()
            previous = -1
            while written != previous:  # wait until the writer stays blocked
                previous = written
                await asyncio.sleep(0.2)
            assert window <= written <= window + send_buffer + 16384
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await stream.finish()
            assert (await drain(accepted))[0] == written  # reading reopens the window

    run(scenario)


def test_wrong_fingerprint_is_a_clear_failure_on_both_sides() -> None:
    async def scenario() -> None:
        async with connected_agents() as (receiver, sender):
            identity = create_server_identity()
            wrong = create_server_identity().fingerprint
            results = await asyncio.gather(
                connect_quic(receiver, is_client=True, cert_fingerprint=wrong),
                connect_quic(sender, is_client=False, identity=identity),
                return_exceptions=True,
            )
            client_error, server_error = results
            assert isinstance(client_error, ConnectFailed)
            assert identity.fingerprint in str(client_error) and wrong in str(client_error)
            # The client refuses before sending its Finished: the server never completes.
            assert isinstance(server_error, ConnectFailed)
            assert "certificate fingerprint mismatch (error 0x12a)" in str(server_error)

    run(scenario)


def test_malformed_pin_is_rejected_before_any_packet() -> None:
    async def scenario() -> None:
        async with IceAgent(controlling=True, host_filter=LOOPBACK) as receiver:
            with pytest.raises(ProtocolError, match="not a SHA-256"):
                await connect_quic(receiver, is_client=True, cert_fingerprint="zz" * 32)

    run(scenario)


def test_close_ends_every_waiter_with_connection_lost() -> None:
    async def scenario() -> None:
        async with quic_pair() as (client, server):
            accepting = asyncio.create_task(server.accept_stream())
            receiving = asyncio.create_task(server.recv_datagram())
            await asyncio.sleep(0)
            client.close(0, "bye")
            with pytest.raises(ConnectionLost, match="bye"):
                await accepting
            with pytest.raises(ConnectionLost):
                await receiving
            assert "bye" in await server.wait_closed()
            with pytest.raises(ConnectionLost):
                await client.open_stream()

    run(scenario)


def test_losing_the_ice_session_ends_the_connection() -> None:
    async def scenario() -> None:
        async with connected_agents() as (receiver, sender):
            client, server = await connect_pinned(receiver, sender)
            stream = await client.open_stream()
            reading = asyncio.create_task(stream.read(10))
            await receiver.close()
            with pytest.raises(ConnectionLost, match="closed locally"):
                await reading
            assert "ICE session was closed locally" in await client.wait_closed()
            server.close()

    run(scenario)


def test_consent_freshness_runs_beside_quic_and_its_expiry_ends_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aioice checks consent every CONSENT_INTERVAL * 0.8-1.2 s; shrink it from 5 s so the
    # checks, which travel through the same socket as QUIC, happen many times here.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.02)
    answered = 0
    original_request = aioice.ice.StunProtocol.request

    async def counting_request(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal answered
        result = await original_request(self, request, *args, **kwargs)
        answered += 1
        return result

    monkeypatch.setattr(aioice.ice.StunProtocol, "request", counting_request)

    async def scenario() -> None:
        async with connected_agents() as (receiver, sender):
            client, server = await connect_pinned(receiver, sender)
            stream = await client.open_stream()
            await stream.write(b"x")
            accepted = await server.accept_stream()
            await accepted.read(1)
            after_connect = answered
            while answered < after_connect + 20:  # consent rounds, answered while QUIC flows
                await stream.write(b"ping")
                assert await accepted.read(4) == b"ping"
            assert client.max_datagram_size() is not None  # still alive

            await sender.close()  # the peer vanishes without a CONNECTION_CLOSE
            started = time.monotonic()
            reason = await client.wait_closed()
            assert "ICE consent expired" in reason
            assert time.monotonic() - started < 10  # 6 missed checks of 0.5 s each
            with pytest.raises(ConnectionLost, match="consent"):
                await stream.read(1)

    run(scenario)


# --- path-MTU discovery over a real 1500-byte link -----------------------------------------

CLONE_NEWNET = 0x40000000
VETH_MTU = 1500
VETH_ADDRESSES = ("192.0.2.1", "192.0.2.2")  # TEST-NET-1, only inside our own namespaces


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def veth_namespaces() -> Iterator[tuple[str, str]]:
    """Two network namespaces joined by a veth pair with MTU 1500; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("creating network namespaces needs root and iproute2 (`ip netns`)")
    names = (f"tpy{os.getpid()}a", f"tpy{os.getpid()}b")
    try:
        ip("netns", "add", names[0])
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"`ip netns add` is not permitted here: {exc.stderr.strip()}")
    try:
        try:
            ip("netns", "add", names[1])
            veth = ("tpyveth0", "netns", names[0], "type", "veth", "peer", "name", "tpyveth1", "netns", names[1])
            ip("link", "add", *veth)
            for index, (name, address) in enumerate(zip(names, VETH_ADDRESSES, strict=True)):
                ip("-n", name, "link", "set", f"tpyveth{index}", "mtu", str(VETH_MTU), "up")
                ip("-n", name, "addr", "add", f"{address}/24", "dev", f"tpyveth{index}")
                ip("-n", name, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"could not build the veth link between namespaces: {exc.stderr.strip()}")
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def run_in_namespace(name: str, scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``scenario`` on a uvloop in this thread, moved into network namespace ``name``
    (setns moves only the calling thread; its sockets stay in that namespace)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
    finally:
        os.close(fd)

    async def bounded() -> Any:
        async with asyncio.timeout(DEADLINE):
            return await scenario()

    return uvloop.run(bounded())


def test_path_mtu_discovery_stays_within_a_1500_byte_link_and_data_flows() -> None:
    total = 4 * 1000 * 1000
    receiver_params: Future[Any] = Future()
    sender_params: Future[Any] = Future()

    async def receiver() -> tuple[int, tuple[int, str], int]:
        async with IceAgent(controlling=True, host_filter=[VETH_ADDRESSES[0]]) as agent:
            receiver_params.set_result(await agent.gather())
            params, fingerprint = await asyncio.wrap_future(sender_params)
            await agent.set_remote(params)
            await agent.connect(10)
            conn = await connect_quic(agent, is_client=True, cert_fingerprint=fingerprint)
            stream = await conn.open_stream()
            await stream.write(b"\x00")
            got = await drain(stream)
            async with asyncio.timeout(10):  # 1472 acked, then 4096 lost MAX_PROBES times
                while conn._quic.mtu_search.probes_sent < 1 + MAX_PROBES or conn._quic.mtu_search.timer() is None:
                    await asyncio.sleep(0.05)
                while conn._quic.mtu_search.timer() - time.monotonic() < RAISE_INTERVAL / 2:
                    await asyncio.sleep(0.05)
            conn.close(0, "test over")
            return conn.packet_size, got, conn._quic.mtu_search.probes_sent

    async def sender() -> tuple[int, str]:
        async with IceAgent(controlling=False, host_filter=[VETH_ADDRESSES[1]]) as agent:
            identity = create_server_identity()
            sender_params.set_result((await agent.gather(), identity.fingerprint))
            params = await asyncio.wrap_future(receiver_params)
            await agent.set_remote(params)
            await agent.connect(10)
            conn = await connect_quic(agent, is_client=False, identity=identity)
            stream = await conn.accept_stream()
            assert await stream.read(1) == b"\x00"
            sent = await pump(stream, total)
            await conn.wait_closed()
            return conn.packet_size, sent

    with veth_namespaces() as (ns_receiver, ns_sender), ThreadPoolExecutor(2) as pool:
        sending = pool.submit(run_in_namespace, ns_sender, sender)
        receiving = pool.submit(run_in_namespace, ns_receiver, receiver)
        client_size, (count, digest), probes = receiving.result(timeout=DEADLINE)
        server_size, sent_digest = sending.result(timeout=DEADLINE)
    assert (count, digest) == (total, sent_digest)
    assert client_size == server_size == VETH_MTU - 28  # 1472: the IPv4 UDP payload of the link
    assert probes == 1 + MAX_PROBES
