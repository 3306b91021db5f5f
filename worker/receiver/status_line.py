"""The receiver's live status line: one line on stderr, redrawn every second, on a TTY only.

``connected via direct · RTT 3 ms · ↑ 1.2 MB 310 KB/s · ↓ 48.0 MB 12.1 MB/s · 2 streams``

Shown while a receiver serves its tunnel, when stderr is a terminal, the log format is not
JSON and ``--quiet`` is not given: scripts get JSON log lines and nothing else. The line is
redrawn in place (``\\r`` + erase line) by a timer on the loop (no task: it only reads
counters); console log lines erase it before they print (:mod:`tunnelpy.common.logs`), and
the next tick draws it again below them. :func:`describe` is the pure part.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from tunnelpy.common.config import ReceiverConfig
from tunnelpy.worker.forwarding.tcp import Traffic
from tunnelpy.worker.transport.interface import Connection, TransportStats

REFRESH = 1.0
ERASE_LINE = "\r\x1b[2K"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


@dataclass(frozen=True, slots=True)
class Sample:
    """The counters at one instant, to turn two of them into rates."""

    at: float
    up: int
    down: int


def describe(stats: TransportStats, traffic: Traffic, now: Sample, before: Sample | None) -> str:
    """The status line for these counters (``before``: the previous sample, for the rates)."""
    dt = now.at - before.at if before is not None else 0.0
    rate_up = (now.up - before.up) / dt if before is not None and dt > 0 else 0.0
    rate_down = (now.down - before.down) / dt if before is not None and dt > 0 else 0.0
    rtt = "RTT -" if stats.rtt_ms is None else f"RTT {stats.rtt_ms:.0f} ms"
    if stats.rtt_ms is not None and stats.rtt_ms < 1:  # iroh reports whole milliseconds: 0 means under one
        rtt = "RTT <1 ms"
    parts = [
        f"connected via {stats.path or 'unknown path'}" + (f" ({stats.route})" if stats.route else ""),
        rtt,
        f"↑ {_size(now.up)} {_size(rate_up)}/s",
        f"↓ {_size(now.down)} {_size(rate_down)}/s",
        f"{traffic.flows_open} flows" if traffic.flows_open else f"{traffic.streams_open} streams",
    ]
    if traffic.datagrams_dropped:
        parts.append(f"{traffic.datagrams_dropped} dropped")
    return " · ".join(parts)


class StatusLine:
    """Driven by a loop timer every :data:`REFRESH` seconds between :meth:`start` and :meth:`stop`."""

    def __init__(self, conn: Connection, traffic: Traffic, stream: TextIO) -> None:
        self._conn, self._traffic, self._stream = conn, traffic, stream
        self._before: Sample | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._shown = False

    def start(self) -> StatusLine:
        self._tick()
        return self

    def _tick(self) -> None:
        self._traffic.refresh()
        now = Sample(time.monotonic(), self._traffic.bytes_up, self._traffic.bytes_down)
        line = describe(self._conn.stats(), self._traffic, now, self._before)
        self._before = now
        width = shutil.get_terminal_size((100, 24)).columns
        self._write(ERASE_LINE + line[: max(10, width - 1)])  # never wrap: \r only returns one row
        self._shown = True
        self._timer = asyncio.get_running_loop().call_later(REFRESH, self._tick)

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # the terminal went away: stop drawing
            self.stop()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._shown:
            self._shown = False
            self._write(ERASE_LINE)


class NoStatusLine:
    """What a script gets: nothing."""

    def stop(self) -> None:
        pass


def start_status_line(conn: Connection, traffic: Traffic, cfg: ReceiverConfig) -> StatusLine | NoStatusLine:
    """A running status line if stderr is a TTY and neither ``--quiet`` nor JSON logs were asked for."""
    if cfg.quiet or cfg.log_format == "json" or not sys.stderr.isatty():
        return NoStatusLine()
    return StatusLine(conn, traffic, sys.stderr).start()
