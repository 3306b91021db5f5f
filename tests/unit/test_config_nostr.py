"""nostr mode's config: keys from flags, files or the environment, peers, relays, numbers, --listen."""

from __future__ import annotations

import shutil
from pathlib import Path

import nostr_sdk
import pytest
import yaml

from tunnelpy.cli.main import build_parser, build_supervisor_parser
from tunnelpy.common import config as cfg
from tunnelpy.common import options as opts
from tunnelpy.common.errors import ConfigError
from tunnelpy.common.merge import merge_receiver_values
from tunnelpy.common.options_nostr import DEFAULT_NOSTR_RELAYS
from tunnelpy.signaling import nostr_keys

EXAMPLE = Path(__file__).parents[2] / "deploy" / "examples" / "sender-nostr.yaml"
SENDER = nostr_sdk.Keys.generate()
RECEIVER = nostr_sdk.Keys.generate()
NSEC = SENDER.secret_key().to_bech32()
NPUB = RECEIVER.public_key().to_bech32()


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TUNNELPY_NSEC", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))


def sender(cli: dict, path: str | None = None) -> cfg.SenderConfig:  # type: ignore[type-arg]
    base = {"allowed_tcp": ["127.0.0.1/32"], "nsec": NSEC, "peer_npub": [NPUB]}
    return cfg.sender_config_from("nostr", {**base, **cli}, path)


def receiver(cli: dict) -> cfg.ReceiverConfig:  # type: ignore[type-arg]
    base = {"source": "tcp://127.0.0.1:22", "listen": "127.0.0.1:2222", "nsec": NSEC, "peer_npub": [NPUB]}
    raw = merge_receiver_values("nostr", {**base, **cli}, None)
    return cfg.build_receiver_config(raw)


def error(build, cli: dict) -> str:  # type: ignore[no-untyped-def, type-arg]
    with pytest.raises(ConfigError) as info:
        options = build(cli).nostr
        nostr_keys.identity(options)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_sender_defaults() -> None:
    config = sender({})
    assert config.max_sessions == 10 and config.authorized_keys is None
    assert config.nostr is not None
    assert config.nostr.relays == DEFAULT_NOSTR_RELAYS
    assert (config.nostr.republish_interval, config.nostr.max_wait) == (5.0, 120.0)
    assert config.net.stun_servers == opts.DEFAULT_STUN_SERVERS
    assert "nsec1" not in repr(config)  # the secret is masked
    keys, peers = nostr_keys.identity(config.nostr)
    assert keys.public_key().to_hex() == SENDER.public_key().to_hex()
    assert peers == (RECEIVER.public_key().to_hex(),)


def test_max_sessions_zero_means_unlimited_in_nostr_mode_only() -> None:
    assert sender({"max_sessions": 0}).max_sessions == 0
    for bad in (-1, 100_001):
        with pytest.raises(ConfigError, match=r"^--max-sessions: must be a number from 0 to 100000"):
            sender({"max_sessions": bad})
    with pytest.raises(ConfigError, match=r"^--max-sessions: must be a number from 1 to 100000"):
        cfg.sender_config_from(
            "iroh", {"allowed_tcp": ["127.0.0.1/32"], "allow_any_receiver": True, "max_sessions": 0}, None
        )


def test_keys_from_hex_the_environment_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hex_config = sender({"nsec": SENDER.secret_key().to_hex(), "peer_npub": [RECEIVER.public_key().to_hex()]})
    assert nostr_keys.identity(hex_config.nostr)[1] == (RECEIVER.public_key().to_hex(),)  # type: ignore[arg-type]
    monkeypatch.setenv("TUNNELPY_NSEC", NSEC)
    from_env = sender({"nsec": None})
    assert from_env.nostr is not None and from_env.nostr.secret_origin == "TUNNELPY_NSEC"
    key = tmp_path / "s.nsec"
    key.write_text(NSEC + "\n")
    key.chmod(0o600)
    from_file = sender({"nsec": None, "nsec_file": str(key)})  # a file beats the environment
    assert from_file.nostr is not None and from_file.nostr.secret_origin == f"--nsec-file {key}"


