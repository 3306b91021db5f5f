"""Which baselines the bench runs: dumbpipe only where nothing but loopback exists, and
``--without`` leaves any baseline out (its row stays, marked)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tunnelpy.bench import run


def test_dumbpipe_runs_only_inside_a_loopback_only_namespace() -> None:
    assert run.dumbpipe_skipped(None) == "skipped: not installed (scripts/setup-dumbpipe)"
    interfaces = {line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]}
    if interfaces == {"lo"}:  # scripts/check: unshare --net with only lo
        assert run.only_loopback() and run.dumbpipe_skipped("/usr/bin/dumbpipe") is None
    else:
        assert not run.only_loopback()
        assert "unshare -n" in (run.dumbpipe_skipped("/usr/bin/dumbpipe") or "")


def test_without_leaves_baselines_out(tmp_path: Path) -> None:
    settings = run.Settings(1, 1, 1, (), frozenset(run.BASELINES))
    contenders, results, sshd = run.build_contenders(settings, tmp_path)
    assert [c.name for c in contenders] == ["direct"] and sshd is None
    assert {r.name: r.skipped for r in results if r.kind == "baseline"} == {
        "direct": None,
        "socat": run.LEFT_OUT,
        "dumbpipe": run.LEFT_OUT,
        "ssh -L": run.LEFT_OUT,
    }


def test_without_names_are_checked() -> None:
    assert run._baseline_list("socat, ssh") == {"socat", "ssh"}
    with pytest.raises(argparse.ArgumentTypeError, match="unknown baseline"):
        run._baseline_list("socat,telnet")
