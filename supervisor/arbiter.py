"""The supervisor's arbiter: admits sessions, spawns one worker per session, watches them.

Modelled on gunicorn's arbiter: signal handlers only queue the signal and the loop
dispatches (first SIGTERM/SIGINT drains, a second forces); one method per verb
(``open_session``, ``spawn_worker``, ``reap_worker``, ``murder_stale``). A worker's death,
even by SIGKILL, frees its slot at once (the process sentinel wakes the loop) and is logged
with the signal's name; the other sessions never notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from tunnelpy.common.allowlist import Source, SourceNotAllowed, SourceUnresolvable, parse_source, resolve
from tunnelpy.common.config import SenderConfig
from tunnelpy.common.errors import ConfigError, ExitCode, ProtocolError, TunnelError
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling import session_wire as sw
from tunnelpy.supervisor import control_wire as cw
from tunnelpy.supervisor.admission import Admission, Refused
from tunnelpy.supervisor.launcher import WorkerLauncher, describe_exit
from tunnelpy.supervisor.liveness import Liveness
from tunnelpy.supervisor.sessions import SessionRecord
from tunnelpy.worker import contract as ww
from tunnelpy.worker.process import WorkerSpec
from tunnelpy.worker.rendezvous import PASTE_WAIT, RendezvousSpec

log = get_logger(__name__)

READY_TIMEOUT = 15.0
ACCEPT_TIMEOUT = 30.0  # iroh mode: the receiver connects to its worker right after the answer
KILL_GRACE = 3.0
TICK = 0.5


@dataclass(frozen=True, slots=True)
class Opened:
    """An admitted session whose worker is ready: ``ready`` says how the receiver reaches it."""

    session_id: str
    ready: ww.WorkerReady


class Supervisor:
    def __init__(self, config: SenderConfig, launcher: WorkerLauncher, *, one_shot: bool = False) -> None:
        """``one_shot``: stop once the first session's worker is gone (the copy-paste modes)."""
        self.config = config
        self.one_shot = one_shot
        self.launcher = launcher
        self.admission = Admission(config.max_sessions)
        self.liveness = Liveness(config.heartbeat_timeout)
        self.sessions: dict[str, SessionRecord] = {}
        self.front = None  # set by run(): the mode's signaling front end
        self._signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
        self._drain_deadline: float | None = None
        self._finished = asyncio.Event()
        self._rundir = Path(tempfile.mkdtemp(prefix="tunnel-py-"))  # mkdtemp: mode 0700
        self._zmq = zmq.asyncio.Context()
        self._workers = self._zmq.socket(zmq.ROUTER)
        self._control = self._zmq.socket(zmq.ROUTER)
        for sock in (self._workers, self._control):
            sock.setsockopt(zmq.LINGER, 0)
        self.worker_endpoint = f"ipc://{self._rundir}/workers.sock"

    # -- lifecycle -------------------------------------------------------------------
    async def run(self, front) -> ExitCode:  # type: ignore[no-untyped-def]
        """Serve until a drain completes; ``front`` is the mode's signaling front end."""
        loop = asyncio.get_running_loop()
        self.front = front
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signals.put_nowait, sig)
        self._workers.bind(self.worker_endpoint)
        await self._bind_control()
        startup_error: TunnelError | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                loops = (self._worker_messages(), self._control_requests(), self._housekeeping(), self._signal_loop())
                tasks: list[asyncio.Task[Any]] = [tg.create_task(coro) for coro in loops]
                # The loops already run: a manual front door's start() waits for a worker, and a
                # signal during start() (a paste that never comes) must still stop the sender.
                starting = tg.create_task(self._start_front(front))
                finished = tg.create_task(self._finished.wait())
                tasks += [starting, finished]
                await asyncio.wait([starting, finished], return_when=asyncio.FIRST_COMPLETED)
                if starting.done():
                    startup_error = starting.result()
                    if startup_error is None:
                        tasks.append(tg.create_task(front.serve()))
                        await finished
                for task in tasks:
                    task.cancel()
        finally:
            await front.close()
            self._close()
        if startup_error is not None:
            raise startup_error
        log.info("supervisor.stopped")
        return ExitCode.OK

    @staticmethod
    async def _start_front(front) -> TunnelError | None:  # type: ignore[no-untyped-def]
        try:
            await front.start()
        except TunnelError as exc:
            return exc
        return None

    def _close(self) -> None:
        for record in self.sessions.values():
            with contextlib.suppress(ProcessLookupError, AttributeError):
                record.process.kill()
        self._workers.close(0)
        self._control.close(0)
        self._zmq.term()
        with contextlib.suppress(FileNotFoundError):
            self.config.control.unlink()
        shutil.rmtree(self._rundir, ignore_errors=True)

    async def _bind_control(self) -> None:
        path = self.config.control
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.exists():
            if await _control_answers(self._zmq, path):
                raise ConfigError(
                    f"--control {path}: another supervisor is running there; stop it or choose another --control path"
                )
            path.unlink()
        self._control.bind(f"ipc://{path}")
        os.chmod(path, 0o600)

    # -- sessions --------------------------------------------------------------------
    async def open_session(
        self, receiver_id: str, source_text: str, rendezvous: RendezvousSpec | None = None
    ) -> Opened | sw.SessionRejected:
        """Check, admit and spawn; returns the worker's address or the rejection to send back.

        Never raises for a user error: every refusal is an answer the receiver can print.
        """
        try:
            source = parse_source(source_text, what="requested source")
            addresses = self.config.allowed.check(source, await resolve(source))
        except (ConfigError, SourceNotAllowed) as exc:
            log.warning("session.refused", reason="not_allowed", receiver_id=receiver_id, error=str(exc))
            return sw.SessionRejected(sw.RejectReason.NOT_ALLOWED, str(exc))
        except SourceUnresolvable as exc:
            return sw.SessionRejected(sw.RejectReason.SOURCE_UNREACHABLE, str(exc))
        session_id = secrets.token_hex(8)
        decision = self.admission.admit(session_id, receiver_id, time.monotonic())
        if isinstance(decision, Refused):
            log.warning("session.refused", reason=decision.reason.value, receiver_id=receiver_id)
            return sw.SessionRejected(decision.reason, decision.message)
        record = SessionRecord(session_id, receiver_id, str(source))
        record.ready = asyncio.get_running_loop().create_future()
        self.sessions[session_id] = record
        self.spawn_worker(record, source, addresses, rendezvous or RendezvousSpec())
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                ready = await record.ready
        except (TimeoutError, ProtocolError) as exc:
            log.error("session.worker_not_ready", session_id=session_id, error=str(exc) or "timeout")
            self.terminate(record, "not ready")
            return sw.SessionRejected(sw.RejectReason.INTERNAL, "the sender's worker failed to start")
        log.info(
            "session.opened",
            session_id=session_id,
            receiver_id=receiver_id,
            source=str(source),
            worker_pid=record.process.pid,
        )
        return Opened(session_id, ready)

    def spawn_worker(
        self,
        record: SessionRecord,
        source: Source,
        addresses: tuple[str, ...],
        rendezvous: RendezvousSpec,
    ) -> None:
        spec = WorkerSpec(
            session_id=record.session_id,
            source=source,
            addresses=addresses,
            receiver_id=record.receiver_id,
            rendezvous=rendezvous,
            net=self.config.net,
            control_endpoint=self.worker_endpoint,
            supervisor_pid=os.getpid(),
            log_format="console" if self.config.log_format == "console" else "json",
            log_level=self.config.log_level,
            accept_timeout=PASTE_WAIT if self.one_shot else ACCEPT_TIMEOUT,
        )
        record.process = self.launcher.spawn(spec)
        log.debug("worker.spawned", session_id=record.session_id, worker_pid=record.process.pid)
        self.liveness.beat(record.session_id, time.monotonic())
        asyncio.get_running_loop().add_reader(record.process.sentinel, self.reap_worker, record.session_id)

    def reap_worker(self, session_id: str) -> None:
        record = self.sessions.pop(session_id)
        asyncio.get_running_loop().remove_reader(record.process.sentinel)
        record.process.join(0)
        self.admission.release(session_id)
        self.liveness.forget(session_id)
        if record.ready is not None and not record.ready.done():
            record.ready.set_exception(ProtocolError("the worker exited before it was ready"))
        if self.one_shot:
            self._finished.set()
        log.info(
            "worker.reaped",
            session_id=session_id,
            worker_pid=record.process.pid,
            active=self.admission.active,
            **describe_exit(record.process.exitcode),
        )
        record.process.close()

    def terminate(self, record: SessionRecord, why: str) -> None:
        if record.term_sent_at is None:
            record.term_sent_at = time.monotonic()
            record.state = "stopping"
            log.info("worker.terminating", session_id=record.session_id, why=why)
            with contextlib.suppress(ProcessLookupError, ValueError):
                record.process.terminate()

    def murder_stale(self, now: float) -> None:
        for session_id in self.liveness.stale(now):
            if session_id in self.sessions:
                log.warning("worker.stale", session_id=session_id, timeout=self.config.heartbeat_timeout)
                self.terminate(self.sessions[session_id], "heartbeat stale")
        for record in self.sessions.values():
            if record.term_sent_at is not None and now - record.term_sent_at > KILL_GRACE:
                log.warning("worker.killing", session_id=record.session_id)
                with contextlib.suppress(ProcessLookupError, ValueError):
                    record.process.kill()

    def send(self, session_id: str, msg: ww.Message) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._workers.send_multipart([session_id.encode(), ww.encode(msg)], flags=zmq.NOBLOCK)

    # -- signals and draining ---------------------------------------------------------
    async def _signal_loop(self) -> None:
        while True:
            sig = await self._signals.get()
            if self.admission.draining:
                self.handle_force(sig)
            else:
                self.handle_drain(sig)

    def handle_drain(self, sig: signal.Signals) -> None:
        log.info("supervisor.draining", signal=sig.name, sessions=len(self.sessions), grace=self.config.drain_grace)
        self.admission.draining = True
        self._drain_deadline = time.monotonic() + self.config.drain_grace
        for session_id in self.sessions:
            self.send(session_id, ww.Drain())

    def handle_force(self, sig: signal.Signals) -> None:
        log.warning("supervisor.forced", signal=sig.name, sessions=len(self.sessions))
        for record in self.sessions.values():
            self.terminate(record, f"forced by {sig.name}")

    async def _housekeeping(self) -> None:
        while True:
            now = time.monotonic()
            self.murder_stale(now)
            if self._drain_deadline is not None:
                if not self.sessions:
                    self._finished.set()
                elif now > self._drain_deadline:
                    for record in self.sessions.values():
                        self.send(record.session_id, ww.Stop("drain grace over"))
                        self.terminate(record, "drain grace over")
            await asyncio.sleep(TICK)

    # -- sockets ------------------------------------------------------------------------
    async def _worker_messages(self) -> None:
        while True:
            ident, data = await self._workers.recv_multipart()
            record = self.sessions.get(ident.decode())
            if record is None:
                continue
            try:
                msg = ww.decode(data)
            except ProtocolError as exc:
                log.error("worker.bad_message", session_id=record.session_id, error=str(exc))
                continue
            self.liveness.beat(record.session_id, time.monotonic())
            record.apply(msg)
            if isinstance(msg, ww.WorkerExiting):
                log.info("worker.exiting", session_id=record.session_id, reason=msg.reason)
            elif isinstance(msg, ww.WorkerReady) and self.admission.draining:
                self.send(record.session_id, ww.Drain())

    async def _control_requests(self) -> None:
        while True:
            frames = await self._control.recv_multipart()
            ident, body = frames[0], frames[-1]
            try:
                request = cw.decode(body)
            except ProtocolError as exc:
                log.warning("control.bad_request", error=str(exc))
                continue
            if isinstance(request, cw.StatusRequest):
                reply = cw.encode(self.status())
                await self._control.send_multipart([ident, b"", reply])

    def status(self) -> cw.StatusReply:
        now = time.monotonic()
        views = tuple(dataclasses.asdict(record.view(now)) for record in self.sessions.values())
        front = self.front
        return cw.StatusReply(
            mode=self.config.mode,
            endpoint_id=getattr(front, "endpoint_id", ""),
            ticket=getattr(front, "ticket", ""),
            draining=self.admission.draining,
            max_sessions=self.config.max_sessions,
            sessions=views,
        )


async def _control_answers(ctx: zmq.asyncio.Context, path: Path) -> bool:
    """True if a live supervisor answers on the control socket at ``path``."""
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{path}")
    try:
        await sock.send(cw.encode(cw.StatusRequest()))
        async with asyncio.timeout(0.5):
            await sock.recv()
        return True
    except TimeoutError:
        return False
    finally:
        sock.close(0)
