"""The Prometheus side of the supervisor: a registry whose collectors read the status snapshot.

Nothing here counts anything. :class:`StatusCollector` asks for the supervisor's status reply
(the same :class:`~tunnelpy.supervisor.control_wire.StatusReply` that ``tunnel-py status`` and
the dashboard read) at scrape time and turns it into metric families. Per-session series are
built from the live session records of that snapshot, so a session's series disappear with
it: no labelled gauge to remember to remove, and at most ``--max-sessions`` of each.

Workers' memory (RSS and PSS from ``/proc/PID/smaps_rollup``) is read at scrape time too,
but each worker's reading is kept for about :data:`MEMORY_MAX_AGE` seconds (jittered, so the
reads spread over scrapes): the kernel walks a process's page tables to sum them, about
1.5 ms of CPU per 50 MB worker here, so reading 100 workers at every scrape would cost
150 ms (``scripts/measure-scrape-cpu``). The supervisor's own CPU, memory and file
descriptors come from prometheus_client's process collector. Every name starts with
``tunnelpy_`` and uses base units (bytes, seconds).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tunnelpy.supervisor import control_wire as cw
from tunnelpy.worker.contract import SessionState

PREFIX = "tunnelpy"
CONTENT_TYPE = CONTENT_TYPE_LATEST
SESSION_LABELS = ("session_id",)  # the receiver, source, state and path are on tunnelpy_session_info
MEMORY_MAX_AGE = 10.0  # seconds a worker's RSS/PSS reading is reused (on average; jittered +-50 %)


def read_smaps_rollup(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) of ``pid`` in bytes, or None if it is gone or unreadable."""
    rss = pss = None
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return (rss, pss) if rss is not None and pss is not None else None


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)


