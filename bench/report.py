"""The pure half of ``tunnel-py bench``: statistics over repeats, the JSON report and the table.

:mod:`tunnelpy.bench.run` measures and fills :class:`ContenderResult` objects;
:func:`build_report` turns them into one JSON-ready dict (medians, min-max, ratios against
``ssh -L`` and direct), and :func:`render_table` and :func:`~tunnelpy.bench.plot.write_plot` only read that dict,
so the table, the JSON and the chart always show the same figures.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

DIRECT, SSH = "direct", "ssh -L"
NOT_INSTALLED, NOT_IMPLEMENTED = "skipped: not installed", "skipped: mode not implemented"
SESSION_COUNTS = (1, 2, 4)
MEMORY_PHASES = ("idle", "load")
# Ratios are taken of medians; for latency and setup time a ratio above 1 means slower.
RATIO_METRICS = (
    "up_MBps",
    "down_MBps",
    "rtt_p50_us",
    "rtt_p99_us",
    "setup_s",
    *(f"sessions_{n}_MBps" for n in SESSION_COUNTS),
)


@dataclass
class Run:
    """One contender's turn in one repeat: flat ``metrics`` (name -> figure), the error that ended it."""

    repeat: int
    order: int = 0  # position of this turn within its repeat (the order rotates per repeat)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ContenderResult:
    """Every turn of one contender. ``kind`` is ``baseline`` or ``tunnel``; ``skipped`` says why it never ran."""

    name: str
    kind: str
    skipped: str | None = None
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def memory_key(role: str, phase: str, kind: str) -> str:
    """Metric name of one memory figure, e.g. ``mem.worker.load.pss_MB``."""
    return f"mem.{role}.{phase}.{kind}_MB"


def cpu_key(role: str) -> str:
    """Metric name of one process's CPU cost, e.g. ``cpu.worker.s_per_GB``."""
    return f"cpu.{role}.s_per_GB"


