"""The native iroh data plane (``tunnelpy.worker._native``) over real loopback sockets.

Two offline endpoints in one process (relays, discovery, port mapper and probes off, bound
to 127.0.0.1 only). A "receiver" side listens on a local TCP port and splices each client
onto a new stream; a "worker" side accepts the stream, dials the source and splices: the
shape of ``tunnel-py receiver`` / the session worker, with the bytes moved by Rust.
Run it inside a network namespace holding only ``lo``:
``unshare -n sh -c 'ip link set lo up && python -m pytest tests/integration/test_native_iroh.py'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from tunnelpy.worker import _native as native

ALPN = b"tunnel-py/data"
TCP_HEADER = bytes((1, 1))  # wire.stream_header(StreamKind.TCP)
UDP_HEADER = bytes((1, 2))  # wire.stream_header(StreamKind.UDP_FRAMES)
MB = 1024 * 1024
DEADLINE = 60.0


def run(coro: Awaitable[object], timeout: float = DEADLINE) -> object:
    async def bounded() -> object:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def offline(**kw: object) -> native.EndpointOptions:
    return native.EndpointOptions(offline=True, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def connected() -> AsyncIterator[tuple[native.Connection, native.Connection]]:
    """(receiver side, worker side) of one connection between two offline endpoints."""
    worker_ep = await native.Endpoint.bind(offline(alpns=[ALPN]))
    receiver_ep = await native.Endpoint.bind(offline())
    try:
        accepting = asyncio.ensure_future(worker_ep.accept())
        receiver = await receiver_ep.connect(worker_ep.ticket(), ALPN, 10.0)
        worker = await accepting
        assert worker is not None
        yield receiver, worker
        receiver.close(0, "test done")
    finally:
        await receiver_ep.close()
        await worker_ep.close()


async def read_exact(stream: native.BiStream, n: int) -> bytes:
    data = b""
    while len(data) < n and (chunk := await stream.read(n - len(data))):
        data += chunk
    return data


@dataclass
class Tunnel:
    """A local TCP port forwarded to ``target`` through the native splice on both ends."""

    receiver: native.Connection
    worker: native.Connection
    target: tuple[str, int]
    listen: tuple[str, int] = ("", 0)
    receiver_results: list[object] = field(default_factory=list)
    worker_results: list[object] = field(default_factory=list)

    async def _splice(self, stream: native.BiStream, sock: socket.socket, results: list[object]) -> None:
        try:
            results.append(await stream.splice_tcp(sock.detach()))
        except native.NativeError as exc:
            results.append(exc)

    async def serve_receiver(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            while True:
                client, _ = await loop.sock_accept(listener)
                stream = await self.receiver.open_bi()
                await stream.write_all(TCP_HEADER)
                tg.create_task(self._splice(stream, client, self.receiver_results))

    async def serve_worker(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            while True:
                stream = await self.worker.accept_bi()
                assert await read_exact(stream, 2) == TCP_HEADER
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                await loop.sock_connect(sock, self.target)
                tg.create_task(self._splice(stream, sock, self.worker_results))

    async def wait_results(self, n: int = 1) -> None:
        while len(self.receiver_results) < n or len(self.worker_results) < n:
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def tunnel_to(target: tuple[str, int]) -> AsyncIterator[Tunnel]:
    async with connected() as (receiver, worker):
        t = Tunnel(receiver, worker, target)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        t.listen = listener.getsockname()
        tasks = [asyncio.ensure_future(t.serve_receiver(listener)), asyncio.ensure_future(t.serve_worker())]
        try:
            yield t
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            listener.close()


@contextlib.asynccontextmanager
async def tcp_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[tuple[str, int]]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, limit=MB)
    async with server:
        yield server.sockets[0].getsockname()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until EOF, then half-close (FIN) our side."""
    try:
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.wait_closed()
    except ConnectionError:
        writer.transport.abort()


def abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def pattern(size: int, seed: int) -> bytes:
    block = hashlib.sha256(seed.to_bytes(4, "big")).digest() * (MB // 32)
    return (block * (size // len(block) + 1))[:size]


# ---- import, endpoints, messages -------------------------------------------------------


def test_import_starts_no_thread_and_no_runtime() -> None:
    code = textwrap.dedent(
        """
        import os, threading
        before = len(os.listdir("/proc/self/task"))
        from tunnelpy.worker import _native
        after = len(os.listdir("/proc/self/task"))
        assert before == after == 1, (before, after)
        assert threading.active_count() == 1
        assert not _native.runtime_started()
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_offline_endpoint_binds_loopback_only() -> None:
    async def main() -> None:
        ep = await native.Endpoint.bind(offline())
        try:
            sockets = ep.bound_sockets()
            assert sockets and all(s.startswith("127.0.0.1:") for s in sockets), sockets
            assert len(ep.endpoint_id()) == 64
            assert ep.ticket().startswith("endpoint")
        finally:
            await ep.close()

    run(main())


def test_secret_key_fixes_the_id_and_bad_options_are_config_errors() -> None:
    async def main() -> None:
        key = bytes(range(32))
        a = await native.Endpoint.bind(offline(secret_key=key))
        ident = a.endpoint_id()
        await a.close()
        b = await native.Endpoint.bind(offline(secret_key=key))
        assert b.endpoint_id() == ident
        await b.close()

    run(main())
    for bad in (
        {"secret_key": b"short"},
        {"bind_v4": "localhost"},
        {"relay_mode": "sometimes"},
        {"relay_urls": ["not a url"]},
        {"congestion": "vegas"},
        {"relay_only": True},
        {"min_mtu": 1000},
    ):
        with pytest.raises(native.NativeConfigError) as info:
            offline(**bad)
        assert "\n" not in str(info.value) and ".rs" not in str(info.value)


def test_connect_by_ticket_and_exchange_small_messages() -> None:
    async def main() -> None:
        async with connected() as (receiver, worker):
            assert worker.alpn == ALPN
            stream = await receiver.open_bi()
            await stream.write_all(b"ping")
            await stream.finish()
            peer = await worker.accept_bi()
            assert await read_exact(peer, 4) == b"ping"
            assert await peer.read() == b""  # FIN
            await peer.write_all(b"pong")
            await peer.finish()
            assert await read_exact(stream, 4) == b"pong"
            assert await stream.read() == b""

            await receiver.send_datagram(b"dgram")
            assert await worker.recv_datagram() == b"dgram"
            stats = receiver.stats()
            assert stats["path"] == "direct" and stats["rtt_ms"] is not None
            assert (stats["max_datagram_size"] or 0) >= 1100
            assert set(receiver.counters()) >= {"bytes_sent", "bytes_received", "streams_open", "udp_flows"}

            receiver.close(7, "bye now")
            assert "bye now" in await worker.closed()
            with pytest.raises(native.NativeConnectionLost):
                await worker.accept_bi()

    run(main())


def test_connect_errors_are_typed_and_bounded() -> None:
    async def main() -> None:
        ep = await native.Endpoint.bind(offline())
        gone = await native.Endpoint.bind(offline(alpns=[ALPN]))
        ticket = gone.ticket()
        await gone.close()
        try:
            with pytest.raises(native.NativeConfigError):
                await ep.connect("not-a-ticket", ALPN, 1.0)
            with pytest.raises(native.NativeConnectFailed) as info:
                await ep.connect(ticket, ALPN, 0.5)
            assert "\n" not in str(info.value) and ".rs" not in str(info.value)
        finally:
            await ep.close()

    run(main())


def test_peer_reset_of_a_control_stream_raises_stream_reset() -> None:
    async def main() -> None:
        async with connected() as (receiver, worker):
            stream = await receiver.open_bi()
            await stream.write_all(b"x")
            peer = await worker.accept_bi()
            assert await peer.read(1) == b"x"
            stream.reset(0)
            with pytest.raises(native.NativeStreamReset):
                while await peer.read():
                    pass

    run(main())


# ---- TCP splice ------------------------------------------------------------------------


def test_splice_100_mb_each_way_with_equal_sha256() -> None:
    size = 100 * MB
    up = pattern(size, 1)

    async def main() -> None:
        async with tcp_server(echo) as target, tunnel_to(target) as t:
            reader, writer = await asyncio.open_connection(*t.listen, limit=MB)

            async def send() -> None:
                view = memoryview(up)
                for i in range(0, size, MB):
                    writer.write(view[i : i + MB])
                    await writer.drain()
                writer.write_eof()  # half-close: the echo then finishes its side

            async def receive() -> str:
                digest, got = hashlib.sha256(), 0
                while data := await reader.read(MB):
                    digest.update(data)
                    got += len(data)
                assert got == size
                return digest.hexdigest()

            _, back = await asyncio.gather(send(), receive())
            assert back == hashlib.sha256(up).hexdigest()
            writer.close()
            await t.wait_results()
            assert t.receiver_results == [(size, size)]
            assert t.worker_results == [(size, size)]
            counters = t.receiver.counters()
            assert counters["bytes_sent"] == size and counters["bytes_received"] == size
            assert counters["streams_total"] == 1 and counters["streams_open"] == 0

    run(main(), timeout=110)


def test_half_close_carried_both_ways() -> None:
    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Reads the request to EOF (client half-closed), then answers and half-closes,
        # then still reads the client's... nothing: the client already finished.
        request = await reader.read(-1)
        writer.write(b"answer to " + request)
        await writer.drain()
        writer.write_eof()
        await writer.wait_closed()

    async def early_closer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Half-closes first, then keeps reading what the client sends.
        writer.write(b"banner")
        writer.write_eof()
        got = await reader.read(-1)
        assert got == b"late data"
        writer.close()

    async def main() -> None:
        async with tcp_server(source) as target, tunnel_to(target) as t:
            reader, writer = await asyncio.open_connection(*t.listen)
            writer.write(b"question")
            writer.write_eof()  # client FIN -> stream finish -> source sees EOF
            assert await reader.read(-1) == b"answer to question"  # source FIN arrives as EOF
            writer.close()
            await t.wait_results()
            assert t.receiver_results == [(8, 18)]

        async with tcp_server(early_closer) as target, tunnel_to(target) as t:
            reader, writer = await asyncio.open_connection(*t.listen)
            assert await reader.read(-1) == b"banner"  # the source's FIN, our side still open
            writer.write(b"late data")
            writer.write_eof()
            await writer.drain()
            await t.wait_results()
            assert t.worker_results == [(6, 9)]
            writer.close()

    run(main())


def test_source_reset_arrives_as_reset_at_the_local_client() -> None:
    async def resetter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        writer.write(b"partial")
        await writer.drain()
        abort_with_rst(writer)

    async def main() -> None:
        async with tcp_server(resetter) as target, tunnel_to(target) as t:
            reader, writer = await asyncio.open_connection(*t.listen)
            writer.write(b"hello")
            with pytest.raises(ConnectionResetError):
                while await reader.read(65536):  # "partial" may or may not arrive first
                    pass
            writer.close()
            await t.wait_results()
            assert isinstance(t.worker_results[0], native.NativeStreamReset)
            assert isinstance(t.receiver_results[0], native.NativeStreamReset)

    run(main())


def test_local_client_reset_arrives_as_reset_at_the_source() -> None:
    seen: asyncio.Queue[BaseException | bytes] = asyncio.Queue()

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi")
        await writer.drain()
        try:
            while await reader.read(65536):
                pass
            seen.put_nowait(b"EOF")
        except ConnectionResetError as exc:
            seen.put_nowait(exc)
        writer.close()

    async def main() -> None:
        async with tcp_server(source) as target, tunnel_to(target) as t:
            reader, writer = await asyncio.open_connection(*t.listen)
            assert await reader.readexactly(2) == b"hi"
            abort_with_rst(writer)
            assert isinstance(await seen.get(), ConnectionResetError)

    run(main())


def test_backpressure_a_client_that_never_reads_bounds_memory() -> None:
    pushed = 0
    chunk = b"\x00" * (256 * 1024)

    async def pusher(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal pushed
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(chunk)
                await writer.drain()
                pushed += len(chunk)

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    async def main() -> None:
        async with tcp_server(pusher) as target, tunnel_to(target) as t:
            _reader, writer = await asyncio.open_connection(*t.listen, limit=64 * 1024)
            writer.transport.pause_reading()  # this client never reads
            await asyncio.sleep(0.5)  # let the windows and socket buffers fill
            base_rss, base_pushed = rss(), pushed
            await asyncio.sleep(3.0)  # the source keeps pushing: it must be stalled
            grown_rss, grown_pushed = rss() - base_rss, pushed - base_pushed
            assert pushed < 96 * MB, f"source pushed {pushed / MB:.0f} MB into a client that never reads"
            assert grown_pushed < 16 * MB, f"still flowing: {grown_pushed / MB:.0f} MB in 3 s"
            assert grown_rss < 32 * MB, f"RSS grew {grown_rss / MB:.0f} MB"
            abort_with_rst(writer)

    run(main())


# ---- UDP -------------------------------------------------------------------------------


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.inbox.put_nowait(data)


def test_udp_two_clients_and_an_oversize_payload() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        echo_transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
        echo_addr = echo_transport.get_extra_info("sockname")
        async with connected() as (receiver, worker):
            frames = await receiver.open_bi()
            await frames.write_all(UDP_HEADER)
            listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            listener.bind(("127.0.0.1", 0))
            listen_addr = listener.getsockname()
            serving = [asyncio.ensure_future(receiver.serve_udp_receiver(frames, listener.detach()))]

            async def worker_side() -> None:
                stream = await worker.accept_bi()
                assert await read_exact(stream, 2) == UDP_HEADER
                await worker.serve_udp_worker(stream, [echo_addr[0]], echo_addr[1])

            serving.append(asyncio.ensure_future(worker_side()))
            clients = [await loop.create_datagram_endpoint(_Client, remote_addr=listen_addr) for _ in range(2)]
            limit = receiver.max_datagram_size() or 1200
            cases = [(0, b"from a"), (1, b"from b"), (0, os.urandom(limit + 100)), (1, os.urandom(30000))]
            for index, payload in cases:
                transport, proto = clients[index]
                got = None
                while got is None:  # UDP may drop: resend until the echo comes back
                    transport.sendto(payload)
                    with contextlib.suppress(TimeoutError):
                        got = await asyncio.wait_for(proto.inbox.get(), 0.5)
                assert got == payload
            assert receiver.counters()["udp_flows"] == 2
            assert worker.counters()["udp_flows"] == 2
            receiver.close(0, "done")
            for task in serving:
                with pytest.raises(native.NativeConnectionLost):
                    await task
            for transport, _ in clients:
                transport.close()
        echo_transport.close()

    run(main())


# ---- fork safety -----------------------------------------------------------------------

FORK_CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from tunnelpy.worker import _native as native

    async def roundtrip():
        a = await native.Endpoint.bind(native.EndpointOptions(offline=True, alpns=[b"t"]))
        b = await native.Endpoint.bind(native.EndpointOptions(offline=True))
        accepting = asyncio.ensure_future(a.accept())
        conn = await b.connect(a.ticket(), b"t", 10.0)
        peer = await accepting
        s = await conn.open_bi()
        await s.write_all(b"fork-ok")
        await s.finish()
        got = await (await peer.accept_bi()).read(100)
        await a.close()
        await b.close()
        return got

    def bounded():
        async def run():
            async with asyncio.timeout(30):
                return await roundtrip()
        return asyncio.run(run())

    pid = os.fork()  # after import, before any endpoint: the child builds its own runtime
    if pid == 0:
        os._exit(0 if bounded() == b"fork-ok" else 1)
    assert bounded() == b"fork-ok"  # the parent too
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status

    pid = os.fork()  # now the runtime exists: a child gets a clear error, not a hang
    if pid == 0:
        try:
            asyncio.run(native.Endpoint.bind(native.EndpointOptions(offline=True)))
        except native.NativeError as exc:
            os._exit(0 if "fork" in str(exc) else 3)
        os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    print("ok")
    """
)


EXIT_WITH_PENDING = textwrap.dedent(
    """
    import asyncio
    from tunnelpy.worker import _native as native

    async def main():
        a = await native.Endpoint.bind(native.EndpointOptions(offline=True, alpns=[b"t"]))
        b = await native.Endpoint.bind(native.EndpointOptions(offline=True))
        accepting = asyncio.ensure_future(a.accept())
        conn = await b.connect(a.ticket(), b"t", 10.0)
        peer = await accepting
        pending = [asyncio.ensure_future(peer.accept_bi()), asyncio.ensure_future(conn.recv_datagram())]
        await asyncio.sleep(0)
        pending[0].cancel()  # one cancelled, one left pending: both resolve on runtime threads
        asyncio.ensure_future(a.accept())

    asyncio.run(main())
    print("ok")
    """
)


def test_exit_with_pending_awaitables_is_clean() -> None:
    # A future resolved from a runtime thread while the interpreter finalizes used to abort
    # the process; the module's atexit hook parks them. Several runs: it was a race.
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", EXIT_WITH_PENDING], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stderr[-2000:])


def test_fork_after_import_before_any_endpoint() -> None:
    out = subprocess.run([sys.executable, "-c", FORK_CHILD], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