class StatusCollector(Collector):
    """Driven by the registry at every scrape: ``snapshot()`` is the supervisor's status."""

    def __init__(
        self,
        snapshot: Callable[[], cw.StatusReply],
        read_memory: Callable[[int], tuple[int, int] | None] = read_smaps_rollup,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._read_memory = read_memory
        self._clock = clock
        self._memory: dict[int, tuple[float, tuple[int, int] | None]] = {}  # pid -> (due again at, reading)

    def _worker_memory(self, pids: list[int]) -> dict[int, tuple[int, int] | None]:
        """Each live worker's (RSS, PSS), read again once its reading is due."""
        now = self._clock()
        kept = {}
        for pid in pids:
            due, reading = self._memory.get(pid, (now, None))
            if due <= now:
                due, reading = now + MEMORY_MAX_AGE * random.uniform(0.5, 1.5), self._read_memory(pid)
            kept[pid] = (due, reading)
        self._memory = kept  # workers gone since the last scrape are forgotten
        return {pid: reading for pid, (_, reading) in kept.items()}

    def collect(self) -> Iterator[Metric]:
        reply = self._snapshot()
        yield from self._sender(reply)
        yield from self._totals(reply.totals)
        yield from self._sessions(reply.sessions)

    @staticmethod
    def _sender(reply: cw.StatusReply) -> Iterator[Metric]:
        yield _gauge("sessions_active", "Sessions with a live worker.", len(reply.sessions))
        yield _gauge("sessions_limit", "The sender's --max-sessions.", reply.max_sessions)
        yield _gauge("draining", "1 while the sender drains (refuses new sessions).", int(reply.draining))
        states = GaugeMetricFamily(f"{PREFIX}_sessions", "Live sessions by state.", labels=["state"])
        counts = dict.fromkeys(SessionState, 0)  # every state has a series, 0 or not
        for session in reply.sessions:
            counts[SessionState(session["state"])] += 1
        for state, count in sorted(counts.items()):
            states.add_metric([state], count)
        yield states

    @staticmethod
    def _totals(totals: dict[str, Any]) -> Iterator[Metric]:
        yield _counter("sessions_admitted", "Sessions admitted (a worker was spawned).", totals["sessions_admitted"])
        rejected = CounterMetricFamily(
            f"{PREFIX}_sessions_rejected", "Session requests refused, by reason.", labels=["reason"]
        )
        for reason, count in totals["sessions_refused"].items():
            rejected.add_metric([reason], count)
        yield rejected
        setup = totals["setup_seconds"]
        yield HistogramMetricFamily(
            f"{PREFIX}_session_setup_seconds",
            "Time from a session request to its worker being ready.",
            buckets=[(str(le), count) for le, count in setup["buckets"]],
            sum_value=setup["sum"],
        )
        moved = CounterMetricFamily(
            f"{PREFIX}_bytes",
            "Bytes forwarded over all sessions; up = receiver to source, down = source to receiver.",
            labels=["direction"],
        )
        moved.add_metric(["up"], totals["bytes_up"])
        moved.add_metric(["down"], totals["bytes_down"])
        yield moved
        yield _counter(
            "streams_opened", "TCP streams opened over all sessions (receivers open them).", totals["streams_total"]
        )
        yield _gauge("streams_open", "TCP streams open now.", totals["streams_open"])
        yield _gauge("udp_flows_open", "UDP flows (local clients) open now.", totals["flows_open"])
        yield _counter(
            "udp_datagrams_dropped",
            "UDP datagrams dropped because a tunnel's send queue was full.",
            totals["datagrams_dropped"],
        )
        exits = CounterMetricFamily(
            f"{PREFIX}_worker_exits",
            "Workers reaped, by exit reason (exit code name, or killed) and killing signal.",
            labels=["reason", "signal"],
        )
        for item in totals["worker_exits"]:
            exits.add_metric([item["reason"], item["signal"]], item["count"])
        yield exits

    def _sessions(self, sessions: tuple[dict[str, Any], ...]) -> Iterator[Metric]:
        def family(kind: type, name: str, doc: str, extra: tuple[str, ...] = ()) -> Any:
            return kind(f"{PREFIX}_session_{name}", doc, labels=[*SESSION_LABELS, *extra])

        info = family(
            GaugeMetricFamily,
            "info",
            "1 per live session: its receiver, source, state, path and ICE route (join on session_id).",
            ("receiver_id", "source", "state", "path", "route"),
        )
        uptime = family(GaugeMetricFamily, "uptime_seconds", "Seconds since the session was requested.")
        rtt = family(GaugeMetricFamily, "rtt_seconds", "Round-trip time of the session's path (once measured).")
        lost = family(CounterMetricFamily, "lost_packets", "Packets the session's transport counted as lost.")
        moved = family(CounterMetricFamily, "bytes", "Bytes forwarded by this session.", ("direction",))
        streams = family(GaugeMetricFamily, "streams_open", "TCP streams open in this session.")
        dropped = family(CounterMetricFamily, "udp_datagrams_dropped", "UDP datagrams this session dropped.")
        rss = GaugeMetricFamily(f"{PREFIX}_worker_resident_memory_bytes", "Worker RSS.", labels=list(SESSION_LABELS))
        pss = GaugeMetricFamily(
            f"{PREFIX}_worker_proportional_memory_bytes", "Worker PSS.", labels=list(SESSION_LABELS)
        )
        memory_of = self._worker_memory([s["pid"] for s in sessions if s["pid"]])
        for s in sessions:
            ids = [s["session_id"]]
            info.add_metric(
                [*ids, s["receiver_id"], s["source"], s["state"], s["path"] or "unknown", s["route"] or ""], 1
            )
            uptime.add_metric(ids, s["age_s"])
            if s["rtt_ms"] is not None:
                rtt.add_metric(ids, s["rtt_ms"] / 1000)
            lost.add_metric(ids, s["lost_packets"])
            moved.add_metric([*ids, "up"], s["bytes_up"])
            moved.add_metric([*ids, "down"], s["bytes_down"])
            streams.add_metric(ids, s["streams_open"])
            dropped.add_metric(ids, s["datagrams_dropped"])
            memory = memory_of.get(s["pid"]) if s["pid"] else None
            if memory is not None:
                rss.add_metric(ids, memory[0])
                pss.add_metric(ids, memory[1])
        yield from (info, uptime, rtt, lost, moved, streams, dropped, rss, pss)


def make_registry(snapshot: Callable[[], cw.StatusReply]) -> CollectorRegistry:
    """A registry of its own (never the global one): the status collector and the process collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(snapshot))
    ProcessCollector(namespace=PREFIX, registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in the Prometheus text format."""
    return generate_latest(registry)
