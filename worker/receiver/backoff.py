"""Reconnect delays without I/O: exponential backoff with full jitter, capped.

The n-th retry waits a random time in [base * 2**n / 2, base * 2**n] (so a fleet of receivers
that lost the same sender does not come back in lockstep), never more than ``cap`` seconds.
The random draw is passed in, so tests are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Backoff:
    cap: float = 30.0
    base: float = 0.5
    attempts: int = 0

    def next_delay(self, draw: float) -> float:
        """The delay before the next try; ``draw`` is uniform in [0, 1)."""
        ceiling = min(self.cap, self.base * 2**self.attempts)
        self.attempts += 1
        return ceiling / 2 + ceiling / 2 * draw

    def reset(self) -> None:
        self.attempts = 0
