"""scripts/check runs the suite in a network namespace holding only lo: prove it, when it says so."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.mark.skipif(os.environ.get("TUNNELPY_ISOLATED") != "1", reason="not run by scripts/check as root")
def test_the_suite_sees_only_loopback() -> None:
    # /proc/net is per network namespace (/sys/class/net shows the host's: sysfs is not remounted)
    interfaces = {line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]}
    assert interfaces == {"lo"}, f"the test namespace has more than lo: {sorted(interfaces)}"
    routes = Path("/proc/net/route").read_text().splitlines()[1:]
    assert all(line.split()[0] == "lo" for line in routes), routes
