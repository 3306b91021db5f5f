"""Admission control, without I/O: who may open a session now, and the slots they hold.

Decisions take ``now`` as a parameter. Besides ``max_sessions`` it caps re-admission storms:
one receiver may be admitted at most ``per_receiver_burst`` times per ``window`` seconds, so
a receiver stuck in a reconnect loop cannot keep the sender spawning workers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from tunnelpy.signaling.session_wire import RejectReason


@dataclass(frozen=True, slots=True)
class Admitted:
    session_id: str


@dataclass(frozen=True, slots=True)
class Refused:
    reason: RejectReason
    message: str


@dataclass(slots=True)
class Admission:
    max_sessions: int
    per_receiver_burst: int = 30
    window: float = 60.0
    draining: bool = False
    _active: dict[str, str] = field(default_factory=dict)  # session_id -> receiver_id
    _recent: dict[str, deque[float]] = field(default_factory=dict)

    def admit(self, session_id: str, receiver_id: str, now: float) -> Admitted | Refused:
        if self.draining:
            return Refused(RejectReason.DRAINING, "the sender is shutting down; try again later")
        if len(self._active) >= self.max_sessions:
            return Refused(
                RejectReason.AT_CAPACITY,
                f"sender at capacity ({len(self._active)}/{self.max_sessions} sessions); try again later",
            )
        self._forget_quiet_receivers(now)
        recent = self._recent.setdefault(receiver_id, deque())
        if len(recent) >= self.per_receiver_burst:
            return Refused(
                RejectReason.AT_CAPACITY,
                f"too many sessions from this receiver ({len(recent)} in {self.window:.0f} s); slow down",
            )
        recent.append(now)
        self._active[session_id] = receiver_id
        return Admitted(session_id)

    def _forget_quiet_receivers(self, now: float) -> None:
        """Drop admissions older than the window, and receivers with none left (bounded memory)."""
        for receiver_id in list(self._recent):
            recent = self._recent[receiver_id]
            while recent and now - recent[0] > self.window:
                recent.popleft()
            if not recent:
                del self._recent[receiver_id]

    def release(self, session_id: str) -> bool:
        """Free a slot; False if the session held none (already released)."""
        return self._active.pop(session_id, None) is not None

    @property
    def active(self) -> int:
        return len(self._active)
