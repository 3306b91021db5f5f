"""TURN options of the ICE modes: RFC 7065 URIs, credentials, YAML, and one-line errors naming the key."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tunnelpy.cli.main import build_parser
from tunnelpy.common import config as cfg
from tunnelpy.common.errors import ConfigError
from tunnelpy.common.merge import merge_receiver_values
from tunnelpy.common.turn import TurnOptions, TurnServer, parse_turn_uri

BASE = {"source": "tcp://127.0.0.1:22", "listen": "127.0.0.1:2222", "no_stun": True}
SENDER_YAML = "mode: custom-manual\nallowed_tcp: [127.0.0.0/8]\n"


def password_file(tmp_path: Path, mode: int = 0o600, text: str = "s3cret\n") -> str:
    path = tmp_path / "turn.pass"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def receiver(cli: dict, mode: str = "custom-manual", config: str | None = None) -> cfg.ReceiverConfig:  # type: ignore[type-arg]
    return cfg.build_receiver_config(merge_receiver_values(mode, BASE | cli, config))


def error(cli: dict, mode: str = "custom-manual", config: str | None = None) -> str:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        receiver(cli, mode, config)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("uri", "server"),
    [
        ("turn:198.18.0.10:3478", TurnServer("198.18.0.10", 3478)),
        ("turn:turn.example.net", TurnServer("turn.example.net", 3478)),
        ("turns:turn.example.net", TurnServer("turn.example.net", 5349, "tcp", tls=True)),
        ("turn:h:80?transport=tcp", TurnServer("h", 80, "tcp")),
        ("TURN:h:1?transport=UDP", TurnServer("h", 1)),
        ("turns:h:443?transport=tcp", TurnServer("h", 443, "tcp", tls=True)),
        ("turn:[2001:db8::1]:3479", TurnServer("2001:db8::1", 3479)),
        ("turn:[2001:db8::1]", TurnServer("2001:db8::1", 3478)),
    ],
)
def test_rfc7065_uris(uri: str, server: TurnServer) -> None:
    assert parse_turn_uri(uri, "--turn-server") == server
    assert parse_turn_uri(server.uri, "--turn-server") == server  # the canonical form parses back


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("stun:h:3478", "start it with turn: or turns:"),
        ("h:3478", "start it with turn: or turns:"),
        ("turn://h:3478", "a TURN URI has no // (RFC 7065): write turn:h:3478"),
        ("turn:h:", "the port must be a number from 1 to 65535"),
        ("turn:h:99999", "the port must be a number from 1 to 65535"),
        ("turn:h:abc", "the port must be a number from 1 to 65535"),
        ("turn::3478", "names no host"),
        ("turn:user@h:3478", "give it with --turn-user"),
        ("turn:2001:db8::1:3478", "write an IPv6 address in brackets"),
        ("turn:[2001:db8::1:3478", "needs its closing ]"),
        ("turn:[nothost]:3478", "is not an IPv6 address"),
        ("turn:h:3478?transport=sctp", "?transport=udp or ?transport=tcp"),
        ("turn:h:3478?foo=bar", "?transport=udp or ?transport=tcp"),
        ("turns:h:5349?transport=udp", "DTLS, which is not supported"),
    ],
)
def test_bad_uris_name_the_flag_and_the_fix(uri: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_turn_uri(uri, "--turn-server")
    assert str(info.value).startswith(f"--turn-server: {uri!r}")
    assert says in str(info.value)


def test_turn_options_from_flags(tmp_path: Path) -> None:
    secret = password_file(tmp_path)
    flags = {"turn_servers": ["turn:198.18.0.10:3478", "turns:t.example.net"], "turn_user": "alice"}
    config = receiver(flags | {"turn_password_file": secret})
    assert config.net.turn == TurnOptions(
        servers=(TurnServer("198.18.0.10", 3478), TurnServer("t.example.net", 5349, "tcp", tls=True)),
        username="alice",
        password="s3cret",
    )
    assert "s3cret" not in repr(config)


def test_no_turn_by_default_and_in_iroh_modes() -> None:
    assert receiver({}).net.turn == TurnOptions()
    iroh = receiver({"node_id": "ab" * 32, "no_stun": None}, mode="iroh")
    assert iroh.net.turn == TurnOptions()


def test_turn_keys_do_not_apply_to_iroh_modes(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("turn_servers: turn:h:3478\n")
    message = error({"node_id": "ab" * 32, "no_stun": None}, mode="iroh", config=str(path))
    assert "key 'turn_servers' does not apply to mode 'iroh' (only custom-manual, nostr)" in message


def test_yaml_takes_one_server_or_a_list_and_a_path_beside_the_file(tmp_path: Path) -> None:
    password_file(tmp_path)
    one = tmp_path / "one.yaml"
    one.write_text("turn_servers: turn:h:3478\nturn_user: bob\nturn_password_file: turn.pass\n")
    assert receiver({}, config=str(one)).net.turn.servers == (TurnServer("h", 3478),)
    listed = tmp_path / "list.yaml"
    listed.write_text("turn_servers: [turn:a:1, turn:b:2]\nturn_user: bob\nturn_password_file: turn.pass\n")
    turn = receiver({}, config=str(listed)).net.turn
    assert [s.host for s in turn.servers] == ["a", "b"] and turn.password == "s3cret"
    bad = tmp_path / "bad.yaml"
    bad.write_text("turn_servers: [turn:a:1, 'stun:b:2']\nturn_user: bob\nturn_password_file: turn.pass\n")
    assert error({}, config=str(bad)).startswith(f"{bad}: turn_servers: 'stun:b:2' is not a TURN URI")


def test_the_sender_takes_the_same_keys(tmp_path: Path) -> None:
    secret = password_file(tmp_path)
    path = tmp_path / "sender.yaml"
    path.write_text(SENDER_YAML + f"turn_servers: turn:h:3478\nturn_user: carol\nturn_password_file: {secret}\n")
    for mode in ("custom-manual", None):
        config = cfg.sender_config_from(mode, {}, str(path))
        assert config.net.turn.servers == (TurnServer("h", 3478),) and config.net.turn.username == "carol"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ({"turn_servers": ["turn:h:3478"]}, "--turn-server needs --turn-user U: TURN servers take"),
        ({"turn_servers": ["turn:h:3478"], "turn_user": "u"}, "--turn-server needs --turn-password-file F"),
        ({"turn_user": "u"}, "--turn-user needs --turn-server turn:HOST:PORT"),
        ({"turn_servers": ["turn:h:1", "turn:h:1"], "turn_user": "u"}, "a TURN server is listed twice"),
        ({"turn_servers": ["turn:h:1"], "turn_user": " "}, "--turn-user: the TURN user name is empty"),
    ],
)
def test_credential_errors(flags: dict, says: str) -> None:  # type: ignore[type-arg]
    assert says in error(flags)


def test_password_file_alone_and_unsafe_password_files(tmp_path: Path) -> None:
    secret = password_file(tmp_path)
    assert "--turn-password-file needs --turn-server" in error({"turn_password_file": secret})
    flags = {"turn_servers": ["turn:h:3478"], "turn_user": "u"}
    readable = password_file(tmp_path, mode=0o644)
    message = error(flags | {"turn_password_file": readable})
    assert message.startswith(f"--turn-password-file {readable}: mode 0644 lets others read it; run `chmod 600")
    empty = password_file(tmp_path, text="\n")
    assert "the file is empty; write the TURN password into a file" in error(flags | {"turn_password_file": empty})
    missing = str(tmp_path / "nope")
    assert error(flags | {"turn_password_file": missing}).startswith(f"--turn-password-file {missing}: cannot read")


def _mode_parsers(command: str) -> dict[str, argparse.ArgumentParser]:
    parser = build_parser(bench_options=False)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    modes = next(a for a in commands.choices[command]._actions if isinstance(a, argparse._SubParsersAction))
    return dict(modes.choices)


@pytest.mark.parametrize("command", ["sender", "receiver"])
def test_help_explains_the_turn_flags(command: str) -> None:
    parsers = _mode_parsers(command)
    for mode in ("custom-manual", "nostr"):
        text = " ".join(parsers[mode].format_help().split())
        for flag in ("--turn-server URI", "--turn-user USER", "--turn-password-file PATH"):
            assert flag in text, (command, mode, flag)
        assert "a relay candidate is gathered from each" in text
    assert "--turn-server" not in parsers["iroh"].format_help()


def test_the_commented_turn_keys_of_the_nostr_example_load(tmp_path: Path) -> None:
    """Uncommented, the example's TURN lines are a valid config (the example is not just prose)."""
    example = (Path(__file__).parents[2] / "deploy" / "examples" / "sender-nostr.yaml").read_text()
    turn_lines = [line for line in example.splitlines() if line.startswith("# turn_")]
    assert len(turn_lines) == 3
    text = example + "\n" + "\n".join(line.removeprefix("# ") for line in turn_lines) + "\n"
    (tmp_path / "sender.nsec").write_text("ab" * 32)
    (tmp_path / "sender.nsec").chmod(0o600)
    password_file(tmp_path)  # turn.pass, beside the config like the example says
    config_path = tmp_path / "sender-nostr.yaml"
    config_path.write_text(text)
    turn = cfg.sender_config_from(None, {}, str(config_path)).net.turn
    assert turn.servers == (TurnServer("turn.example.net", 3478), TurnServer("turn.example.net", 5349, "tcp", tls=True))
    assert (turn.username, turn.password) == ("tunnel", "s3cret")
