"""The supervisor's record of each session: identity, state, worker process and counters."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from tunnelpy.supervisor.control_wire import SessionView
from tunnelpy.worker import contract as ww


@dataclass(slots=True)
class SessionRecord:
    """Driven by worker messages (``apply``) and by the arbiter's spawn/reap."""

    session_id: str
    receiver_id: str
    source: str
    started: float = field(default_factory=time.monotonic)
    state: str = "starting"
    process: Any = None  # multiprocessing Process
    ready: asyncio.Future[ww.WorkerReady] | None = None  # how the receiver reaches the worker
    heartbeat: ww.Heartbeat | None = None
    term_sent_at: float | None = None

    def apply(self, msg: ww.Message) -> None:
        if isinstance(msg, ww.WorkerReady):
            self.state = "waiting"
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(msg)
        elif isinstance(msg, ww.Heartbeat):
            self.heartbeat = msg
            if self.state not in ("stopping",):
                self.state = msg.state
        elif isinstance(msg, ww.WorkerExiting):
            self.state = "exiting"

    def view(self, now: float) -> SessionView:
        hb = self.heartbeat
        return SessionView(
            session_id=self.session_id,
            receiver_id=self.receiver_id,
            source=self.source,
            state=self.state,
            age_s=round(now - self.started, 1),
            bytes_up=hb.bytes_up if hb else 0,
            bytes_down=hb.bytes_down if hb else 0,
            streams_open=hb.streams_open if hb else 0,
            streams_total=hb.streams_total if hb else 0,
            rtt_ms=hb.rtt_ms if hb else None,
            pid=self.process.pid if self.process is not None else None,
            flows_open=hb.flows_open if hb else 0,
        )
