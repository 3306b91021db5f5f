"""nostr_keys: bech32 and hex keys accepted, malformed input named by flag, key files."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import nostr_sdk
import pytest

from tunnelpy.common.errors import ConfigError, ExitCode
from tunnelpy.signaling import nostr_keys

KEYS = nostr_sdk.Keys.generate()
NSEC = KEYS.secret_key().to_bech32()
SECRET_HEX = KEYS.secret_key().to_hex()
NPUB = KEYS.public_key().to_bech32()
PUBLIC_HEX = KEYS.public_key().to_hex()


@pytest.mark.parametrize("text", [NSEC, SECRET_HEX, SECRET_HEX.upper(), f"  {NSEC}\n"])
def test_secret_key_in_bech32_or_hex(text: str) -> None:
    assert nostr_keys.parse_secret_key(text).public_key().to_hex() == PUBLIC_HEX


@pytest.mark.parametrize("text", [NPUB, PUBLIC_HEX, PUBLIC_HEX.upper(), f"{NPUB}\n"])
def test_public_key_in_bech32_or_hex(text: str) -> None:
    assert nostr_keys.parse_public_key(text) == PUBLIC_HEX


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not a Nostr secret key"),
        ("hunter2", "not a Nostr secret key"),
        (SECRET_HEX[:-1], "not a Nostr secret key"),
        (NSEC[:-1] + ("q" if NSEC[-1] != "q" else "p"), "invalid Nostr secret key"),
        ("0" * 64, "invalid Nostr secret key"),
        (NPUB, "public key"),
    ],
)
def test_malformed_secret_key_names_the_flag_and_hides_the_value(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as info:
        nostr_keys.parse_secret_key(text, "--nsec")
    message = str(info.value)
    assert message.startswith("--nsec: ") and "\n" not in message
    assert info.value.exit_code is ExitCode.CONFIG
    if len(text) > 8:
        assert text not in message


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not a Nostr public key"),
        ("npub", "not a Nostr public key"),
        (PUBLIC_HEX + "00", "not a Nostr public key"),
        (NPUB[:-1] + ("q" if NPUB[-1] != "q" else "p"), "invalid Nostr public key"),
        ("0" * 64, "invalid Nostr public key"),  # 32 bytes, but not a point on the curve
        (NSEC, "SECRET key"),
    ],
)
def test_malformed_public_key_names_the_flag(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as info:
        nostr_keys.parse_public_key(text, "--peer-npub")
    assert str(info.value).startswith("--peer-npub: ") and "\n" not in str(info.value)
    assert NSEC not in str(info.value)


def test_generated_key_file_is_0600_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "sender.nsec"
    npub = nostr_keys.generate_key_file(path)
    assert npub.startswith("npub1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("nsec1") and path.read_text().endswith("\n")
    assert nostr_keys.show_npub(path) == npub
    keys = nostr_keys.load_secret_key_file(path)
    assert keys.public_key().to_bech32() == npub
    assert nostr_keys.npub_of(keys.public_key().to_hex()) == npub


def test_generate_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "sender.nsec"
    first = nostr_keys.generate_key_file(path)
    with pytest.raises(ConfigError, match="--force"):
        nostr_keys.generate_key_file(path)
    assert nostr_keys.show_npub(path) == first  # untouched
    second = nostr_keys.generate_key_file(path, force=True)
    assert second != first and nostr_keys.show_npub(path) == second


def test_key_file_whitespace_is_stripped_and_hex_works(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(f"\n  {SECRET_HEX}  \n\n")
    path.chmod(0o600)
    assert nostr_keys.load_secret_key_file(path).public_key().to_hex() == PUBLIC_HEX


@pytest.mark.parametrize("content", ["", "\n", "   \n\t\n"])
def test_empty_key_file_is_an_error_not_a_fresh_key(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.nsec"
    path.write_text(content)
    with pytest.raises(ConfigError, match="empty") as info:
        nostr_keys.load_secret_key_file(path)
    assert str(info.value).startswith(f"--nsec-file {path}: ")
    assert path.read_text() == content  # nothing was written into it


def test_missing_and_malformed_key_files_name_the_flag_and_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file.*generate-nostr-key"):
        nostr_keys.load_secret_key_file(tmp_path / "absent")
    bad = tmp_path / "bad"
    bad.write_text(NPUB + "\n")
    bad.chmod(0o600)
    with pytest.raises(ConfigError, match="^" + re.escape(f"-n {bad}: this is a public key")):
        nostr_keys.show_npub(bad)


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604])
def test_a_key_file_others_can_read_is_refused_in_one_line(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "shared.nsec"
    path.write_text(NSEC)
    os.chmod(path, mode)
    with pytest.raises(ConfigError) as info:
        nostr_keys.load_secret_key_file(path)
    text = str(info.value)
    assert text.startswith(f"--nsec-file {path}: mode {mode:04o} lets others read it") and "\n" not in text
    assert f"chmod 600 {path}" in text and NSEC not in text
