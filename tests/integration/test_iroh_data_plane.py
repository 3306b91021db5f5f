"""The data plane over real iroh connections on 127.0.0.1, in one process (no supervisor).

A "receiver" endpoint opens streams the way ``tunnel-py receiver`` does; a
:class:`WorkerSession` on the other endpoint forwards them to real local TCP servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct

import pytest

from tests.support import run
from tunnelpy.common.allowlist import Proto, Source
from tunnelpy.common.config import NetOptions
from tunnelpy.common.errors import ConnectionLost, StreamReset
from tunnelpy.signaling import session_wire as sw
from tunnelpy.signaling.front_door import read_message
from tunnelpy.supervisor.admission import Refusal, Refused
from tunnelpy.supervisor.front_iroh import IrohFrontDoor
from tunnelpy.worker.forwarding import wire
from tunnelpy.worker.forwarding.session import SessionTarget, WorkerSession, read_exact
from tunnelpy.worker.forwarding.tcp import Traffic, open_stream_with_retry
from tunnelpy.worker.transport import iroh_transport

OFFLINE = NetOptions(no_relay=True, bind=("127.0.0.1", 0))


@contextlib.asynccontextmanager
async def connected_pair(alpn: bytes = wire.ALPN):  # type: ignore[no-untyped-def]
    """Two offline endpoints and a connection between them: (client side, server side)."""
    server_ep = await iroh_transport.bind_endpoint(OFFLINE, secret=None, alpns=[alpn])
    client_ep = await iroh_transport.bind_endpoint(OFFLINE, secret=None, alpns=[])
    try:
        accept = asyncio.ensure_future(_accept(server_ep))
        client = await iroh_transport.connect(client_ep, server_ep.ticket(), alpn)
        server = await accept
        yield client, server
        client.close()
        server.close()
    finally:
        await client_ep.close()
        await server_ep.close()


async def _accept(endpoint) -> iroh_transport.IrohConnection:  # type: ignore[no-untyped-def]
    return iroh_transport.IrohConnection(await endpoint.accept())


@contextlib.asynccontextmanager
async def worker_session(handler):  # type: ignore[no-untyped-def]
    """A TCP source served by ``handler`` and a WorkerSession forwarding to it; yields (client conn, traffic)."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, connected_pair() as (client, worker_conn):
        traffic = Traffic()
        session = WorkerSession(
            worker_conn, SessionTarget(Source(Proto.TCP, "127.0.0.1", port), ("127.0.0.1",)), traffic
        )
        serving = asyncio.ensure_future(session.serve())
        try:
            yield client, traffic
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                await serving


def test_half_close_reaches_the_source_and_the_reply_comes_back():
    async def reply_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # to EOF: only a half-close ends this
        writer.write(b"got %d bytes" % len(request))
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with worker_session(reply_after_eof) as (client, traffic):
            stream = await open_stream_with_retry(client, wire.StreamKind.TCP)
            await stream.write(b"x" * 100_000)
            await stream.finish()
            answer = await read_exact(stream, 64)
            assert answer == b"got 100000 bytes"
            assert await stream.read(10) == b""
            traffic.refresh()  # the native connection counts the bytes; readers refresh first
            assert traffic.bytes_up == 100_000 and traffic.streams_total == 1

    run(main())


def test_a_reset_source_resets_the_stream():
    async def abort(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        # SO_LINGER 0 makes close() send an RST instead of a FIN.
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def main() -> None:
        async with worker_session(abort) as (client, _):
            stream = await open_stream_with_retry(client, wire.StreamKind.TCP)
            await stream.write(b"hello")
            # A reset must surface as a reset: a clean FIN would make a cut transfer look complete.
            with pytest.raises(StreamReset):
                async with asyncio.timeout(10):
                    assert await stream.read(1024) != b"", "the stream ended cleanly after a source reset"

    run(main())


def test_unreachable_source_resets_only_that_stream():
    async def main() -> None:
        async with connected_pair() as (client, worker_conn):
            dead = Source(Proto.TCP, "127.0.0.1", 1)  # nothing listens on port 1
            session = WorkerSession(worker_conn, SessionTarget(dead, ("127.0.0.1",)), Traffic())
            serving = asyncio.ensure_future(session.serve())
            stream = await open_stream_with_retry(client, wire.StreamKind.TCP)
            with pytest.raises(StreamReset):
                async with asyncio.timeout(15):
                    await stream.read(10)
            assert not serving.done()  # the session survives a failed stream
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving

    run(main())


def test_a_source_that_does_not_read_stalls_the_sender_instead_of_buffering():
    """Backpressure end to end: bytes accepted from the receiver stay bounded by the windows."""
    blocked = asyncio.Event()

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await blocked.wait()
        writer.close()

    async def main() -> None:
        async with worker_session(never_read) as (client, traffic):
            stream = await open_stream_with_retry(client, wire.StreamKind.TCP)
            chunk = os.urandom(1 << 20)
            sent = 0

            async def flood() -> None:
                nonlocal sent
                while sent < 256 << 20:
                    await stream.write(chunk)
                    sent += len(chunk)

            flooding = asyncio.ensure_future(flood())
            previous = -1
            while previous != sent:  # wait until the writer is stuck
                previous = sent
                await asyncio.sleep(0.5)
            assert not flooding.done()
            assert sent < 64 << 20, f"{sent} bytes accepted by a stream nobody reads"
            traffic.refresh()
            assert traffic.bytes_up < 64 << 20
            flooding.cancel()
            blocked.set()

    run(main())


def test_front_door_rejects_a_newer_protocol_version_and_keeps_serving(tmp_path):
    from tunnelpy.common.allowlist import AllowLists
    from tunnelpy.common.config import SenderConfig

    config = SenderConfig(
        mode="iroh", allowed=AllowLists(), net=OFFLINE, authorized_keys=None, control=tmp_path / "c.sock"
    )
    seen = []

    class SaysNo:
        """A session service that refuses every request (and records what was asked)."""

        def authorize(self, receiver_id: str) -> None:
            return None

        async def open_session(self, receiver_id: str, source: str, **_: str) -> Refused:
            seen.append(source)
            return Refused(Refusal.NOT_ALLOWED, "test says no")

    async def ask(endpoint, addr, body: bytes) -> sw.Message:  # type: ignore[no-untyped-def]
        conn = await iroh_transport.connect(endpoint, addr, sw.ALPN)
        stream = await conn.open_stream()
        await stream.write(len(body).to_bytes(4, "big") + body)
        await stream.finish()
        try:
            return await read_message(stream)
        finally:
            conn.close()

    async def main() -> None:
        front = IrohFrontDoor(config, SaysNo())  # type: ignore[arg-type]
        await front.start()
        serving = asyncio.ensure_future(front.serve())
        client = await iroh_transport.bind_endpoint(OFFLINE, secret=None, alpns=[])
        try:
            addr = front.endpoint.ticket()
            newer = await ask(client, addr, b'{"v": 99, "kind": "session_request", "source": "tcp://x:1"}')
            assert isinstance(newer, sw.SessionRejected)
            assert newer.reason is sw.RejectReason.VERSION_MISMATCH
            assert "same tunnel-py version" in newer.message
            current = await ask(client, addr, sw.encode(sw.SessionRequest("tcp://127.0.0.1:9"))[4:])
            assert isinstance(current, sw.SessionRejected) and current.message == "test says no"
            assert seen == ["tcp://127.0.0.1:9"]
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            await client.close()
            await front.close()

    run(main())
