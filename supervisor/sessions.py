"""The session service (check, admit, spawn, wait for ready) and its record of each session."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunnelpy.common.allowlist import Source, parse_source, resolve
from tunnelpy.common.config import SenderConfig
from tunnelpy.common.errors import ConfigError, ProtocolError
from tunnelpy.common.logs import get_logger
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.supervisor.admission import Admission, Refusal, Refused
from tunnelpy.supervisor.control_wire import SessionView
from tunnelpy.supervisor.counters import Counters
from tunnelpy.worker import contract
from tunnelpy.worker.contract import SessionState

if TYPE_CHECKING:  # the pool imports this module
    from tunnelpy.supervisor.pool import WorkerPool

log = get_logger(__name__)

READY_TIMEOUT = 15.0
RESTART_TIMEOUT = 8.0  # a worker gathers its new ICE candidates (STUN, TURN) within this


@dataclass(slots=True)
class SessionRecord:
    """One session as the supervisor knows it: driven by worker messages (``apply``) and by the
    pool's spawn/reap."""

    session_id: str
    receiver_id: str
    source: str
    instance: str = ""  # the receiver process that asked (SessionRequest.instance)
    started: float = field(default_factory=time.monotonic)
    state: SessionState = SessionState.STARTING
    process: Any = None  # multiprocessing Process
    ready: asyncio.Future[contract.WorkerReady] | None = None  # how the receiver reaches the worker
    heartbeat: contract.Heartbeat | None = None
    term_sent_at: float | None = None
    restarts: dict[int, asyncio.Future[contract.IceRestarted]] = field(default_factory=dict)  # by generation

    def apply(self, msg: contract.Message) -> None:
        if isinstance(msg, contract.WorkerReady):
            self.state = SessionState.WAITING
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(msg)
        elif isinstance(msg, contract.Heartbeat):
            self.heartbeat = msg
            if self.state is not SessionState.STOPPING:
                self.state = msg.state
        elif isinstance(msg, contract.WorkerExiting):
            self.state = SessionState.EXITING
        elif isinstance(msg, contract.IceRestarted):
            waiting = self.restarts.pop(msg.generation, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(msg)

    def view(self, now: float) -> SessionView:
        hb = self.heartbeat
        return SessionView(
            session_id=self.session_id,
            receiver_id=self.receiver_id,
            source=self.source,
            state=self.state.value,
            age_s=round(now - self.started, 1),
            bytes_up=hb.bytes_up if hb else 0,
            bytes_down=hb.bytes_down if hb else 0,
            streams_open=hb.streams_open if hb else 0,
            streams_total=hb.streams_total if hb else 0,
            rtt_ms=hb.rtt_ms if hb else None,
            pid=self.process.pid if self.process is not None else None,
            flows_open=hb.flows_open if hb else 0,
            path=hb.path if hb else None,
            route=hb.route if hb else None,
            paths=list(hb.paths) if hb else [],
            lost_packets=hb.lost_packets if hb else 0,
            datagrams_dropped=hb.datagrams_dropped if hb else 0,
        )


@dataclass(frozen=True, slots=True)
class Opened:
    """An admitted session whose worker is ready: ``ready`` says how the receiver reaches it."""

    session_id: str
    ready: contract.WorkerReady


class SessionService:
    """What every front door calls: ``open_session`` turns a request into a ready worker or a
    :class:`Refused` the front door sends back in its own wire format."""

    def __init__(
        self,
        config: SenderConfig,
        admission: Admission,
        pool: WorkerPool,
        *,
        one_shot: bool,
        counters: Counters | None = None,
    ) -> None:
        self.config = config
        self.admission = admission
        self.pool = pool
        self.counters = counters if counters is not None else Counters()  # the arbiter passes the one it reports
        self.accept_timeout = contract.PASTE_WAIT if one_shot else contract.ACCEPT_TIMEOUT
        if config.nostr is not None:  # nostr mode: the sender's --max-wait
            self.accept_timeout = config.nostr.max_wait

    def authorize(self, receiver_id: str) -> Refused | None:
        """The identity check alone, for a front door that knows the peer before its request."""
        refused = self.admission.authorize(receiver_id)
        if refused is not None:
            log.warning("session.refused", reason=refused.reason.value, receiver_id=receiver_id)
            self.counters.session_refused(refused.reason)
        return refused

    async def open_session(
        self,
        receiver_id: str,
        source_text: str,
        rendezvous: contract.RendezvousSpec | None = None,
        *,
        instance: str = "",
        replaces: str = "",
    ) -> Opened | Refused:
        """Check, admit and spawn. Never raises for a user error: every refusal is an answer.

        ``instance``/``replaces`` (iroh mode) let a restarted or reconnecting receiver replace
        its own ghost sessions at once instead of waiting for their idle timeout."""
        requested = time.monotonic()
        if refused := self.authorize(receiver_id):
            return refused
        self._replace_ghosts(receiver_id, instance, replaces)
        try:
            source = parse_source(source_text, what="requested source")
        except ConfigError as exc:
            return self._refuse(Refused(Refusal.NOT_ALLOWED, str(exc)), receiver_id)
        session_id = secrets.token_hex(8)
        decision = self.admission.admit(session_id, receiver_id, time.monotonic(), (source, await resolve(source)))
        if isinstance(decision, Refused):
            return self._refuse(decision, receiver_id)
        self.counters.session_admitted()
        record = SessionRecord(session_id, receiver_id, str(source), instance)
        record.ready = asyncio.get_running_loop().create_future()
        self.pool.spawn_worker(record, self._spec(record, source, decision.addresses, rendezvous))
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                ready = await record.ready
        except (TimeoutError, ProtocolError) as exc:
            error = str(exc) or "not ready in time"
            log.error("session.worker_not_ready", session_id=session_id, error=error)
            self.pool.terminate(record, "not ready")
            self.counters.session_refused(Refusal.INTERNAL)
            boots = self.admission.boots
            if boots.failed(error, time.monotonic()):  # logged once per pause, not per request
                log.error("supervisor.flapping", failures=boots.failures, pause_s=boots.cooldown, error=error)
            return Refused(Refusal.INTERNAL, "the sender's worker failed to start")
        self.admission.boots.succeeded()
        self.counters.session_ready(time.monotonic() - requested)
        log.info(
            "session.opened",
            session_id=session_id,
            receiver_id=receiver_id,
            source=str(source),
            worker_pid=record.process.pid,
        )
        return Opened(session_id, ready)

    async def restart_ice(
        self, session_id: str, receiver_id: str, generation: int, ice: IceParameters
    ) -> IceParameters | str:
        """Ask the session's worker to restart ICE: its new parameters, or why not (a string).
        Only the receiver that owns the session may restart it."""
        record = self.pool.records.get(session_id)
        if record is None or record.receiver_id != receiver_id:
            return "no such session of this receiver"
        if record.state not in (SessionState.CONNECTED, SessionState.DRAINING) or record.term_sent_at is not None:
            return f"the session is {record.state.value}, not connected"
        waiting = record.restarts[generation] = asyncio.get_running_loop().create_future()
        self.pool.send(session_id, contract.IceRestart(generation, ice))
        try:
            async with asyncio.timeout(RESTART_TIMEOUT):
                answer = await waiting
        except TimeoutError:
            return f"the worker did not answer within {RESTART_TIMEOUT:g} s"
        finally:
            record.restarts.pop(generation, None)
        if answer.ice is None:
            return answer.error or "the worker could not restart ICE"
        log.info("session.ice_restart_started", session_id=session_id, generation=generation)
        return answer.ice

    def _replace_ghosts(self, receiver_id: str, instance: str, replaces: str) -> None:
        """End this receiver's sessions that a new request supersedes: the one it says it
        replaces, and any from another process of the same identity (it restarted)."""
        for record in list(self.pool.records.values()):
            if record.receiver_id != receiver_id or record.term_sent_at is not None:
                continue
            restarted = bool(instance and record.instance and record.instance != instance)
            if restarted or (replaces and record.session_id == replaces):
                log.info("session.replaced", session_id=record.session_id, receiver_id=receiver_id)
                self.pool.send(record.session_id, contract.Stop("replaced by a new session of its receiver"))
                self.pool.terminate(record, "replaced")
                self.admission.release(record.session_id)  # its slot is the new session's now

    def _refuse(self, refused: Refused, receiver_id: str) -> Refused:
        log.warning("session.refused", reason=refused.reason.value, receiver_id=receiver_id, error=refused.message)
        self.counters.session_refused(refused.reason)
        return refused

    def _spec(
        self,
        record: SessionRecord,
        source: Source,
        addresses: tuple[str, ...],
        rendezvous: contract.RendezvousSpec | None,
    ) -> contract.WorkerSpec:
        return contract.WorkerSpec(
            session_id=record.session_id,
            source=source,
            addresses=addresses,
            receiver_id=record.receiver_id,
            rendezvous=rendezvous or contract.RendezvousSpec(),
            net=self.config.net,
            control_endpoint=self.pool.endpoint,
            supervisor_pid=os.getpid(),
            log_format="console" if self.config.log_format == "console" else "json",
            log_level=self.config.log_level,
            accept_timeout=self.accept_timeout,
        )
