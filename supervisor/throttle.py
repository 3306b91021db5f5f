"""Limits on unauthenticated work at a front door, without I/O (like OpenSSH's MaxStartups).

A peer that has not proven who it may be costs the sender a handshake; :class:`FrontDoorGuard`
bounds that cost: at most ``max_startups`` handshakes at once (the next one is refused before
any crypto); an address whose handshakes keep failing (silent, garbage, unknown identity) is
refused before any crypto for a while (a token bucket of failures per address); and one
identity's requests are rate limited, so one peer cannot make the sender spend its time on it.
Time is passed in; memory is bounded (:class:`KeyedRate` forgets idle keys, never holds more
than ``max_keys``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class KeyedRate:
    """At most ``burst`` events per ``window`` seconds per key (a token bucket per key)."""

    burst: int
    window: float
    max_keys: int = 4096
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)  # key -> (tokens, at)

    def allow(self, key: str, now: float) -> bool:
        """Take a token if there is one; False when ``key`` is over its rate."""
        tokens = self._tokens(key, now)
        allowed = tokens >= 1.0
        self._store(key, tokens - 1.0 if allowed else tokens, now)
        return allowed

    def has_room(self, key: str, now: float) -> bool:
        """Whether ``key`` has a token left, without taking it."""
        return self._tokens(key, now) >= 1.0

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.burst / self.window)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets.pop(key, None)
        self._buckets[key] = (tokens, now)  # most recent last
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)  # the longest-idle key: it would be full again soonest

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(slots=True)
class FrontDoorGuard:
    """Driven by the front door: ``incoming`` before a handshake, ``identified`` once the peer's
    identity is known, ``finished`` when the handshake's work is over (whatever the outcome).
    Each check returns None (go on) or the reason for the log."""

    max_startups: int = 32
    failures_per_address: KeyedRate = field(default_factory=lambda: KeyedRate(burst=20, window=60.0))
    per_identity: KeyedRate = field(default_factory=lambda: KeyedRate(burst=30, window=60.0))  # as admission's
    in_flight: int = 0

    def incoming(self, address: str, now: float) -> str | None:
        if self.in_flight >= self.max_startups:
            return f"{self.in_flight} handshakes already in progress (max_startups {self.max_startups})"
        if not self.failures_per_address.has_room(address, now):
            return f"too many failed handshakes from {address}; refused for a while"
        self.in_flight += 1
        return None

    def failed(self, address: str, now: float) -> None:
        """A handshake from ``address`` ended without an authenticated request."""
        self.failures_per_address.allow(address, now)

    def identified(self, identity: str, now: float) -> str | None:
        if not self.per_identity.allow(identity, now):
            return "too many requests from this identity"
        return None

    def finished(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
