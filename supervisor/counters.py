"""The supervisor's event counters, without I/O: the one source of every number it reports.

Driven by the session service (``session_refused``, ``session_admitted``, ``session_ready``)
and by the arbiter when a worker is reaped (``session_ended``). :meth:`Counters.totals` folds
them with the live sessions' views into the ``totals`` of the control socket's status reply;
``tunnel-py status``, the dashboard and the Prometheus collector all read that one reply
(:mod:`tunnelpy.supervisor.metrics`), so they cannot disagree.

Totals over all sessions (bytes, streams, dropped datagrams) are the ended sessions' last
heartbeats plus the live sessions' current ones, so they only ever grow.
"""

from __future__ import annotations

import bisect
import signal
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tunnelpy.common.errors import ExitCode
from tunnelpy.supervisor.admission import Refusal
from tunnelpy.supervisor.control_wire import SessionView

# Request -> worker ready, seconds: a forkserver worker is ready in ~0.1-0.5 s on an idle host.
SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)
_SUMMED = ("bytes_up", "bytes_down", "streams_total", "datagrams_dropped")


def exit_labels(exitcode: int | None) -> tuple[str, str]:
    """(reason, signal) of a worker's exit status: the ExitCode name, or "killed" and the signal name."""
    if exitcode is None:
        return "unknown", ""
    if exitcode < 0:
        try:
            return "killed", signal.Signals(-exitcode).name
        except ValueError:
            return "killed", f"signal {-exitcode}"
    try:
        return ExitCode(exitcode).name.lower(), ""
    except ValueError:
        return f"exit {exitcode}", ""


@dataclass(slots=True)
class SetupHistogram:
    """Cumulative-bucket histogram of session setup times (the Prometheus model, no I/O)."""

    bounds: tuple[float, ...] = SETUP_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(SETUP_BUCKETS) + 1))  # last: +Inf
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def as_dict(self) -> dict[str, Any]:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(["+Inf" if bound == float("inf") else bound, running])
        return {"count": running, "sum": round(self.total, 6), "buckets": cumulative}


@dataclass(slots=True)
class Counters:
    """What happened to sessions since the supervisor started."""

    admitted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    exits: Counter[tuple[str, str]] = field(default_factory=Counter)
    ended: Counter[str] = field(default_factory=Counter)  # _SUMMED counters of ended sessions
    setup: SetupHistogram = field(default_factory=SetupHistogram)

    def session_refused(self, reason: Refusal) -> None:
        self.refused[reason.value] += 1

    def session_admitted(self) -> None:
        self.admitted += 1

    def session_ready(self, seconds: float) -> None:
        self.setup.observe(seconds)

    def session_ended(self, last: SessionView, exitcode: int | None) -> None:
        """A worker was reaped: keep its last counters in the totals and count its exit."""
        for name in _SUMMED:
            self.ended[name] += getattr(last, name)
        self.exits[exit_labels(exitcode)] += 1

    def totals(self, live: Iterable[SessionView]) -> dict[str, Any]:
        """The ``totals`` of a status reply: counters plus the sums over ended and ``live`` sessions."""
        summed = Counter(self.ended)
        streams_open = flows_open = 0
        for view in live:
            for name in _SUMMED:
                summed[name] += getattr(view, name)
            streams_open += view.streams_open
            flows_open += view.flows_open
        return {
            "sessions_admitted": self.admitted,
            # Every reason is listed, refused or not, so each series exists from the start.
            "sessions_refused": {reason.value: self.refused[reason.value] for reason in Refusal},
            "worker_exits": [
                {"reason": reason, "signal": sig, "count": count} for (reason, sig), count in sorted(self.exits.items())
            ],
            "setup_seconds": self.setup.as_dict(),
            **{name: summed[name] for name in _SUMMED},
            "streams_open": streams_open,
            "flows_open": flows_open,
        }
