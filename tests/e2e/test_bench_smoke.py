"""``tunnel-py bench`` end to end at a tiny size, at its default modes: it completes and its JSON has every row.

Figures are not checked (they depend on the machine); every implemented mode must be
measured, with the memory of its supervisor, worker and receiver; socat and ssh -L must be
measured where installed and marked "skipped: not installed" where not.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import orjson
import pytest

pytestmark = pytest.mark.e2e


TUNNELS = ["iroh", "iroh-manual", "custom-manual", "nostr"]  # nostr: the bench starts its local relay


@pytest.mark.timeout(100)
def test_bench_reports_every_row(tmp_path):
    report_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    plot = ["--plot", str(plot_path)] if importlib.util.find_spec("matplotlib") else []  # an optional extra
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunnelpy.bench.run",
            "--size",
            "2",
            "--repeat",
            "1",
            "--rounds",
            "200",
            "--idle-sessions",
            "3",
            "--without",  # dumbpipe waits 5 s per side for n0's relays offline; tests/unit covers its skip
            "dumbpipe",
            "--json",
            str(report_path),
            *plot,
        ],  # no --log-dir: a deep one makes the senders' socket paths too long
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = orjson.loads(report_path.read_bytes())
    rows = {row["name"]: row for row in report["contenders"]}
    assert list(rows) == ["direct", "socat", "dumbpipe", "ssh -L", *TUNNELS]
    assert rows["dumbpipe"]["status"] == "skipped: left out (--without)", rows["dumbpipe"]
    figures = {"up_MBps", "down_MBps", "rtt_p50_us", "rtt_p99_us", "setup_s", "sessions_4_MBps"}
    for name in ("direct", *TUNNELS):
        assert rows[name]["status"] == "ok", rows[name]
        assert figures <= set(rows[name]["summary"])
    for name, tool in (("socat", "socat"), ("ssh -L", "sshd")):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            assert rows[name]["status"] == "skipped: not installed", rows[name]
        else:  # a baseline that failed here still has its row; its figures are then what got measured
            assert figures <= set(rows[name]["summary"]) or rows[name]["status"].startswith("failed"), rows[name]
    for name in TUNNELS:  # every process ended cleanly, each copy-paste sender by itself after its session
        assert rows[name]["notes"] == [] and rows[name]["runs"][0]["notes"] == [], rows[name]
        summary = rows[name]["summary"]
        assert {f"mem.{role}.load.pss_MB" for role in ("supervisor", "worker", "receiver")} <= set(summary)
        assert {f"cpu.{role}.s_per_GB" for role in ("worker", "receiver")} <= set(summary), sorted(summary)
    idle = report["idle_sessions"]
    assert idle["sessions"] == idle["workers_measured"] == 3 and idle["worker_pss_median_MB"] > 0, idle
    assert report["machine"]["nproc"] >= 1 and report["date"]
    assert "One TCP stream" in done.stdout
    assert "CPU seconds per GB forwarded" in done.stdout
    assert not plot or plot_path.read_bytes().startswith(b"\x89PNG")
