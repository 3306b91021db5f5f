"""The test relay (:mod:`tunnelpy.bench.nostr_relay`), started per test, stopped after it.

A missing relay venv fails the test with the instruction to run scripts/setup-test-env, never
a skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tunnelpy.bench import nostr_relay as _relay
from tunnelpy.bench.nostr_relay import (
    MAX_EVENT_SIZE,
    RELAY_BIN,
    RELAY_VENV,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Relay,
    accepts_websocket,
    free_port,
)

__all__ = [
    "MAX_EVENT_SIZE",
    "RELAY_BIN",
    "RELAY_VENV",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "Relay",
    "accepts_websocket",
    "free_port",
    "relay_factory",
    "start_relay",
]


def start_relay(workdir: Path, *, max_event_size: int = MAX_EVENT_SIZE, running: bool = True) -> Relay:
    """A relay on a free 127.0.0.1 port, config and sqlite file under ``workdir``; started unless not ``running``."""
    if not RELAY_BIN.exists():  # this module's name, so a test can point it elsewhere
        pytest.fail(f"nostr-relay is not installed at {RELAY_VENV}: run scripts/setup-test-env")
    return _relay.start_relay(workdir, max_event_size=max_event_size, running=running)


@pytest.fixture
def relay_factory(tmp_path: Path) -> Iterator[Callable[..., Relay]]:
    """Call it (with start_relay's keywords) to start one more relay; all are stopped after the test."""
    started: list[Relay] = []

    def start(**options: Any) -> Relay:
        relay = start_relay(tmp_path / f"relay{len(started)}", **options)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()
