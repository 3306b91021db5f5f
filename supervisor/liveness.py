"""Heartbeat bookkeeping, without I/O: which workers went quiet for longer than ``timeout``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Liveness:
    timeout: float
    _last: dict[str, float] = field(default_factory=dict)

    def beat(self, session_id: str, now: float) -> None:
        """Record a sign of life (registration counts as the first one)."""
        self._last[session_id] = now

    def forget(self, session_id: str) -> None:
        self._last.pop(session_id, None)

    def stale(self, now: float) -> list[str]:
        """Sessions whose last sign of life is older than ``timeout``; each reported once."""
        gone = [sid for sid, last in self._last.items() if now - last > self.timeout]
        for sid in gone:
            del self._last[sid]
        return gone
