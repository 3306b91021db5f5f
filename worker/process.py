"""The session worker process: one per session, its own uvloop and iroh endpoint.

Started by the supervisor from a forkserver that preloaded this module before any runtime
existed (never forked from a process running iroh, zmq or a loop: stack-notes §2). It gets a
:class:`WorkerSpec`, prepares its rendezvous (a fresh iroh endpoint, or ICE + a QUIC
certificate), reports :class:`WorkerReady` over ZeroMQ, accepts exactly the admitted
receiver, serves the session, and exits. It exits by itself if
the supervisor process disappears (a pidfd on it), so no worker outlives its supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import uvloop
import zmq
import zmq.asyncio

from tunnelpy.common.errors import ConnectionLost, ExitCode, TunnelError
from tunnelpy.common.logs import configure_logging, get_logger
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.worker import contract as ww
from tunnelpy.worker.contract import SessionState, WorkerSpec
from tunnelpy.worker.forwarding.session import SessionTarget, WorkerSession
from tunnelpy.worker.forwarding.tcp import Traffic
from tunnelpy.worker.rendezvous import IceRendezvous, make_rendezvous
from tunnelpy.worker.transport.interface import Connection, TransportStats

log = get_logger(__name__)

DRAIN_LINGER = 1.0  # seconds between the end of a drained session's last stream and the close


class Worker:
    """One session's worker: driven by :meth:`run` (rendezvous, then serving), by supervisor
    messages (Drain, Stop), SIGTERM and the supervisor's pidfd; it reports over its DEALER socket."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.traffic = Traffic(on_streams=self.report_heartbeat)
        self.state = SessionState.WAITING
        self.session: WorkerSession | None = None
        self.conn: Connection | None = None
        self.rendezvous = make_rendezvous(spec.rendezvous, spec.net, spec.receiver_id, spec.accept_timeout)
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTING_ID, spec.session_id.encode())
        self._stop: asyncio.Future[tuple[str, ExitCode]] | None = None
        self._path: str | None = None  # the path last reported, to log each change once

    def report(self, msg: ww.Message) -> None:
        with contextlib.suppress(zmq.Again):
            self._sock.send(ww.encode(msg), flags=zmq.NOBLOCK)

    def stop(self, reason: str, code: ExitCode = ExitCode.OK) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result((reason, code))

    async def run(self) -> ExitCode:
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM", ExitCode.OK)
        self._sock.connect(self.spec.control_endpoint)
        self._watch_supervisor(loop)
        try:
            self.report(await self.rendezvous.prepare())
            log.info("worker.ready", transport=self.spec.rendezvous.transport, source=str(self.spec.source))
            async with asyncio.TaskGroup() as tg:
                helpers = [tg.create_task(self._heartbeats()), tg.create_task(self._control())]
                main = tg.create_task(self._serve())
                await asyncio.wait([main, self._stop], return_when=asyncio.FIRST_COMPLETED)
                for task in [*helpers, main]:
                    task.cancel()
        finally:
            if self.conn is not None:
                self.conn.close(0, "session over")
            await self.rendezvous.close()
        reason, code = self._stop.result() if self._stop.done() else main.result()
        self.report_heartbeat()
        self.report(ww.WorkerExiting(reason=reason, exit_code=int(code)))
        log.info("worker.exiting", reason=reason, exit_code=int(code), **self._counters())
        self._sock.close(0)
        self._ctx.term()
        return code

    def _watch_supervisor(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            fd = os.pidfd_open(self.spec.supervisor_pid)
        except ProcessLookupError:
            self.stop("supervisor gone", ExitCode.SUPERVISOR_GONE)
            return
        loop.add_reader(fd, self.stop, "supervisor gone", ExitCode.SUPERVISOR_GONE)

    def report_heartbeat(self) -> None:
        self.report(ww.Heartbeat(**self._counters()))

    def _counters(self) -> dict:  # type: ignore[type-arg]
        t = self.traffic
        t.refresh()
        stats = self.conn.stats() if self.conn is not None else TransportStats()
        if stats.path != self._path and stats.path is not None:
            log.info("session.path_changed", **{"from": self._path, "to": stats.path}, paths=list(stats.paths))
            self._path = stats.path
        return dict(
            state=self.state,
            bytes_up=t.bytes_up,
            bytes_down=t.bytes_down,
            streams_open=t.streams_open,
            streams_total=t.streams_total,
            rtt_ms=stats.rtt_ms,
            flows_open=t.flows_open,
            lost_packets=stats.lost_packets,
            datagrams_dropped=t.datagrams_dropped,
            path=stats.path,
            route=stats.route,
            paths=stats.paths,
        )

    async def _heartbeats(self) -> None:
        while True:
            self.report_heartbeat()
            await asyncio.sleep(self.spec.heartbeat_interval)

    async def _control(self) -> None:
        restarting: asyncio.Task[None] | None = None
        async with asyncio.TaskGroup() as tg:
            while True:
                msg = ww.decode(await self._sock.recv())
                if isinstance(msg, ww.IceRestart):
                    if restarting is not None:
                        restarting.cancel()  # a newer generation: the receiver gave up on the older one
                    restarting = tg.create_task(self._restart_ice(msg))
                else:
                    self._on_control(msg)

    def _on_control(self, msg: ww.Message) -> None:
        if isinstance(msg, ww.Stop):
            self.stop(f"stopped by supervisor: {msg.reason}")
        elif isinstance(msg, ww.Drain):
            self.state = SessionState.DRAINING
            if self.session is None:
                self.stop("drained before the receiver connected")
            else:
                self.session.drain()

    async def _restart_ice(self, msg: ww.IceRestart) -> None:
        """Restart ICE under the live connection; the supervisor gets our new parameters (or
        why not) at once, the checks and the move to the new pair follow."""
        answered = False

        def answer(params: IceParameters) -> None:
            nonlocal answered
            answered = True
            self.report(ww.IceRestarted(msg.generation, ice=params))

        try:
            if not isinstance(self.rendezvous, IceRendezvous) or self.conn is None:
                raise ConnectionLost("no connected ICE session to restart")
            await self.rendezvous.restart(self.conn, msg.ice, answer)
        except (TunnelError, OSError) as exc:
            log.warning("worker.ice_restart_failed", generation=msg.generation, error=str(exc))
            if not answered:
                self.report(ww.IceRestarted(msg.generation, error=str(exc)))
            return
        self.report_heartbeat()  # the new route, at once

    async def _serve(self) -> tuple[str, ExitCode]:
        try:
            async with asyncio.timeout(self.spec.accept_timeout):
                self.conn = await self.rendezvous.accept()
        except TimeoutError:
            return "the receiver never connected", ExitCode.CONNECT_FAILED
        if self.state is not SessionState.DRAINING:
            self.state = SessionState.CONNECTED
        log.info("worker.receiver_connected", receiver_id=self.spec.receiver_id[:16])
        self.report_heartbeat()

        target = SessionTarget(self.spec.source, self.spec.addresses)
        self.session = WorkerSession(self.conn, target, self.traffic)
        if self.state is SessionState.DRAINING:
            self.session.drain()
        reason = await self.session.serve()
        if reason == "drained":
            # The last stream's final bytes and FIN may still be in flight to the receiver:
            # closing the connection now would discard them (QUIC close drops unacked data).
            await asyncio.sleep(DRAIN_LINGER)
        return reason, ExitCode.OK


def worker_entry(spec: WorkerSpec) -> None:
    """Process entry point (multiprocessing target): exits with an :class:`ExitCode`."""
    # Ctrl-C reaches the whole process group; only the supervisor decides what a signal means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging("worker", fmt=spec.log_format, level=spec.log_level, session_id=spec.session_id)
    try:
        code = uvloop.run(Worker(spec).run())
    except TunnelError as exc:
        log.error("worker.failed", error=str(exc), exit_code=int(exc.exit_code))
        code = exc.exit_code
    except Exception:
        log.exception("worker.crashed")
        code = ExitCode.ERROR
    sys.exit(int(code))
