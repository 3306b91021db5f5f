"""The metrics options: a listener off loopback needs a private token file; the receiver's --quiet."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunnelpy.common import config as cfg
from tunnelpy.common import options as opts
from tunnelpy.common.errors import ConfigError
from tunnelpy.common.merge import RawValues

BASE = {"allowed_tcp": ["127.0.0.0/8"], "allow_any_receiver": True}
TOKEN = "0123456789abcdef0123456789abcdef"


def token_file(tmp_path: Path, mode: int = 0o600, text: str = TOKEN) -> str:
    path = tmp_path / "metrics.token"
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return str(path)


def sender(**values: object) -> cfg.SenderConfig:
    return cfg.sender_config_from("iroh", {**BASE, **values}, None)


def error(**values: object) -> str:
    with pytest.raises(ConfigError) as info:
        sender(**values)
    assert "\n" not in str(info.value)  # one line
    return str(info.value)


def test_off_by_default() -> None:
    config = sender()
    assert config.metrics_listen is None and config.metrics_token is None


def test_loopback_needs_no_token() -> None:
    assert sender(metrics_listen="127.0.0.1:9464").metrics_listen == ("127.0.0.1", 9464)
    assert sender(metrics_listen="[::1]:0").metrics_listen == ("::1", 0)


@pytest.mark.parametrize("address", ["0.0.0.0:9464", "192.0.2.7:9464", "[::]:9464"])
def test_non_loopback_without_token_is_refused_naming_the_flag(address: str) -> None:
    text = error(metrics_listen=address)
    assert "--metrics-listen" in text and "--metrics-token-file" in text


def test_non_loopback_with_a_private_token(tmp_path: Path) -> None:
    config = sender(metrics_listen="0.0.0.0:9464", metrics_token_file=token_file(tmp_path))
    assert config.metrics_token == TOKEN
    assert TOKEN not in repr(config)  # masked


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_token_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    text = error(metrics_listen="0.0.0.0:9464", metrics_token_file=token_file(tmp_path, mode))
    assert "--metrics-token-file" in text and "chmod 600" in text and f"{mode:o}" in text


def test_short_token_is_refused(tmp_path: Path) -> None:
    assert "at least 16" in error(metrics_listen="0.0.0.0:1", metrics_token_file=token_file(tmp_path, text="x"))


def test_missing_token_file(tmp_path: Path) -> None:
    assert "cannot read" in error(metrics_listen="0.0.0.0:1", metrics_token_file=str(tmp_path / "nope"))


def test_token_without_listener_is_refused(tmp_path: Path) -> None:
    assert "needs --metrics-listen" in error(metrics_token_file=token_file(tmp_path))


def test_bad_address_names_the_flag() -> None:
    assert error(metrics_listen="localhost:9464").startswith("--metrics-listen")


def test_yaml_keys(tmp_path: Path) -> None:
    path = tmp_path / "sender.yaml"
    token_file(tmp_path)
    path.write_text(
        "mode: iroh\nallowed_tcp: [127.0.0.0/8]\nallow_any_receiver: true\n"
        "metrics_listen: 0.0.0.0:9464\nmetrics_token_file: metrics.token\n"
    )
    config = cfg.sender_config_from(None, {}, str(path))
    assert config.metrics_listen == ("0.0.0.0", 9464) and config.metrics_token == TOKEN


def test_yaml_listener_off_loopback_without_token_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "sender.yaml"
    path.write_text("mode: iroh\nallowed_tcp: [127.0.0.0/8]\nallow_any_receiver: true\nmetrics_listen: 0.0.0.0:1\n")
    with pytest.raises(ConfigError, match=r"sender.yaml: metrics_listen .*--metrics-token-file"):
        cfg.sender_config_from(None, {}, str(path))


def test_receiver_quiet() -> None:
    raw = RawValues(opts.RECEIVER_OPTIONS, "iroh")
    raw.update_from_cli({"source": "tcp://127.0.0.1:22", "listen": "127.0.0.1:0", "node_id": "x", "quiet": True})
    assert cfg.build_receiver_config(raw).quiet is True
