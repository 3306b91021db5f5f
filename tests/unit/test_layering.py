"""The package layering, read from the source with ast: no upward imports, no I/O in sans-IO cores.

Layers, bottom up: common < signaling < worker < supervisor < bench, cli. A module may import
its own layer and the ones below it, never one above. The sans-IO cores (codecs, admission,
liveness, path-MTU search, ...) import no event loop, socket or ZeroMQ at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["common", "signaling", "worker", "supervisor", "bench", "cli"]
RANK = {"common": 0, "signaling": 1, "worker": 2, "supervisor": 3, "bench": 4, "cli": 4}
SANS_IO = [
    "common/messages.py",
    "common/modes.py",
    "signaling/session_wire.py",
    "signaling/manual_blocks.py",
    "signaling/ice_parameters.py",
    "signaling/nostr_wire.py",
    "signaling/nostr_restart.py",
    "worker/contract.py",
    "worker/forwarding/wire.py",
    "worker/transport/quic/pmtud.py",
    "supervisor/admission.py",
    "supervisor/liveness.py",
    "supervisor/throttle.py",
    "signaling/nostr_wire.py",
    "supervisor/control_wire.py",
    "worker/receiver/senders.py",
]
IO_MODULES = {"asyncio", "socket", "zmq", "selectors", "uvloop", "iroh", "aioice", "aioquic", "subprocess"}
MAX_LINES = 400


def modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module name ``path`` imports, at any depth (lazy imports inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_walk_sees_the_tree() -> None:
    assert len(modules()) > 50
    assert all((ROOT / path).is_file() for path in SANS_IO)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_upward_import(path: Path) -> None:
    layer = path.relative_to(ROOT).parts[0]
    upward = sorted(
        name
        for name in imported(path)
        if name.startswith("tunnelpy.")
        and name.split(".")[1] in RANK
        and RANK[name.split(".")[1]] > RANK[layer]
        and name.split(".")[1] != layer
    )
    assert not upward, f"{path.relative_to(ROOT)} ({layer}) imports a layer above it: {upward}"


@pytest.mark.parametrize("path", SANS_IO)
def test_sans_io_cores_import_no_io(path: str) -> None:
    io = sorted(name for name in imported(ROOT / path) if name.split(".")[0] in IO_MODULES)
    assert not io, f"{path} is a sans-IO core but imports {io}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (limit {MAX_LINES}): split it by role"


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The walk itself: an upward import written into a module is seen."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tunnelpy.supervisor.arbiter import Supervisor\n")
    assert "tunnelpy.supervisor.arbiter" in imported(bad)