def parse_smaps_rollup(text: str) -> tuple[float, float]:
    """(RSS, PSS) in MB from the text of /proc/PID/smaps_rollup."""
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss"):
            fields[name] = int(rest.split()[0]) / 1024
    return fields["Rss"], fields["Pss"]


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def one_line(text: str, limit: int = 240) -> str:
    """A multi-line error (message + log tail) as its first and last lines, for a table cell."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    short = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"
    return short if len(short) <= limit else short[: limit - 3] + "..."


def _status(result: ContenderResult) -> str:
    if result.skipped:
        return result.skipped
    failed = [run for run in result.runs if run.error]
    if not failed:
        return "ok"
    if len(failed) == len(result.runs):
        return f"failed: {one_line(failed[0].error or '')}"
    return f"partial: {len(failed)} of {len(result.runs)} repeats failed"


def _summary(result: ContenderResult) -> dict[str, dict[str, float]]:
    values: dict[str, list[float]] = {}
    for run in result.runs:
        for key, value in run.metrics.items():
            values.setdefault(key, []).append(value)
    return {key: summarize(found) for key, found in sorted(values.items())}


def _ratios(summary: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    return {
        key: summary[key]["median"] / reference[key]["median"]
        for key in RATIO_METRICS
        if key in summary and key in reference and reference[key]["median"]
    }


def build_report(
    results: list[ContenderResult], machine: dict[str, Any], settings: dict[str, Any], date: str, duration_s: float
) -> dict[str, Any]:
    """The whole run as one JSON-ready dict: what ran where, every figure, summaries and ratios."""
    rows: list[dict[str, Any]] = []
    for result in results:
        rows.append(
            {
                "name": result.name,
                "kind": result.kind,
                "status": _status(result),
                "summary": _summary(result),
                "notes": result.notes,
                "runs": [
                    {"repeat": r.repeat, "order": r.order, "error": r.error, "notes": r.notes, "metrics": r.metrics}
                    for r in result.runs
                ],
            }
        )
    by_name = {row["name"]: row["summary"] for row in rows}
    for row in rows:
        row["ratios"] = {
            f"vs {ref}": _ratios(row["summary"], by_name[ref]) for ref in (SSH, DIRECT) if by_name.get(ref)
        }
    return {
        "tool": "tunnel-py bench",
        "date": date,
        "duration_s": round(duration_s, 1),
        "machine": machine,
        "settings": settings,
        "contenders": rows,
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


# ---- the table ------------------------------------------------------------------------------------


def num(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _cell(summary: dict[str, Any], key: str) -> str:
    figure = summary.get(key)
    if figure is None:
        return "-"
    text = num(figure["median"])
    if figure["n"] > 1 and figure["min"] != figure["max"]:
        text += f" ({num(figure['min'])}-{num(figure['max'])})"
    return text


def _ratio(row: dict[str, Any], ref: str, key: str) -> str:
    value = row["ratios"].get(f"vs {ref}", {}).get(key)
    return "-" if value is None else f"{value:.2f}x"


def _grid(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """Aligned text columns; a two-cell row (name, status) spans the figure columns."""
    full = [row for row in rows if len(row) == len(header)]
    widths = [max(len(r[i]) for r in [header, *full]) for i in range(len(header))]
    widths[0] = max(widths[0], *(len(r[0]) for r in rows)) if rows else widths[0]
    lines = [
        title,
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))),
    ]
    for row in rows:
        if len(row) != len(header):
            lines.append(f"{row[0].ljust(widths[0])}  {row[1]}")
        else:
            lines.append(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
    return [*lines, ""]


def _rows(report: dict[str, Any], cells) -> list[list[str]]:  # type: ignore[no-untyped-def]
    out = []
    for row in report["contenders"]:
        if row["status"].startswith(("skipped", "failed")):
            out.append([row["name"], row["status"]])
        else:
            out.append([row["name"], *cells(row)])
    return out


def render_table(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        f"tunnel-py bench  {report['date']}  {m['nproc']} CPU ({m['cpu_model']})  Linux {m['kernel']}  "
        f"python {m['python']}",
        f"{s['size_mb']} MB per transfer, {s['repeat']} repeat(s), contenders alternated round-robin; "
        f"figures are median (min-max) over repeats, ratios are of medians "
        f"(run took {report['duration_s']:.0f} s)",
        "",
    ]
    lines += _grid(
        "One TCP stream, MB/s",
        ["", "upload", "download", "up/ssh", "down/ssh", "up/direct", "down/direct"],
        _rows(
            report,
            lambda r: [
                _cell(r["summary"], "up_MBps"),
                _cell(r["summary"], "down_MBps"),
                _ratio(r, SSH, "up_MBps"),
                _ratio(r, SSH, "down_MBps"),
                _ratio(r, DIRECT, "up_MBps"),
                _ratio(r, DIRECT, "down_MBps"),
            ],
        ),
    )
    lines += _grid(
        f"Round trip of {s['message_bytes']}-byte messages, ping-pong on one connection ({s['rounds']} rounds), µs",
        ["", "p50", "p99", "p50/ssh", "p50/direct"],
        _rows(
            report,
            lambda r: [
                _cell(r["summary"], "rtt_p50_us"),
                _cell(r["summary"], "rtt_p99_us"),
                _ratio(r, SSH, "rtt_p50_us"),
                _ratio(r, DIRECT, "rtt_p50_us"),
            ],
        ),
    )
    lines += _grid(
        "Session setup, process start -> listening -> first echoed byte, s (iroh: a receiver, its sender "
        "already runs; copy-paste modes: a sender and a receiver per session)",
        ["", "listening", "first byte", "first byte/ssh"],
        _rows(
            report,
            lambda r: [_cell(r["summary"], "listening_s"), _cell(r["summary"], "setup_s"), _ratio(r, SSH, "setup_s")],
        ),
    )
    counts = [f"sessions_{n}_MBps" for n in SESSION_COUNTS]
    lines += _grid(
        f"Concurrent sessions (one forwarder process each; direct: connections), "
        f"aggregate upload of {s['size_mb']} MB, MB/s",
        ["", *(f"{n} session{'s' * (n > 1)}" for n in SESSION_COUNTS), "4/ssh", "4/direct"],
        _rows(
            report,
            lambda r: [
                *(_cell(r["summary"], key) for key in counts),
                _ratio(r, SSH, counts[-1]),
                _ratio(r, DIRECT, counts[-1]),
            ],
        ),
    )
    lines += _grid(
        "Memory, MB (RSS / PSS, medians; load = peak during the one-stream transfers; "
        "socat and sshd include their forked children)",
        ["", "process", "idle", "load"],
        _memory_rows(report),
    )
    lines += _grid(
        "CPU seconds per GB forwarded (user + system, during the one-stream upload + download; "
        "socat and sshd include their forked children)",
        ["", "process", "s/GB", "all processes"],
        _cpu_rows(report),
    )
    notes = [f"{row['name']}: {note}" for row in report["contenders"] for note in row["notes"]]
    for row in report["contenders"]:
        for run in row["runs"]:
            failed = [f"failed: {one_line(run['error'])}"] if run["error"] else []
            notes += [f"{row['name']} repeat {run['repeat']}: {note}" for note in failed + run["notes"]]
    if notes:
        lines += ["Notes", *notes, ""]
    return "\n".join(lines)


def memory_roles(summary: dict[str, Any], prefix: str = "mem.") -> list[str]:
    roles = {key.split(".")[1] for key in summary if key.startswith(prefix)}
    order = ["supervisor", "worker", "receiver"]
    return sorted(roles, key=lambda role: (order.index(role) if role in order else len(order), role))


def _memory_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for row in report["contenders"]:
        summary = row["summary"]
        for role in memory_roles(summary):
            cells = []
            for phase in MEMORY_PHASES:
                rss, pss = (summary.get(memory_key(role, phase, kind)) for kind in ("rss", "pss"))
                cells.append(f"{rss['median']:.1f} / {pss['median']:.1f}" if rss and pss else "-")
            out.append([row["name"], role, *cells])
    return out


def _cpu_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for row in report["contenders"]:
        summary = row["summary"]
        roles = memory_roles(summary, "cpu.")
        total = sum(summary[cpu_key(role)]["median"] for role in roles)
        for n, role in enumerate(roles):
            out.append([row["name"], role, _cell(summary, cpu_key(role)), num(total) if n == 0 else ""])
    return out


# ---- the chart ------------------------------------------------------------------------------------
