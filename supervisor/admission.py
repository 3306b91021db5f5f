"""Admission control, without I/O: every decision on who may open a session now.

One core decides, in this order: the receiver's identity (``authorized``: None admits any
receiver), draining, the requested source against the allow-lists (given the addresses it
resolved to: resolving is I/O and happens before), ``max_sessions``, and a cap on
re-admission storms: one receiver may be admitted at most ``per_receiver_burst`` times per
``window`` seconds, so a receiver stuck in a reconnect loop cannot keep the sender spawning
workers. Decisions take ``now`` as a parameter and return :class:`Admitted` or
:class:`Refused`; each front door turns a refusal into its own wire message.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from tunnelpy.common.allowlist import AllowLists, Source, SourceNotAllowed, SourceUnresolvable


class Refusal(enum.StrEnum):
    """Why a session was refused; the values are the session wire's reject reasons."""

    UNAUTHORIZED = "unauthorized"
    NOT_ALLOWED = "not_allowed"
    AT_CAPACITY = "at_capacity"
    DRAINING = "draining"
    SOURCE_UNREACHABLE = "source_unreachable"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Admitted:
    session_id: str
    addresses: tuple[str, ...] = ()  # the checked addresses the worker will dial


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Refusal
    message: str


@dataclass(slots=True)
class BootGuard:
    """The flapping guard: workers that fail at start again and again must not make the sender
    spawn one per request forever. After ``limit`` failures in a row the sender refuses new
    sessions for ``cooldown`` seconds (then tries again); one success resets the count."""

    limit: int = 5
    cooldown: float = 30.0
    failures: int = 0
    last_error: str = ""
    _until: float = 0.0

    def failed(self, error: str, now: float) -> bool:
        """Record a failed start; True when this one starts a cool-down (log it once)."""
        self.failures += 1
        self.last_error = error
        if self.failures >= self.limit and now >= self._until:
            self._until = now + self.cooldown
            return True
        return False

    def succeeded(self) -> None:
        self.failures = 0
        self._until = 0.0

    def check(self, now: float) -> Refused | None:
        if now < self._until:
            return Refused(
                Refusal.INTERNAL,
                f"the sender's workers keep failing at start ({self.failures} in a row, last: {self.last_error}); "
                f"it pauses new sessions for {self._until - now:.0f} s",
            )
        return None


@dataclass(slots=True)
class Admission:
    """Driven by the session service (``admit``/``release``) and the arbiter (``draining``)."""

    max_sessions: int
    authorized: frozenset[str] | None = None
    allowed: AllowLists = field(default_factory=AllowLists)
    max_pending: int | None = None  # sessions admitted whose receiver has not connected yet
    per_receiver_burst: int = 30
    window: float = 60.0
    draining: bool = False
    _active: dict[str, str] = field(default_factory=dict)  # session_id -> receiver_id
    _pending: set[str] = field(default_factory=set)
    boots: BootGuard = field(default_factory=lambda: BootGuard())
    _recent: dict[str, deque[float]] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        """Admitted sessions whose receiver has not reached its worker yet (what --max-pending caps)."""
        return len(self._pending)

    def authorize(self, receiver_id: str) -> Refused | None:
        """The identity check alone: cheap, so a front door can make it as soon as a peer connects."""
        if self.authorized is not None and receiver_id not in self.authorized:
            return Refused(Refusal.UNAUTHORIZED, f"receiver {receiver_id} is not in the sender's --authorized-keys")
        return None

    def check_source(self, source: Source, resolved: Iterable[str]) -> Admitted | Refused:
        """The allow-list decision for ``source`` resolved to ``resolved`` (session id left empty)."""
        try:
            return Admitted("", self.allowed.check(source, resolved))
        except SourceNotAllowed as exc:
            return Refused(Refusal.NOT_ALLOWED, str(exc))
        except SourceUnresolvable as exc:
            return Refused(Refusal.SOURCE_UNREACHABLE, str(exc))

    def admit(
        self, session_id: str, receiver_id: str, now: float, source: tuple[Source, Iterable[str]] | None = None
    ) -> Admitted | Refused:
        """Take a slot for ``session_id`` or say why not; ``source`` is (source, its resolved addresses)."""
        if refused := self.authorize(receiver_id):
            return refused
        if self.draining:
            return Refused(Refusal.DRAINING, "the sender is shutting down; try again later")
        if refused := self.boots.check(now):
            return refused
        addresses: tuple[str, ...] = ()
        if source is not None:
            checked = self.check_source(*source)
            if isinstance(checked, Refused):
                return checked
            addresses = checked.addresses
        if self.max_sessions and len(self._active) >= self.max_sessions:  # 0 = unlimited (nostr mode)
            return Refused(
                Refusal.AT_CAPACITY,
                f"sender at capacity ({len(self._active)}/{self.max_sessions} sessions); try again later",
            )
        if self.max_pending is not None and len(self._pending) >= self.max_pending:
            return Refused(
                Refusal.AT_CAPACITY,
                f"{len(self._pending)} sessions are waiting for their receivers to connect; try again shortly",
            )
        self._forget_quiet_receivers(now)
        recent = self._recent.setdefault(receiver_id, deque())
        if len(recent) >= self.per_receiver_burst:
            return Refused(
                Refusal.AT_CAPACITY,
                f"too many sessions from this receiver ({len(recent)} in {self.window:.0f} s); slow down",
            )
        recent.append(now)
        self._active[session_id] = receiver_id
        self._pending.add(session_id)
        return Admitted(session_id, addresses)

    def connected(self, session_id: str) -> None:
        """The session's receiver reached its worker: it no longer counts as pending."""
        self._pending.discard(session_id)

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
        self._pending.discard(session_id)
        return self._active.pop(session_id, None) is not None

    @property
    def active(self) -> int:
        return len(self._active)
