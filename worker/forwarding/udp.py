"""UDP over a transport: many local clients per tunnel, one flow per client address.

Datagrams travel as transport datagrams when they fit and as frames on the one
``UDP_FRAMES`` stream when they do not (see :mod:`tunnelpy.worker.forwarding.wire`). Socket callbacks
only enqueue into bounded queues (a full queue drops, as UDP may); one task per direction
drains them, so a stalled tunnel never grows memory. :class:`FlowTable` is the pure core:
flow ids, addresses and idle expiry, with ``now`` passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

from tunnelpy.common.errors import DatagramTooLarge, ProtocolError
from tunnelpy.common.logs import get_logger
from tunnelpy.worker.forwarding.tcp import Traffic
from tunnelpy.worker.forwarding.wire import FrameDecoder, decode_datagram, encode_datagram, encode_frame
from tunnelpy.worker.transport.interface import Connection, Stream

log = get_logger(__name__)

IDLE_TIMEOUT = 120.0
SWEEP_INTERVAL = 5.0
QUEUE_SIZE = 1024
MAX_FLOWS = 4096
READ_BATCH = 64  # datagrams read per wake-up of the receiver's socket reader
MAX_DATAGRAM = 65536


@dataclass(slots=True)
class FlowTable:
    """Flow ids <-> keys (a client address, or a socket), with idle expiry."""

    idle_timeout: float = IDLE_TIMEOUT
    max_flows: int = MAX_FLOWS
    _ids: dict[Hashable, int] = field(default_factory=dict)
    _keys: dict[int, Hashable] = field(default_factory=dict)
    _seen: dict[int, float] = field(default_factory=dict)
    _next_id: int = 1

    def flow_for(self, key: Hashable, now: float) -> int | None:
        """The flow of ``key``, created if new; None when the table is full."""
        flow_id = self._ids.get(key)
        if flow_id is None:
            if len(self._ids) >= self.max_flows:
                return None
            flow_id, self._next_id = self._next_id, (self._next_id + 1) % 2**32 or 1
            self._ids[key], self._keys[flow_id] = flow_id, key
        self._seen[flow_id] = now
        return flow_id

    def add(self, flow_id: int, key: Hashable, now: float) -> None:
        """Record a flow whose id the peer chose (replacing any earlier mapping of either side)."""
        old_key = self._keys.pop(flow_id, None)
        if old_key is not None:
            del self._ids[old_key]
        old_id = self._ids.pop(key, None)
        if old_id is not None:
            del self._keys[old_id], self._seen[old_id]
        self._ids[key], self._keys[flow_id], self._seen[flow_id] = flow_id, key, now

    def key_of(self, flow_id: int, now: float | None = None) -> Hashable | None:
        key = self._keys.get(flow_id)
        if key is not None and now is not None:
            self._seen[flow_id] = now
        return key

    def expire(self, now: float) -> list[tuple[int, Hashable]]:
        """Remove and return flows idle longer than ``idle_timeout``."""
        gone = [fid for fid, seen in self._seen.items() if now - seen > self.idle_timeout]
        out = []
        for flow_id in gone:
            key = self._keys.pop(flow_id)
            del self._ids[key], self._seen[flow_id]
            out.append((flow_id, key))
        return out

    def __len__(self) -> int:
        return len(self._ids)


class UdpLink:
    """The tunnel side of UDP forwarding: send/receive ``(flow_id, payload)`` pairs."""

    def __init__(self, conn: Connection, frames: Stream, traffic: Traffic, *, outbound_is_up: bool) -> None:
        self._conn, self._frames, self.traffic = conn, frames, traffic
        self._outbound_is_up = outbound_is_up
        self.outbox: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = 0

    def enqueue(self, flow_id: int, payload: bytes) -> None:
        try:
            self.outbox.put_nowait((flow_id, payload))
        except asyncio.QueueFull:
            self.dropped += 1
            self.traffic.datagrams_dropped += 1

    def _count(self, n: int, outbound: bool) -> None:
        if outbound == self._outbound_is_up:
            self.traffic.bytes_up += n
        else:
            self.traffic.bytes_down += n

    async def run(self, deliver: Callable[[int, bytes], None]) -> None:
        """Pump the outbox into the tunnel and tunnel datagrams/frames into ``deliver``."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._send_loop())
            tg.create_task(self._datagram_loop(deliver))
            tg.create_task(self._frame_loop(deliver))

    async def _send_loop(self) -> None:
        while True:
            flow_id, payload = await self.outbox.get()
            datagram = encode_datagram(flow_id, payload)
            limit = self._conn.max_datagram_size()
            try:
                if limit is None or len(datagram) > limit:
                    raise DatagramTooLarge(str(len(datagram)))
                await self._conn.send_datagram(datagram)
            except DatagramTooLarge:
                await self._frames.write(encode_frame(flow_id, payload))
            self._count(len(payload), outbound=True)

    async def _datagram_loop(self, deliver: Callable[[int, bytes], None]) -> None:
        while True:
            datagram = await self._conn.recv_datagram()
            try:
                flow_id, payload = decode_datagram(datagram)
            except ProtocolError as exc:
                log.warning("udp.bad_datagram", error=str(exc))
                continue
            self._count(len(payload), outbound=False)
            deliver(flow_id, payload)

    async def _frame_loop(self, deliver: Callable[[int, bytes], None]) -> None:
        decoder = FrameDecoder()
        while data := await self._frames.read(256 * 1024):
            for flow_id, payload in decoder.feed(data):
                self._count(len(payload), outbound=False)
                deliver(flow_id, payload)
        if decoder.pending:
            raise ProtocolError(f"UDP frame stream ended inside a frame ({decoder.pending} bytes left)")
        # The peer finished its frame stream: only datagrams remain; keep the other loops.
        await asyncio.Event().wait()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple], None]) -> None:  # type: ignore[type-arg]
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[no-untyped-def]
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp.socket_error", error=str(exc))


