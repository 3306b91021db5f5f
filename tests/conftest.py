"""Fixtures shared by every tier."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def any_receiver() -> list[str]:
    return ["--allow-any-receiver", "--allowed-tcp", "127.0.0.0/8", "--allowed-udp", "127.0.0.0/8"]
