"""The `nat_lab` fixture: a factory of NAT labs (tests/nat/lab.py), torn down after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.nat.lab import Lab, LabUnavailable, NatKind

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.nat)


@pytest.fixture
def nat_lab() -> Iterator[Callable[..., Lab]]:
    labs: list[Lab] = []

    def build(left: NatKind = NatKind.CONE, right: NatKind = NatKind.CONE) -> Lab:
        try:
            lab = Lab(left, right)
        except LabUnavailable as exc:
            pytest.skip(f"no NAT lab here: {exc} (needs root and network namespaces)")
        labs.append(lab)
        return lab

    yield build
    for lab in labs:
        lab.close()