NativeServe = Callable[[socket.socket], Awaitable[None]]


class ReceiverUdp:
    """The receiver's local UDP side for its whole life: clients on the bound socket, kept
    while tunnels come and go. One tunnel at a time is attached:

    * :meth:`carry` pumps a Python :class:`UdpLink` (ICE modes): each client address is a
      flow of :attr:`flows`;
    * :meth:`carry_native` hands the socket to the native data plane (iroh modes), which
      reads a duplicate of it with its own flow table until that connection ends.

    While none is attached, datagrams from clients are read and dropped (UDP may), so a
    reconnect does not deliver a burst of stale ones. Python reads the socket only while no
    native side does: the reader is switched off for the time of :meth:`carry_native`."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.flows = FlowTable()
        self.dropped = 0
        self._link: UdpLink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False  # run() is reading the socket's clients
        self._native = False  # a native side holds the socket
        self._reading = False

    async def run(self) -> None:
        """Receive from local clients until cancelled (expiring idle flows)."""
        self._loop, self._running = asyncio.get_running_loop(), True
        self._update_reader()
        try:
            await _sweep(self.flows, lambda flow_id, key: None)
        finally:
            self._running = False
            self._update_reader()

    async def carry(self, link: UdpLink) -> None:
        """Carry datagrams both ways over ``link`` until its connection fails."""
        self._link = link
        try:
            await link.run(self._to_client)
        finally:
            self._link = None

    async def carry_native(self, serve: NativeServe) -> None:
        """Let ``serve`` (the native receiver loop, given this socket) carry the clients
        until it returns or raises (its connection ended); then Python reads again."""
        self._native = True
        self._update_reader()
        try:
            await serve(self._sock)
        finally:
            self._native = False
            self._update_reader()

    def _update_reader(self) -> None:
        """Python's reader is on while run() runs and no native side holds the socket."""
        if self._loop is None:
            return
        want = self._running and not self._native
        if want and not self._reading:
            self._loop.add_reader(self._sock.fileno(), self._readable)
        elif self._reading and not want:
            self._loop.remove_reader(self._sock.fileno())
        self._reading = want

    def _readable(self) -> None:
        for _ in range(READ_BATCH):
            try:
                data, addr = self._sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                log.debug("udp.socket_error", error=str(exc))
                return
            self._from_client(data, addr)

    def _from_client(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        if self._link is None:
            self.dropped += 1
            return
        flow_id = self.flows.flow_for(addr, time.monotonic())
        if flow_id is None:
            self.dropped += 1
            return
        self._link.enqueue(flow_id, data)

    def _to_client(self, flow_id: int, payload: bytes) -> None:
        addr = self.flows.key_of(flow_id, time.monotonic())
        if addr is None:
            return
        try:
            self._sock.sendto(payload, addr)  # type: ignore[call-overload]  # keys here are client addresses
        except (BlockingIOError, InterruptedError):
            self.dropped += 1  # the socket's send buffer is full: UDP may drop
        except OSError as exc:
            log.debug("udp.socket_error", error=str(exc))


async def serve_worker_udp(link: UdpLink, addresses: tuple[str, ...], port: int) -> None:
    """Worker side: one connected UDP socket to the source per flow."""
    flows = FlowTable()
    loop = asyncio.get_running_loop()
    sockets: dict[int, asyncio.DatagramTransport] = {}
    opening: dict[int, list[bytes]] = {}

    async def open_flow(flow_id: int) -> None:
        transport = None
        for address in addresses:  # the checked addresses only, first that binds wins
            with contextlib.suppress(OSError):
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(lambda data, _addr: link.enqueue(flow_id, data)), remote_addr=(address, port)
                )
                break
        backlog = opening.pop(flow_id, [])
        if transport is None:
            log.warning("udp.flow_unreachable", flow_id=flow_id, addresses=addresses, port=port)
            return
        sockets[flow_id] = transport
        link.traffic.flows_open = len(sockets)
        flows.add(flow_id, flow_id, time.monotonic())
        for payload in backlog:
            transport.sendto(payload)

    def to_source(flow_id: int, payload: bytes) -> None:
        transport = sockets.get(flow_id)
        if transport is not None:
            flows.key_of(flow_id, time.monotonic())
            transport.sendto(payload)
        elif flow_id in opening:
            if len(opening[flow_id]) < 64:
                opening[flow_id].append(payload)
        elif len(sockets) + len(opening) < MAX_FLOWS:
            opening[flow_id] = [payload]
            tg.create_task(open_flow(flow_id))

    def close_flow(flow_id: int, _key: object) -> None:
        transport = sockets.pop(flow_id, None)
        link.traffic.flows_open = len(sockets)
        if transport is not None:
            transport.close()

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(link.run(to_source))
            tg.create_task(_sweep(flows, close_flow))
    finally:
        for transport in sockets.values():
            transport.close()


async def _sweep(flows: FlowTable, on_expired: Callable[[int, object], None]) -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL)
        for flow_id, key in flows.expire(time.monotonic()):
            log.debug("udp.flow_expired", flow_id=flow_id)
            on_expired(flow_id, key)
