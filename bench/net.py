"""The bench server and its clients for ``tunnel-py bench``, raw non-blocking sockets on 127.0.0.1.

One :class:`BenchServer` port plays sink, source and echo (the first byte of a connection picks
the role) behind every contender; :func:`upload`, :func:`download`, :func:`ping_pong` and
:func:`first_echo` are the clients that time what goes through a contender.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time

CHUNK = 1 << 20
MESSAGE_BYTES = 64
HEADER = struct.Struct("!cQ")  # role (b"U" sink, b"D" source, b"E" echo), byte count
SETUP_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BenchServer:
    """Sink (``U``: count bytes, answer the count), source (``D``: send N bytes) and echo (``E``) on one
    127.0.0.1 port, raw non-blocking sockets (several GB/s in one process, so it never is the bottleneck)."""

    async def __aenter__(self) -> BenchServer:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.address = self._listener.getsockname()
        self._payload = memoryview(os.urandom(CHUNK))
        self._task = asyncio.create_task(self._serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._listener.close()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            while True:
                conn, _ = await loop.sock_accept(self._listener)
                tg.create_task(self._handle(conn))

    async def _handle(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn, contextlib.suppress(OSError, EOFError):  # a contender that dies mid-transfer
            role, count = HEADER.unpack(await _recv_exact(conn, HEADER.size))
            if role == b"U":
                await loop.sock_sendall(conn, struct.pack("!Q", await _drain(conn, count)))
            elif role == b"D":
                for start in range(0, count, CHUNK):
                    await loop.sock_sendall(conn, self._payload[: min(CHUNK, count - start)])
                conn.shutdown(socket.SHUT_WR)
            while data := await loop.sock_recv(conn, CHUNK):  # echo; after U/D: wait for the client's close
                await loop.sock_sendall(conn, data)


async def _recv_exact(sock: socket.socket, count: int) -> bytes:
    loop, buf = asyncio.get_running_loop(), bytearray()
    while len(buf) < count:
        data = await loop.sock_recv(sock, count - len(buf))
        if not data:
            raise EOFError(f"connection closed after {len(buf)} of {count} bytes")
        buf += data
    return bytes(buf)


async def _drain(sock: socket.socket, count: int) -> int:
    """Read and drop up to ``count`` bytes (fewer if the peer closes); returns how many came."""
    loop, buf, got = asyncio.get_running_loop(), bytearray(CHUNK), 0
    view = memoryview(buf)
    while got < count and (n := await loop.sock_recv_into(sock, view[: min(CHUNK, count - got)])):
        got += n
    return got


@contextlib.asynccontextmanager
async def _connect(address: tuple[str, int]):  # type: ignore[no-untyped-def]
    sock = socket.socket()
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.get_running_loop().sock_connect(sock, address)
        yield sock
    finally:
        sock.close()


async def upload(address: tuple[str, int], size: int) -> float:
    """MB/s from the first byte sent until the sink's count of all of them came back."""
    loop, payload = asyncio.get_running_loop(), memoryview(os.urandom(CHUNK))
    async with _connect(address) as sock:
        started = time.perf_counter()
        await loop.sock_sendall(sock, HEADER.pack(b"U", size))
        for start in range(0, size, CHUNK):
            await loop.sock_sendall(sock, payload[: min(CHUNK, size - start)])
        (received,) = struct.unpack("!Q", await _recv_exact(sock, 8))
        elapsed = time.perf_counter() - started
    if received != size:
        raise RuntimeError(f"upload through {address}: the sink got {received} of {size} bytes")
    return size / elapsed / 1e6


async def download(address: tuple[str, int], size: int) -> float:
    """MB/s from the request until the last of ``size`` bytes arrived."""
    async with _connect(address) as sock:
        started = time.perf_counter()
        await asyncio.get_running_loop().sock_sendall(sock, HEADER.pack(b"D", size))
        received = await _drain(sock, size)
        elapsed = time.perf_counter() - started
    if received != size:
        raise RuntimeError(f"download through {address}: got {received} of {size} bytes")
    return size / elapsed / 1e6


async def ping_pong(address: tuple[str, int], rounds: int, warmup: int = 50) -> tuple[float, float]:
    """(p50, p99) round trip in µs of MESSAGE_BYTES messages, one in flight at a time."""
    loop, message, times = asyncio.get_running_loop(), os.urandom(MESSAGE_BYTES), []
    async with _connect(address) as sock:
        await loop.sock_sendall(sock, HEADER.pack(b"E", 0))
        for i in range(warmup + rounds):
            started = time.perf_counter_ns()
            await loop.sock_sendall(sock, message)
            if await _recv_exact(sock, MESSAGE_BYTES) != message:
                raise RuntimeError(f"ping-pong through {address}: the echo differs")
            if i >= warmup:
                times.append((time.perf_counter_ns() - started) / 1000)
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, len(times) * 99 // 100)]


async def first_echo(address: tuple[str, int]) -> None:
    """Connect (retrying while nothing listens yet) and get one echoed byte back."""
    try:
        async with asyncio.timeout(SETUP_DEADLINE):
            while True:
                try:
                    async with _connect(address) as sock:
                        await asyncio.get_running_loop().sock_sendall(sock, HEADER.pack(b"E", 0) + b"!")
                        await _recv_exact(sock, 1)
                        return
                except ConnectionRefusedError:
                    await asyncio.sleep(0.005)  # socat/ssh not listening yet; bounded by the deadline
    except TimeoutError:
        raise TimeoutError(f"no byte echoed through {address[0]}:{address[1]} within {SETUP_DEADLINE:.0f} s") from None
