"""The worker pool: one worker process per session, spawned, watched, reaped and killed.

Modelled on gunicorn's arbiter verbs (``spawn_worker``, ``reap_worker``, ``murder_stale``).
A worker's death, even by SIGKILL, is noticed at once (its process sentinel is a reader on
the loop) and logged with the signal's name; the other sessions never notice. Workers speak
:mod:`tunnelpy.worker.contract` over one ZeroMQ ROUTER socket in the supervisor's private
0700 run directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.asyncio

from tunnelpy.common.errors import ProtocolError
from tunnelpy.common.logs import get_logger
from tunnelpy.supervisor.launcher import WorkerLauncher, describe_exit
from tunnelpy.supervisor.liveness import Liveness
from tunnelpy.supervisor.sessions import SessionRecord
from tunnelpy.worker import contract
from tunnelpy.worker.contract import SessionState

log = get_logger(__name__)

KILL_GRACE = 3.0  # SIGTERM, then SIGKILL this much later


class WorkerPool:
    """Driven by the session service (``spawn_worker``), the arbiter's housekeeping tick
    (``murder_stale``) and the loop (sentinels, worker messages). ``on_connected`` is called
    when a session's receiver reaches its worker, ``on_reaped`` once its worker is gone."""

    def __init__(
        self,
        launcher: WorkerLauncher,
        zmq_context: zmq.asyncio.Context,
        rundir: Path,
        heartbeat_timeout: float,
        on_reaped: Callable[[SessionRecord], None],
        on_connected: Callable[[SessionRecord], None] = lambda record: None,
    ) -> None:
        self.launcher = launcher
        self.records: dict[str, SessionRecord] = {}
        self.liveness = Liveness(heartbeat_timeout)
        self.endpoint = f"ipc://{rundir}/workers.sock"
        self._on_reaped = on_reaped
        self._on_connected = on_connected
        self._socket = zmq_context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(self.endpoint)

    def spawn_worker(self, record: SessionRecord, spec: contract.WorkerSpec) -> None:
        record.process = self.launcher.spawn(spec)
        self.records[record.session_id] = record
        log.debug("worker.spawned", session_id=record.session_id, worker_pid=record.process.pid)
        self.liveness.beat(record.session_id, time.monotonic())
        asyncio.get_running_loop().add_reader(record.process.sentinel, self.reap_worker, record.session_id)

    def reap_worker(self, session_id: str) -> None:
        record = self.records.pop(session_id)
        asyncio.get_running_loop().remove_reader(record.process.sentinel)
        record.process.join(0)
        self.liveness.forget(session_id)
        if record.ready is not None and not record.ready.done():
            record.ready.set_exception(ProtocolError("the worker exited before it was ready"))
        self._on_reaped(record)
        log.info(
            "worker.reaped",
            session_id=session_id,
            worker_pid=record.process.pid,
            active=len(self.records),
            **describe_exit(record.process.exitcode),
        )
        record.process.close()

    def terminate(self, record: SessionRecord, why: str) -> None:
        if record.term_sent_at is None:
            record.term_sent_at = time.monotonic()
            record.state = SessionState.STOPPING
            log.info("worker.terminating", session_id=record.session_id, why=why)
            with contextlib.suppress(ProcessLookupError, ValueError):
                record.process.terminate()

    def terminate_all(self, why: str) -> None:
        for record in self.records.values():
            self.terminate(record, why)

    def murder_stale(self, now: float) -> None:
        for session_id in self.liveness.stale(now):
            if session_id in self.records:
                log.warning("worker.stale", session_id=session_id, timeout=self.liveness.timeout)
                self.terminate(self.records[session_id], "heartbeat stale")
        for record in self.records.values():
            if record.term_sent_at is not None and now - record.term_sent_at > KILL_GRACE:
                log.warning("worker.killing", session_id=record.session_id)
                with contextlib.suppress(ProcessLookupError, ValueError):
                    record.process.kill()

    def send(self, session_id: str, msg: contract.Message) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._socket.send_multipart([session_id.encode(), contract.encode(msg)], flags=zmq.NOBLOCK)

    def broadcast(self, msg: contract.Message) -> None:
        for session_id in self.records:
            self.send(session_id, msg)

    async def serve_messages(self, draining: Callable[[], bool]) -> None:
        """Apply every worker message to its record; ``draining()`` tells late-ready workers to drain."""
        while True:
            ident, data = await self._socket.recv_multipart()
            record = self.records.get(ident.decode())
            if record is None:
                continue
            try:
                msg = contract.decode(data)
            except ProtocolError as exc:
                log.error("worker.bad_message", session_id=record.session_id, error=str(exc))
                continue
            self.liveness.beat(record.session_id, time.monotonic())
            was_connected = record.state is SessionState.CONNECTED
            record.apply(msg)
            if record.state is SessionState.CONNECTED and not was_connected:
                self._on_connected(record)
            if isinstance(msg, contract.WorkerExiting):
                log.info("worker.exiting", session_id=record.session_id, reason=msg.reason)
            elif isinstance(msg, contract.WorkerReady) and draining():
                self.send(record.session_id, contract.Drain())

    def close(self) -> None:
        """Kill what is left (the arbiter drained first) and close the socket."""
        for record in self.records.values():
            with contextlib.suppress(ProcessLookupError, AttributeError, ValueError):
                record.process.kill()
        self._socket.close(0)
