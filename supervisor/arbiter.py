"""The supervisor's arbiter: its lifecycle, signals, draining and the control socket.

Modelled on gunicorn's arbiter: signal handlers only queue the signal and the loop
dispatches (first SIGTERM/SIGINT drains, a second forces). The arbiter owns the pieces and
wires them: the mode's :class:`~tunnelpy.supervisor.front.FrontDoor` (signaling), the
:class:`~tunnelpy.supervisor.sessions.SessionService` it calls (admission and spawning), and
the :class:`~tunnelpy.supervisor.pool.WorkerPool` (one process per session).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from tunnelpy.common.config import SenderConfig, default_control_dir
from tunnelpy.common.errors import ConfigError, ExitCode, ProtocolError, TunnelError
from tunnelpy.common.logs import get_logger
from tunnelpy.common.private_files import private_dir
from tunnelpy.supervisor import control_wire as cw
from tunnelpy.supervisor.admission import Admission
from tunnelpy.supervisor.counters import Counters
from tunnelpy.supervisor.front import FrontDoor
from tunnelpy.supervisor.launcher import WorkerLauncher
from tunnelpy.supervisor.pool import WorkerPool
from tunnelpy.supervisor.sessions import SessionRecord, SessionService
from tunnelpy.supervisor.web import WebListener
from tunnelpy.worker import contract

log = get_logger(__name__)

TICK = 0.5
TRIM_INTERVAL = 10.0


def release_free_memory() -> None:
    """Return free heap pages to the system (glibc's malloc_trim; a no-op elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


_LIBC = _glibc()


class Supervisor:
    """Driven by :meth:`run`: its loops take signals, worker messages, control requests and a
    housekeeping tick. ``one_shot`` stops it once the first session's worker is gone (the
    copy-paste modes)."""

    def __init__(self, config: SenderConfig, launcher: WorkerLauncher, rundir: Path, *, one_shot: bool = False) -> None:
        """``rundir``: the private run folder (its owner, the CLI, removes it)."""
        self.config = config
        self.one_shot = one_shot
        self.admission = Admission(
            config.max_sessions,
            authorized=config.authorized_keys,
            allowed=config.allowed,
            max_pending=config.max_pending,
        )
        self._zmq = zmq.asyncio.Context()
        self.pool = WorkerPool(
            launcher,
            self._zmq,
            rundir,
            config.heartbeat_timeout,
            on_reaped=self._session_ended,
            on_connected=lambda record: self.admission.connected(record.session_id),
        )
        self.counters = Counters()
        self.service = SessionService(config, self.admission, self.pool, one_shot=one_shot, counters=self.counters)
        self.web = WebListener(config.metrics_listen, config.metrics_token, self) if config.metrics_listen else None
        self.front: FrontDoor | None = None
        self._control = self._zmq.socket(zmq.ROUTER)
        self._control.setsockopt(zmq.LINGER, 0)
        self._signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
        self._drain_deadline: float | None = None
        self._finished = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------
    async def run(self, make_front: Callable[[SessionService], FrontDoor]) -> ExitCode:
        """Serve until a drain completes; ``make_front`` builds the mode's front door."""
        loop = asyncio.get_running_loop()
        self.front = front = make_front(self.service)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signals.put_nowait, sig)
        await self._bind_control()
        if self.web is not None:
            await self.web.bind()
        startup_error: TunnelError | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                loops = (
                    self.pool.serve_messages(lambda: self.admission.draining),
                    self._control_requests(),
                    self._housekeeping(),
                    self._signal_loop(),
                    *([self.web.serve()] if self.web is not None else []),
                )
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
    async def _start_front(front: FrontDoor) -> TunnelError | None:
        try:
            await front.start()
        except TunnelError as exc:
            return exc
        return None

    def _session_ended(self, record: SessionRecord) -> None:
        self.admission.release(record.session_id)
        self.counters.session_ended(record.view(time.monotonic()), record.process.exitcode)
        if self.one_shot:
            self._finished.set()

    def _close(self) -> None:
        self.pool.close()
        self._control.close(0)
        self._zmq.term()
        with contextlib.suppress(FileNotFoundError):
            self.config.control.unlink()

    async def _bind_control(self) -> None:
        path = self.config.control
        if path.parent == default_control_dir():
            # predictable names, possibly in the shared /tmp: each folder must be ours alone
            if not os.environ.get("XDG_RUNTIME_DIR"):
                private_dir(path.parent.parent, "--control")
            private_dir(path.parent, "--control")
        else:
            private_dir(path.parent, "--control", readable=True)
        if path.exists():
            if await _control_answers(self._zmq, path):
                raise ConfigError(
                    f"--control {path}: another supervisor is running there; stop it or choose another --control path"
                )
            path.unlink()
        try:
            self._control.bind(f"ipc://{path}")
            os.chmod(path, 0o600)
        except (zmq.ZMQError, OSError) as exc:
            raise ConfigError(f"--control {path}: cannot listen there ({exc}); choose another --control path") from exc

    # -- signals and draining ---------------------------------------------------------
    async def _signal_loop(self) -> None:
        while True:
            sig = await self._signals.get()
            if self.admission.draining:
                self.handle_force(sig)
            else:
                self.handle_drain(sig)

    def handle_drain(self, sig: signal.Signals | str) -> None:
        """Drain on the first signal, or on an operator's request (``sig``: what asked for it)."""
        why = sig.name if isinstance(sig, signal.Signals) else sig
        log.info("supervisor.draining", signal=why, sessions=len(self.pool.records), grace=self.config.drain_grace)
        self.admission.draining = True
        self._drain_deadline = time.monotonic() + self.config.drain_grace
        self.pool.broadcast(contract.Drain())

    def handle_force(self, sig: signal.Signals) -> None:
        log.warning("supervisor.forced", signal=sig.name, sessions=len(self.pool.records))
        self.pool.terminate_all(f"forced by {sig.name}")

    async def _housekeeping(self) -> None:
        next_trim = 0.0
        while True:
            now = time.monotonic()
            self.pool.murder_stale(now)
            if now >= next_trim:
                # glibc keeps freed memory of a burst (1,000 handshakes) in its arenas; give it back.
                release_free_memory()
                next_trim = now + TRIM_INTERVAL
            if self._drain_deadline is not None:
                if not self.pool.records:
                    self._finished.set()
                elif now > self._drain_deadline:
                    self.pool.broadcast(contract.Stop("drain grace over"))
                    self.pool.terminate_all("drain grace over")
            await asyncio.sleep(TICK)

    # -- control socket ------------------------------------------------------------------
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
        """The one snapshot behind ``tunnel-py status``, the dashboard and ``/metrics``."""
        now = time.monotonic()
        views = [record.view(now) for record in self.pool.records.values()]
        return cw.StatusReply(
            mode=self.config.mode,
            endpoint_id=self.front.endpoint_id if self.front else "",
            ticket=self.front.ticket if self.front else "",
            draining=self.admission.draining,
            max_sessions=self.config.max_sessions,
            sessions=tuple(cw.view_dict(view) for view in views),
            totals=self.counters.totals(views),
            pending=self.admission.pending,
            max_pending=self.admission.max_pending or 0,
        )

    # -- operator actions (the dashboard) ---------------------------------------------
    def close_session(self, session_id: str) -> bool:
        """Ask one session's worker to stop; False if there is no such session."""
        record = self.pool.records.get(session_id)
        if record is None:
            return False
        log.info("session.closing", session_id=session_id, why="operator")
        if record.state is contract.SessionState.STARTING:  # not on the socket yet: a Stop would be lost
            self.pool.terminate(record, "closed by the operator")
        else:
            self.pool.send(session_id, contract.Stop("closed by the operator"))
        return True

    def drain(self) -> None:
        """Drain as SIGTERM would (a second request does nothing: only a signal forces)."""
        if not self.admission.draining:
            self.handle_drain("operator")


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