@pytest.mark.parametrize(
    ("cli", "start"),
    [
        ({"peer_npub": ["npub1nope"]}, "--peer-npub: invalid Nostr public key 'npub1nope'"),
        ({"peer_npub": [NSEC]}, "--peer-npub: this is a SECRET key"),
        ({"peer_npub": []}, "--peer-npub is required"),
        ({"nsec": "nsec1broken"}, "--nsec: invalid Nostr secret key"),
        ({"nsec": NPUB}, "--nsec: this is a public key"),
        ({"nsec": None}, "nostr mode needs our secret key"),
        ({"nsec_file": "/x.nsec"}, "--nsec and --nsec-file are mutually exclusive"),
        ({"relays": ["http://127.0.0.1:1"]}, "Nostr relay URL 'http://127.0.0.1:1' is not valid"),
    ],
)
def test_bad_keys_are_one_line_errors_naming_the_flag(cli: dict, start: str) -> None:  # type: ignore[type-arg]
    if "relays" in cli:
        from tunnelpy.signaling.nostr_signal import NostrSignal

        with pytest.raises(ConfigError) as info:
            options = sender(cli).nostr
            assert options is not None
            NostrSignal(nostr_sdk.Keys.generate(), options.relays)
        assert str(info.value).startswith(start)
        return
    assert error(sender, cli).startswith(start)


def test_a_group_readable_nsec_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "s.nsec"
    key.write_text(NSEC)
    key.chmod(0o640)
    text = error(sender, {"nsec": None, "nsec_file": str(key)})
    assert text.startswith(f"--nsec-file {key}: mode 0640 lets others read it") and NSEC not in text


def test_yaml_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"mode: nostr\nallowed_tcp: [127.0.0.1/32]\nnsec: {NSEC}\npeer_npub: [npub1bad]\nmax_wait: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}: max_wait: must be a number from 1 to 3600, got 0$"):
        cfg.sender_config_from(None, {}, str(path))
    path.write_text(f"mode: nostr\nallowed_tcp: [127.0.0.1/32]\nnsec: {NSEC}\npeer_npub: [npub1bad]\n")
    options = cfg.sender_config_from(None, {}, str(path)).nostr
    assert options is not None
    with pytest.raises(ConfigError, match=rf"^{path}: peer_npub: invalid Nostr public key"):
        nostr_keys.identity(options)


def test_the_example_config_loads(tmp_path: Path) -> None:
    copy = tmp_path / EXAMPLE.name
    shutil.copy(EXAMPLE, copy)
    nostr_keys.generate_key_file(tmp_path / "sender.nsec")
    config = cfg.sender_config_from(None, {}, str(copy))
    assert config.mode == "nostr" and config.max_sessions == 10 and config.nostr is not None
    assert len(nostr_keys.identity(config.nostr)[1]) == 1
    assert config.nostr.relays == tuple(yaml.safe_load(EXAMPLE.read_text())["relays"])  # parsed only, never contacted


def test_receiver_asks_exactly_one_sender() -> None:
    config = receiver({})
    assert config.nostr is not None and config.nostr.peers == (NPUB,) and config.target == ("127.0.0.1", 2222)
    assert error(receiver, {"peer_npub": [NPUB, NPUB]}).startswith("--peer-npub: a receiver asks one sender")
    assert error(receiver, {"peer_npub": None}).startswith("--peer-npub is required")


@pytest.mark.parametrize("flag", ["--listen", "--target", "-t"])
def test_listen_and_its_aliases(flag: str) -> None:
    args = build_parser(bench_options=False).parse_args(
        ["receiver", "custom-manual", "--source", "tcp://127.0.0.1:22", flag, "127.0.0.1:2222"]
    )
    assert args.listen == "127.0.0.1:2222"


@pytest.mark.parametrize("key", ["listen", "target"])
def test_listen_in_yaml_with_target_as_an_alias_key(tmp_path: Path, key: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(f"mode: custom-manual\nsource: tcp://127.0.0.1:22\n{key}: 127.0.0.1:2222\n")
    config = cfg.build_receiver_config(merge_receiver_values(None, {}, str(path)))
    assert config.target == ("127.0.0.1", 2222)
    path.write_text("mode: custom-manual\nsource: tcp://127.0.0.1:22\nlisten: 127.0.0.1:1\ntarget: 127.0.0.1:2\n")
    with pytest.raises(ConfigError, match="'target' and 'listen' are the same key"):
        merge_receiver_values(None, {}, str(path))
    path.write_text("mode: custom-manual\nsource: tcp://127.0.0.1:22\ntarget: nohost:2\n")
    with pytest.raises(ConfigError, match=rf"^{path}: target 'nohost:2'"):
        cfg.build_receiver_config(merge_receiver_values(None, {}, str(path)))


def test_supervisor_help_shows_each_modes_max_sessions_default() -> None:
    text = build_supervisor_parser().format_help()
    assert "(iroh: default: 100; 1 to 100000; nostr: default: 10; 0 to 100000)" in " ".join(text.split())
