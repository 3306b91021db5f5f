"""The clock and the one loop timer an aioquic connection runs on.

aioquic asks for a wake-up at an absolute time (``get_timer()``) and is told the time with
every input. On uvloop, whose timers tick in whole milliseconds, both need care; see
:meth:`QuicTimer.now` and :meth:`QuicTimer.arm`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

TIMER_RESOLUTION = 0.001  # libuv (uvloop) timers tick in whole milliseconds


class QuicTimer:
    """A loop handle that calls ``on_fire`` at the time last given to :meth:`arm`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_fire: Callable[[], None]) -> None:
        self._loop = loop
        self._on_fire = on_fire
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None
        self._clock = 0.0  # the last time given to aioquic

    def now(self) -> float:
        """aioquic's clock: time.monotonic(), never going back. Not loop.time(): uvloop's
        ticks in whole milliseconds, so aioquic's pacer saw no time pass and spun on a timer
        that fires at once, and every RTT sample was floored at 1 ms. Timers are set with
        call_later(delay), so the two clocks never need to agree."""
        self._clock = max(self._clock, time.monotonic())
        return self._clock

    def arm(self, at: float | None) -> None:
        """Fire at ``at`` (a :meth:`now` time), or never for None; re-arming is cheap."""
        if at == self._at:
            return
        self.cancel()
        self._at = at
        if at is None:
            return
        # Never sleep less than the loop's timer resolution: a sooner wake-up (aioquic's
        # pacer often asks for a few microseconds) would spin. The pacer's bucket holds
        # more than that (_TimerFriendlyPacer), so the wait costs no throughput.
        delay = at - self.now()
        self._handle = self._loop.call_later(max(delay, TIMER_RESOLUTION) if delay > 0 else 0, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._at = None

    def _fire(self) -> None:
        self._handle = self._at = None
        self._on_fire()
