"""The PNG of a bench report (matplotlib, an optional extra): it only reads the report dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunnelpy.bench import report as br
from tunnelpy.common.errors import ConfigError


def require_matplotlib() -> None:
    """Fail before measuring anything if --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "--plot needs matplotlib, an optional dependency: pip install 'tunnel-py[bench]' "
            "(or pip install matplotlib), or drop --plot"
        ) from exc


def _bars(
    ax,
    rows: list[dict[str, Any]],
    series: list[tuple[str, str]],
    title: str,
    unit: str,  # type: ignore[no-untyped-def]
    log: bool,
) -> None:
    """Grouped bars: one group per contender, one bar per (metric key, label); whiskers span min-max."""
    width = 0.8 / len(series)
    # Many bars: value labels stand upright; many groups: names slant. Either way none overlap.
    upright, slant = len(rows) * len(series) > 12, len(rows) > 5
    for i, (key, label) in enumerate(series):
        xs, heights, low, high = [], [], [], []
        for x, row in enumerate(rows):
            figure = row["summary"].get(key)
            if figure:
                xs.append(x + (i - (len(series) - 1) / 2) * width)
                heights.append(figure["median"])
                low.append(figure["median"] - figure["min"])
                high.append(figure["max"] - figure["median"])
        bars = ax.bar(xs, heights, width, yerr=[low, high], capsize=3, label=label)
        ax.bar_label(bars, labels=[br.num(h) for h in heights], fontsize=7, padding=2, rotation=90 if upright else 0)
    ax.set_xticks(
        range(len(rows)),
        [row["name"] for row in rows],
        rotation=30 if slant else 0,
        ha="right" if slant else "center",
        rotation_mode="anchor",
    )
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.15)
    ax.legend(fontsize=8)


def write_plot(report: dict[str, Any], path: Path) -> None:
    """A 2x3 PNG: throughput, latency, setup, concurrency, memory, and a text panel with the context."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in report["contenders"] if row["summary"]]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    _bars(
        axes[0, 0],
        rows,
        [("up_MBps", "upload"), ("down_MBps", "download")],
        "One TCP stream (MB/s, log scale, higher is better)",
        "MB/s",
        log=True,
    )
    _bars(
        axes[0, 1],
        rows,
        [("rtt_p50_us", "p50"), ("rtt_p99_us", "p99")],
        f"Round trip, {report['settings']['message_bytes']} B ping-pong (µs, log scale, lower is better)",
        "µs",
        log=True,
    )
    _bars(
        axes[0, 2],
        rows,
        [("listening_s", "listening"), ("setup_s", "first echoed byte")],
        "Session setup from process start (s, lower is better)",
        "s",
        log=False,
    )
    _bars(
        axes[1, 0],
        rows,
        [(f"sessions_{n}_MBps", f"{n} session{'s' * (n > 1)}") for n in br.SESSION_COUNTS],
        "Concurrent sessions, aggregate upload (MB/s, log scale)",
        "MB/s",
        log=True,
    )
    _memory_panel(axes[1, 1], rows)
    _context_panel(axes[1, 2], report)
    m = report["machine"]
    fig.suptitle(
        f"tunnel-py bench, {report['date']}: {m['nproc']} CPU {m['cpu_model']}, Linux {m['kernel']}; "
        f"bars = median of {report['settings']['repeat']} repeat(s), whiskers = min-max",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _memory_panel(ax, rows: list[dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    procs = [
        {
            "name": row["name"] if role == row["name"] else f"{row['name']} {role}",
            "summary": {
                phase: row["summary"][br.memory_key(role, phase, "pss")]
                for phase in br.MEMORY_PHASES
                if br.memory_key(role, phase, "pss") in row["summary"]
            },
        }
        for row in rows
        for role in br.memory_roles(row["summary"])
    ]
    if not procs:
        ax.set_axis_off()
        return
    _bars(ax, procs, [("idle", "idle"), ("load", "under load")], "Memory per process, PSS (MB)", "MB", log=False)
    ax.tick_params(axis="x", labelsize=7)


def _context_panel(ax, report: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    ax.set_axis_off()
    s = report["settings"]
    text = [f"{s['size_mb']} MB per transfer, {s['rounds']} ping-pong rounds", ""]
    for row in report["contenders"]:
        if row["status"] != "ok":
            text.append(f"{row['name']}: {row['status'][:60]}")
            continue
        for ref, ratios in row["ratios"].items():
            if row["name"] != ref.removeprefix("vs ") and "up_MBps" in ratios:
                text.append(
                    f"{row['name']} {ref}: upload {ratios['up_MBps']:.2f}x, download "
                    f"{ratios.get('down_MBps', 0):.2f}x, p50 latency {ratios.get('rtt_p50_us', 0):.2f}x"
                )
    ax.text(0, 1, "\n".join(text), va="top", ha="left", fontsize=8.5, family="monospace", wrap=True)
