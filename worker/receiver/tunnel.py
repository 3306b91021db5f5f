"""The receiver's local side and its lifecycle, shared by every mode.

:class:`LocalSide` holds ``--listen`` for the receiver's whole life and carries local traffic
over whichever connection is live (the worker's peer, the same data plane as the worker:
:mod:`~tunnelpy.worker.forwarding`). :func:`run_until_stopped` binds ``--listen`` first, runs a
mode's session and, where the mode can (``reconnect``), re-establishes a lost session with
backoff while the listener stays up: local connections made meanwhile wait
:data:`CONNECT_WAIT` seconds and are then reset.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from tunnelpy.common.allowlist import Proto
from tunnelpy.common.config import ReceiverConfig
from tunnelpy.common.errors import (
    ConfigError,
    ConnectFailed,
    ConnectionLost,
    ExitCode,
    SessionRefused,
    StreamReset,
    TunnelError,
)
from tunnelpy.common.logs import get_logger
from tunnelpy.worker.forwarding import wire
from tunnelpy.worker.forwarding.tcp import Traffic, open_stream_with_retry, reset_socket, splice_socket
from tunnelpy.worker.forwarding.udp import ReceiverUdp, UdpLink
from tunnelpy.worker.receiver.backoff import Backoff
from tunnelpy.worker.receiver.senders import RETRYABLE
from tunnelpy.worker.receiver.status_line import start_status_line
from tunnelpy.worker.transport.interface import Connection

log = get_logger(__name__)

CONNECT_WAIT = 10.0  # a local connection made while the tunnel is down waits this long, then is reset


def first_leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups: what a user should read."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def bind_target(cfg: ReceiverConfig) -> socket.socket:
    """Bind ``--listen`` before asking for a session: a port in use is the user's mistake, told
    in one line (exit 2), and no sender spawns a worker for a receiver that cannot serve."""
    host, port = cfg.target
    udp = cfg.source.proto is Proto.UDP
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    )
    try:
        if not udp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"--listen {host}:{port}: cannot listen there ({exc.strerror}); choose a free port on a local address"
        ) from exc
    return sock


class LocalSide:
    """Driven by :meth:`run` (local clients, for the receiver's life) and :meth:`serve` (one
    connection at a time, swapped in as sessions come and go)."""

    def __init__(self, cfg: ReceiverConfig, sock: socket.socket) -> None:
        self.cfg = cfg
        self.sock = sock
        self.traffic = Traffic()
        self.udp = ReceiverUdp(sock) if cfg.source.proto is Proto.UDP else None
        self._conn: Connection | None = None
        self._live = asyncio.Event()
        self.connections = 0  # how many sessions this side has carried

    async def run(self) -> None:
        """Serve local clients until cancelled."""
        if self.udp is not None:
            await self.udp.run()
            return
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self.sock.listen(128)
        async with asyncio.TaskGroup() as tg:
            while True:
                client, _ = await loop.sock_accept(self.sock)
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                tg.create_task(self._forward(client))

    async def serve(self, conn: Connection) -> None:
        """Carry local traffic over ``conn`` until it ends: raises ConnectionLost with the reason."""
        carry: Coroutine[Any, Any, None] | None = None
        native = None
        if self.udp is not None:
            frames = await open_stream_with_retry(conn, wire.StreamKind.UDP_FRAMES)
            native = getattr(conn, "serve_udp_receiver", None)
            if native is not None:  # the flows run in Rust, on a duplicate of the socket
                carry = self.udp.carry_native(lambda sock: native(frames, sock))
            else:
                carry = self.udp.carry(UdpLink(conn, frames, self.traffic, outbound_is_up=True))
        counters = getattr(conn, "counters", None)
        if counters is not None and (self.udp is None or native is not None):  # native: Rust counts
            self.traffic.follow(counters, sent_is_up=True)
        self._conn = conn
        self._live.set()
        self.connections += 1
        address = self.sock.getsockname()
        log.info(
            "receiver.listening" if self.connections == 1 else "receiver.reconnected",
            proto=self.cfg.source.proto.value,
            address=f"{address[0]}:{address[1]}",
            source=str(self.cfg.source),
        )
        line = start_status_line(conn, self.traffic, self.cfg)  # a live line on a TTY
        try:
            if carry is not None:
                async with asyncio.TaskGroup() as tg:
                    carrying = tg.create_task(_carry(carry, conn))
                    reason = await conn.wait_closed()
                    carrying.cancel()
            else:
                reason = await conn.wait_closed()
        finally:
            line.stop()
            self._live.clear()
            self._conn = None
            self.traffic.unfollow()
        raise ConnectionLost(reason)

    async def _forward(self, client: socket.socket) -> None:
        conn = await self._current()
        if conn is None:
            log.warning("receiver.local_refused", reason=f"no tunnel within {CONNECT_WAIT:.0f} s")
            reset_socket(client)
            return
        try:
            stream = await open_stream_with_retry(conn, wire.StreamKind.TCP)
        except ConnectionLost:
            reset_socket(client)
            return
        except BaseException:
            reset_socket(client)
            raise
        await splice_socket(stream, client, self.traffic, local_is_source=False)

    async def _current(self) -> Connection | None:
        if not self._live.is_set():
            try:
                async with asyncio.timeout(CONNECT_WAIT):
                    await self._live.wait()
            except TimeoutError:
                return None
        return self._conn


async def _carry(carry: Coroutine[Any, Any, None], conn: Connection) -> None:
    """Run ``carry`` (UDP both ways). Should it end first (its stream failed), close ``conn``:
    :meth:`LocalSide.serve` reports the end and the receiver may reconnect."""
    try:
        await carry
        why = "UDP forwarding ended"
    except (ConnectionLost, StreamReset) as exc:
        why = f"UDP forwarding ended: {exc}"
    conn.close(0, why)


Session = Callable[[LocalSide], Coroutine[Any, Any, None]]


async def run_until_stopped(cfg: ReceiverConfig, session: Session, *, reconnect: bool = False) -> ExitCode:
    """Bind ``--listen``, then run a mode's ``session`` on the local side until it fails or
    SIGTERM/SIGINT arrives (exit 0, at any stage: even while waiting for a pasted answer).

    With ``reconnect``, once a session has been up, losing it starts a new one with backoff
    and jitter (``cfg.reconnect_max`` caps the delay), through unreachable, full or draining
    senders; errors another try cannot fix (refused identity or source, version, config) end
    the receiver with their exit code, as does any failure before the first session. Without
    it a lost connection raises ConnectionLost with the first underlying reason."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    local = LocalSide(cfg, bind_target(cfg))
    try:
        async with asyncio.TaskGroup() as tg:
            local_task = tg.create_task(local.run())
            serve_task = tg.create_task(_sessions(local, session, reconnect, cfg.reconnect_max))
            stop_task = tg.create_task(stop.wait())
            await asyncio.wait([serve_task, stop_task, local_task], return_when=asyncio.FIRST_COMPLETED)
            for task in (stop_task, serve_task, local_task):
                task.cancel()
    except* ConnectionLost as group:
        raise ConnectionLost(f"the session ended: {first_leaf(group)}") from None
    except* TunnelError as group:  # a user-facing error at any stage: the CLI prints it, no traceback
        raise first_leaf(group) from None
    finally:
        local.sock.close()
    if stop.is_set():
        log.info("receiver.stopped")
    return ExitCode.OK


async def _sessions(local: LocalSide, session: Session, reconnect: bool, cap: float) -> None:
    backoff = Backoff(cap=cap)
    while True:
        carried = local.connections
        try:
            await session(local)
            return
        except (ConnectionLost, ConnectFailed, SessionRefused) as exc:
            # Only a session that once worked is re-established: a first refusal or an
            # unreachable sender at start is the user's to see, with its exit code.
            if not reconnect or not local.connections or not _retryable(exc):
                raise
            if local.connections > carried:
                backoff.reset()  # it was connected: start the delays again from the shortest
            delay = backoff.next_delay(random.random())
            log.warning("receiver.lost", reason=" ".join(str(exc).split()), exit_code=int(exc.exit_code))
            log.info("receiver.retrying", delay_s=round(delay, 2), attempt=backoff.attempts)
            await asyncio.sleep(delay)


def _retryable(exc: TunnelError) -> bool:
    """Whether another try may succeed: a lost or unreachable sender, a full or draining one."""
    return exc.exit_code in RETRYABLE
