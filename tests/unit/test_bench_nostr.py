"""The bench's nostr mode: shown as skipped, with the fix, where the local relay is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnelpy.bench import nostr_peers, nostr_relay
from tunnelpy.bench.modes import unavailable
from tunnelpy.common.modes import Mode


def test_nostr_is_skipped_without_the_relay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(nostr_relay, "RELAY_BIN", tmp_path / "absent" / "nostr-relay")
    assert unavailable(Mode.NOSTR) == "skipped: nostr-relay not installed (scripts/setup-nostr-relay)"
    assert unavailable(Mode.IROH) is None
    with pytest.raises(nostr_relay.RelayNotInstalled, match="scripts/setup-nostr-relay"):
        nostr_relay.start_relay(tmp_path / "relay")
    assert nostr_peers.NOT_INSTALLED.startswith("skipped:")
