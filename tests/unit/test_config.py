"""One typed config: defaults < YAML < CLI, unknown keys refused, errors that name their origin."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from tunnelpy.common import config as cfg
from tunnelpy.common import options as opts
from tunnelpy.common.allowlist import AllowLists, Proto, Source
from tunnelpy.common.errors import ConfigError, ExitCode
from tunnelpy.common.merge import RawValues
from tunnelpy.common.private_files import read_authorized_keys

REPO = Path(__file__).parents[2]
EXAMPLES = REPO / "deploy" / "examples"
KEY_A = "5343809b921a022f46776c2299edab193df2241fe44a53ad4fa9f16e5b34bdb0"
KEY_B = "ab" * 32
MINIMAL = "mode: iroh\nallowed_tcp: [127.0.0.0/8]\nallow_any_receiver: true\n"


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private XDG_RUNTIME_DIR, so the default control path is known and not the user's."""
    path = tmp_path / "run"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    return path


def write(tmp_path: Path, text: str, name: str = "sender.yaml") -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if name.endswith(".key"):
        path.chmod(0o600)  # secret files must be private (a group/world-readable one is refused)
    return str(path)


def config_error(*args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        cfg.sender_config_from(*args)
    assert info.value.exit_code is ExitCode.CONFIG
    return str(info.value)


# -- defaults and precedence ---------------------------------------------------------------


def test_defaults(tmp_path: Path, runtime_dir: Path) -> None:
    config = cfg.sender_config_from(None, {}, write(tmp_path, MINIMAL))
    assert config == cfg.SenderConfig(
        mode="iroh",
        allowed=AllowLists(tcp=(ipaddress.ip_network("127.0.0.0/8"),), udp=()),
        net=cfg.NetOptions(),
        max_sessions=100,
        secret=None,
        authorized_keys=None,
        ticket_file=None,
        control=runtime_dir / "tunnel-py" / "supervisor.sock",
        drain_grace=30.0,
        heartbeat_timeout=10.0,
        log_format="auto",
        log_level="info",
    )


def test_a_key_in_both_tables_has_one_default() -> None:
    sender = {o.key: o for o in opts.SENDER_OPTIONS}
    for option in opts.RECEIVER_OPTIONS:
        if option.key in sender:
            assert option.default == sender[option.key].default, option.key


def test_model_defaults_are_the_option_table_defaults() -> None:
    """A model's field default is the table's default for that key (written once, there)."""
    keys = {o.key for o in (*opts.SENDER_OPTIONS, *opts.RECEIVER_OPTIONS)}
    # Resolved at build time, not defaults: None in the table means "the public STUN servers"
    # (a model holds the servers in use) and "the per-user socket path" (default_control_path).
    keys -= {"stun_servers", "control"}
    checked = 0
    for model in (cfg.SenderConfig, cfg.ReceiverConfig, cfg.NetOptions):
        for f in dataclasses.fields(model):
            if f.name in keys and f.default is not dataclasses.MISSING:
                assert f.default == opts.default_of(f.name), f"{model.__name__}.{f.name}"
                checked += 1
    assert checked >= 15
    net = cfg.NetOptions()
    assert (net.relay_urls, net.no_relay, net.bind) == ((), False, None)


def test_without_a_file_cli_values_are_enough() -> None:
    config = cfg.sender_config_from(
        "iroh", {"allowed_udp": ["10.0.0.0/8"], "allow_any_receiver": True, "max_sessions": 3}, None
    )
    assert config.allowed.udp == (ipaddress.ip_network("10.0.0.0/8"),)
    assert config.allowed.tcp == ()
    assert config.max_sessions == 3


def test_yaml_overrides_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL + "max_sessions: 5\ndrain_grace: 2.5\nheartbeat_timeout: 3\nlog_level: debug\nlog_format: json\n"
        "no_relay: true\nbind: '[::]:7777'\nrelay_urls: [https://relay.example.net]\n",
    )
    config = cfg.sender_config_from("iroh", {}, path)
    assert (config.max_sessions, config.drain_grace, config.heartbeat_timeout) == (5, 2.5, 3)
    assert (config.log_level, config.log_format) == ("debug", "json")
    assert config.net == cfg.NetOptions(relay_urls=("https://relay.example.net",), no_relay=True, bind=("::", 7777))


def test_cli_list_replaces_yaml_list(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("[127.0.0.0/8]", "[127.0.0.0/8, 10.0.0.0/8]"))
    config = cfg.sender_config_from("iroh", {"allowed_tcp": ["192.168.0.0/16"]}, path)
    assert config.allowed.tcp == (ipaddress.ip_network("192.168.0.0/16"),)


def test_cli_scalar_overrides_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "max_sessions: 5\nlog_level: warning\n")
    config = cfg.sender_config_from("iroh", {"max_sessions": 7, "log_level": "error"}, path)
    assert (config.max_sessions, config.log_level) == (7, "error")


def test_unset_cli_values_leave_yaml_alone(tmp_path: Path) -> None:
    # argparse gives None for every flag not on the command line, bools included.
    path = write(tmp_path, MINIMAL + "max_sessions: 5\nallowed_udp: [10.0.0.0/8]\n")
    cli = {"max_sessions": None, "allowed_udp": None, "allow_any_receiver": None, "allowed_tcp": None}
    config = cfg.sender_config_from("iroh", cli, path)
    assert config.max_sessions == 5
    assert config.authorized_keys is None  # allow_any_receiver: true from the file still holds
    assert config.allowed.udp == (ipaddress.ip_network("10.0.0.0/8"),)


def test_empty_file_is_no_keys(tmp_path: Path) -> None:
    config = cfg.sender_config_from(
        "iroh", {"allowed_tcp": ["127.0.0.1/32"], "allow_any_receiver": True}, write(tmp_path, "# nothing yet\n")
    )
    assert config.mode == "iroh"


# -- keys and modes ------------------------------------------------------------------------


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "max_session: 5\n")
    text = config_error("iroh", {}, path)
    assert text.startswith(f"{path}: unknown key 'max_session'; valid keys: ")
    assert "max_sessions" in text


def test_key_of_another_mode_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "stun_servers: [stun.example.net:3478]\n")
    assert config_error("iroh", {}, path) == (
        f"{path}: key 'stun_servers' does not apply to mode 'iroh' (only iroh-manual, custom-manual, nostr)"
    )


def test_mode_of_file_must_match_the_command(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("mode: iroh", "mode: nostr"))
    assert config_error("iroh", {}, path) == f"{path}: mode 'nostr' does not match the command's mode 'iroh'"


def test_unknown_mode_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("mode: iroh", "mode: carrier-pigeon"))
    text = config_error(None, {}, path)
    assert text == f"{path}: mode 'carrier-pigeon' is not one of iroh, iroh-manual, custom-manual, nostr"


def test_missing_mode(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("mode: iroh\n", ""))
    assert config_error(None, {}, path) == f"{path}: no mode: set `mode: iroh` (or another mode)"
    assert config_error(None, {"allow_any_receiver": True}, None).startswith("config: no mode")


def test_mode_from_the_command_is_enough(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("mode: iroh\n", ""))
    assert cfg.sender_config_from("iroh", {}, path).mode == "iroh"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2]\n", "the top level must be a mapping of keys"),
        ("just a string\n", "the top level must be a mapping of keys"),
        ("mode: [unclosed\n", "not valid YAML"),
    ],
)
def test_file_that_is_not_a_mapping(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    assert config_error("iroh", {}, path).startswith(f"--config {path}: {problem}")


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    assert config_error("iroh", {}, path) == f"--config {path}: cannot read (No such file or directory)"


# -- types name their origin ---------------------------------------------------------------


def type_error(origin: str, value: object, text: str) -> None:
    """``ORIGIN: expected <what>, got VALUE`` (the wording of <what> is free)."""
    assert text.startswith(f"{origin}: expected "), text
    assert text.endswith(f", got {value!r}"), text


@pytest.mark.parametrize(
    ("key", "yaml_value", "value"),
    [
        ("max_sessions", "ten", "ten"),
        ("max_sessions", "true", True),  # a bool is not an int
        ("max_sessions", "2.5", 2.5),
        ("drain_grace", "fast", "fast"),
        ("drain_grace", "false", False),
        ("no_relay", "1", 1),
        ("no_relay", "'yes please'", "yes please"),
        ("relay_urls", "https://relay.example.net", "https://relay.example.net"),
        ("allowed_udp", "[10.0.0.0/8, 8]", ["10.0.0.0/8", 8]),
        ("log_level", "3", 3),
        ("authorized_keys", "[keys]", ["keys"]),
    ],
)
def test_wrong_yaml_type_names_file_and_key(tmp_path: Path, key: str, yaml_value: str, value: object) -> None:
    path = write(tmp_path, MINIMAL + f"{key}: {yaml_value}\n")
    type_error(f"{path}: {key}", value, config_error("iroh", {}, path))


def test_error_origin_is_the_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "max_sessions: many\n")
    assert "sender.yaml: max_sessions: expected " in config_error("iroh", {}, path)


@pytest.mark.parametrize(
    ("cli", "flag"),
    [
        ({"max_sessions": "5"}, "--max-sessions"),
        ({"max_sessions": True}, "--max-sessions"),
        ({"drain_grace": True}, "--drain-grace"),
        ({"heartbeat_timeout": "10"}, "--heartbeat-timeout"),
        ({"relay_urls": "https://relay"}, "--relay-url"),
        ({"allowed_tcp": [b"127.0.0.0/8"]}, "--allowed-tcp"),
    ],
)
def test_wrong_cli_type_names_the_flag(tmp_path: Path, cli: dict, flag: str) -> None:
    (value,) = cli.values()
    type_error(flag, value, config_error("iroh", cli, write(tmp_path, MINIMAL)))


def test_bad_cidr_names_origin(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("[127.0.0.0/8]", "[127.0.0.0/8, localhost]"))
    assert config_error("iroh", {}, path) == (
        f"{path}: allowed_tcp 'localhost': not a CIDR such as 127.0.0.0/8 or ::1/128"
    )
    text = config_error("iroh", {"allowed_udp": ["300.0.0.0/8"]}, write(tmp_path, MINIMAL))
    assert text == "--allowed-udp '300.0.0.0/8': not a CIDR such as 127.0.0.0/8 or ::1/128"


@pytest.mark.parametrize(("key", "flag"), [("log_level", "--log-level"), ("log_format", "--log-format")])
def test_choice_outside_its_set(tmp_path: Path, key: str, flag: str) -> None:
    path = write(tmp_path, MINIMAL + f"{key}: loud\n")
    assert config_error("iroh", {}, path).startswith(f"{path}: {key}: 'loud' is not one of ")
    assert config_error("iroh", {key: "loud"}, path).startswith(f"{flag}: 'loud' is not one of ")


# -- validation after merging ----------------------------------------------------------------


def test_open_sender_is_refused_naming_both_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: iroh\nallowed_tcp: [127.0.0.0/8]\n")
    text = config_error(None, {}, path)
    assert text.startswith("refusing to start an open sender")
    assert "--authorized-keys PATH" in text
    assert "--allow-any-receiver" in text


def test_explicit_false_allow_any_receiver_is_still_open(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: iroh\nallowed_tcp: [127.0.0.0/8]\nallow_any_receiver: false\n")
    assert config_error(None, {}, path).startswith("refusing to start an open sender")


def test_authorized_keys_and_allow_any_receiver_contradict(tmp_path: Path) -> None:
    keys = write(tmp_path, KEY_A + "\n", "keys")
    text = config_error(None, {"authorized_keys": keys}, write(tmp_path, MINIMAL))
    assert text == "--authorized-keys and --allow-any-receiver contradict each other: choose one"


def test_authorized_keys_file_parsing(tmp_path: Path) -> None:
    keys = write(
        tmp_path,
        f"# receivers\n\n{KEY_A}  # laptop\n   {KEY_B.upper()}\n{KEY_A} duplicate with a note\n  # indented comment\n",
        "keys",
    )
    path = write(tmp_path, "mode: iroh\nallowed_tcp: [127.0.0.0/8]\n")
    config = cfg.sender_config_from(None, {"authorized_keys": keys}, path)
    assert config.authorized_keys == frozenset({KEY_A, KEY_B})


def test_empty_authorized_keys_file_admits_nobody(tmp_path: Path) -> None:
    keys = write(tmp_path, "# nobody yet\n", "keys")
    config = cfg.sender_config_from("iroh", {"allowed_tcp": ["127.0.0.1/32"], "authorized_keys": keys}, None)
    assert config.authorized_keys == frozenset()  # not None: None would mean any receiver


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        ("abc123", "'abc123'"),
        ("g" * 64, f"'{'g' * 64}'"),
        (KEY_A + "0", f"'{KEY_A}0'"),
        (KEY_A[:-1], f"'{KEY_A[:-1]}'"),
    ],
)
def test_bad_authorized_key_names_path_and_line(tmp_path: Path, bad: str, shown: str) -> None:
    keys = write(tmp_path, f"# receivers\n{KEY_A}\n\n{bad}  # typo\n", "keys")
    text = config_error("iroh", {"allowed_tcp": ["127.0.0.1/32"], "authorized_keys": keys}, None)
    assert text == f"--authorized-keys {keys}:4: {shown} is not an EndpointId (64 hex characters)"


def test_missing_authorized_keys_file(tmp_path: Path) -> None:
    keys = str(tmp_path / "absent")
    text = config_error("iroh", {"allowed_tcp": ["127.0.0.1/32"], "authorized_keys": keys}, None)
    assert text == f"--authorized-keys {keys}: cannot read (No such file or directory)"


def test_relative_paths_in_yaml_are_relative_to_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "conf", KEY_A + "\n", "keys")
    write(tmp_path / "conf", "c2VjcmV0\n", "sender.key")
    path = write(
        tmp_path / "conf",
        "mode: iroh\nallowed_tcp: [127.0.0.0/8]\nauthorized_keys: keys\nsecret_file: sender.key\n"
        "ticket_file: out/ticket\ncontrol: run/sup.sock\n",
    )
    monkeypatch.chdir(tmp_path)  # not the file's folder
    config = cfg.sender_config_from(None, {}, path)
    assert config.authorized_keys == frozenset({KEY_A})
    assert config.secret == "c2VjcmV0"
    assert config.ticket_file == tmp_path / "conf" / "out" / "ticket"
    assert config.control == tmp_path / "conf" / "run" / "sup.sock"


def test_yaml_error_origin_after_relative_path(tmp_path: Path) -> None:
    write(tmp_path, "nothex\n", "keys")
    path = write(tmp_path, "mode: iroh\nallowed_tcp: [127.0.0.0/8]\nauthorized_keys: keys\n")
    text = config_error(None, {}, path)
    assert text == f"{path}: authorized_keys {tmp_path / 'keys'}:1: 'nothex' is not an EndpointId (64 hex characters)"


@pytest.mark.parametrize("value", [0, -1])
def test_max_sessions_must_be_positive(tmp_path: Path, value: int) -> None:
    path = write(tmp_path, MINIMAL + f"max_sessions: {value}\n")
    assert config_error(None, {}, path) == f"{path}: max_sessions: must be a number from 1 to 100000, got {value}"


@pytest.mark.parametrize(
    ("key", "flag"), [("drain_grace", "--drain-grace"), ("heartbeat_timeout", "--heartbeat-timeout")]
)
def test_durations_must_be_positive(tmp_path: Path, key: str, flag: str) -> None:
    assert config_error(None, {key: 0.0}, write(tmp_path, MINIMAL)).startswith(f"{flag}: must be a number from ")


def test_secret_and_secret_file_together_are_refused(tmp_path: Path) -> None:
    secret_file = write(tmp_path, "c2VjcmV0\n", "sender.key")
    text = config_error("iroh", {"secret": "aW5saW5l", "secret_file": secret_file}, write(tmp_path, MINIMAL))
    assert text == "--secret and --secret-file are mutually exclusive: keep one"


def test_missing_secret_file(tmp_path: Path) -> None:
    secret_file = str(tmp_path / "absent.key")
    text = config_error("iroh", {"secret_file": secret_file}, write(tmp_path, MINIMAL))
    assert text.startswith(f"--secret-file {secret_file}: cannot read (No such file or directory)")
    assert "tunnel-py generate-iroh-key -o PATH" in text


def test_relay_only_needs_relay_urls(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "relay_only: true\n")
    assert config_error("iroh", {}, path) == (
        f"{path}: relay_only needs at least one --relay-url (the public relays are rate-limited)"
    )
    config = cfg.sender_config_from("iroh", {"relay_urls": ["https://relay.example.net"]}, path)
    assert config.net.relay_only is True
    assert config.net.relay_urls == ("https://relay.example.net",)


def test_relay_only_and_no_relay_contradict(tmp_path: Path) -> None:
    cli = {"relay_only": True, "no_relay": True, "relay_urls": ["https://relay.example.net"]}
    assert config_error("iroh", cli, write(tmp_path, MINIMAL)).startswith("--relay-only and --no-relay contradict")


def test_no_allowed_list_at_all_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: iroh\nallow_any_receiver: true\nallowed_tcp: []\n")
    text = config_error(None, {}, path)
    assert text.startswith("no source is allowed: give --allowed-tcp and/or --allowed-udp CIDRs")


def test_bad_bind_names_origin(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "bind: localhost:7777\n")
    assert config_error(None, {}, path) == f"{path}: bind 'localhost:7777': 'localhost' is not an IP address"


# -- secrets stay masked -------------------------------------------------------------------


def test_secret_repr_is_masked() -> None:
    secret = cfg.Secret("c3VwZXJzZWNyZXQ=")
    assert repr(secret) == "Secret('****')"
    assert secret == "c3VwZXJzZWNyZXQ="  # still usable as the string it is


def test_secret_is_not_in_the_config_repr(tmp_path: Path) -> None:
    config = cfg.sender_config_from("iroh", {"secret": "c3VwZXJzZWNyZXQ="}, write(tmp_path, MINIMAL))
    assert isinstance(config.secret, cfg.Secret)
    assert config.secret == "c3VwZXJzZWNyZXQ="
    assert "c3VwZXJzZWNyZXQ" not in repr(config)
    assert "secret=Secret('****')" in repr(config)


def test_secret_file_is_read_stripped_and_masked(tmp_path: Path) -> None:
    secret_file = write(tmp_path, "  ZmlsZXNlY3JldA==\n\n", "sender.key")
    config = cfg.sender_config_from("iroh", {"secret_file": secret_file}, write(tmp_path, MINIMAL))
    assert config.secret == "ZmlsZXNlY3JldA=="
    assert isinstance(config.secret, cfg.Secret)
    assert "ZmlsZXNlY3JldA" not in repr(config)


# -- the receiver ------------------------------------------------------------------------------


RECEIVER_CLI = {"node_id": KEY_A, "source": "tcp://127.0.0.1:22", "listen": "127.0.0.1:2222"}


def receiver(cli: dict, mode: str = "iroh") -> cfg.ReceiverConfig:
    raw = RawValues(opts.RECEIVER_OPTIONS, mode)
    raw.update_from_cli(cli)
    return cfg.build_receiver_config(raw)


def test_receiver_config() -> None:
    config = receiver(RECEIVER_CLI | {"source": "udp://[::1]:53", "listen": "[::1]:5353"})
    assert config == cfg.ReceiverConfig(
        mode="iroh",
        source=Source(Proto.UDP, "::1", 53),
        target=("::1", 5353),
        net=cfg.NetOptions(),
        node_ids=(KEY_A,),
        secret=None,
    )


@pytest.mark.parametrize(("key", "flag"), [("node_id", "--node-id"), ("source", "--source"), ("listen", "--listen")])
@pytest.mark.parametrize("value", [None, ""])
def test_receiver_required_flags(key: str, flag: str, value) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        receiver(RECEIVER_CLI | {key: value})
    assert str(info.value) == f"{flag} is required"


def test_receiver_target_must_be_an_ip() -> None:
    with pytest.raises(ConfigError) as info:
        receiver(RECEIVER_CLI | {"listen": "localhost:2222"})
    assert str(info.value) == "--listen 'localhost:2222': 'localhost' is not an IP address"


def test_receiver_bad_source_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--source 'ssh://127.0.0.1:22': scheme must be tcp:// or udp://"):
        receiver(RECEIVER_CLI | {"source": "ssh://127.0.0.1:22"})


def test_receiver_secret_file_is_masked(tmp_path: Path) -> None:
    secret_file = write(tmp_path, "cmVjZWl2ZXI=\n", "receiver.key")
    config = receiver(RECEIVER_CLI | {"secret_file": secret_file})
    assert config.secret == "cmVjZWl2ZXI="
    assert "cmVjZWl2ZXI" not in repr(config)


def test_manual_receiver_needs_no_node_id_and_uses_default_stun() -> None:
    config = receiver({"source": "tcp://127.0.0.1:22", "listen": "127.0.0.1:2222", "node_id": KEY_A}, "custom-manual")
    assert config.node_ids == ()
    assert config.net.stun_servers == opts.DEFAULT_STUN_SERVERS


def test_stun_options() -> None:
    base = {"source": "tcp://127.0.0.1:22", "listen": "127.0.0.1:2222"}
    assert receiver(base | {"no_stun": True}, "custom-manual").net.stun_servers == ()
    assert receiver(base | {"stun_servers": ["[::1]:3478"]}, "custom-manual").net.stun_servers == ("[::1]:3478",)
    with pytest.raises(ConfigError, match=r"^--no-stun cannot be combined with --stun-server$"):
        receiver(base | {"no_stun": True, "stun_servers": ["stun.example.net:3478"]}, "custom-manual")
    with pytest.raises(ConfigError, match=r"^--stun-server: 'stun.example.net' is not HOST:PORT$"):
        receiver(base | {"stun_servers": ["stun.example.net"]}, "custom-manual")


# -- the example configs in the repository -------------------------------------------------------


def test_example_sender_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the file's relative paths must not depend on the cwd
    config = cfg.sender_config_from(None, {}, str(EXAMPLES / "sender.yaml"))
    assert config.mode == "iroh"
    assert config.allowed.tcp or config.allowed.udp
    # `authorized_keys: authorized_keys` in the file is resolved next to the file, not in the cwd.
    assert config.authorized_keys
    assert config.authorized_keys == read_authorized_keys(str(EXAMPLES / "authorized_keys"), "example")


def test_example_sender_config_loads_by_relative_path_from_the_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    relative = cfg.sender_config_from(None, {}, "deploy/examples/sender.yaml")
    assert relative == cfg.sender_config_from(None, {}, str(EXAMPLES / "sender.yaml"))


def test_example_sender_config_with_cli_overrides() -> None:
    config = cfg.sender_config_from(
        "iroh", {"max_sessions": 1, "allowed_udp": ["10.0.0.0/8"]}, str(EXAMPLES / "sender.yaml")
    )
    assert config.max_sessions == 1
    assert config.allowed.udp == (ipaddress.ip_network("10.0.0.0/8"),)


def test_a_key_given_twice_in_yaml_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: iroh\nallowed_tcp: [127.0.0.0/8]\nmax_sessions: 5\nmax_sessions: 50\n")
    assert config_error(None, {}, path) == f"--config {path}: line 4: key 'max_sessions' is given twice; keep one"


def test_bad_yaml_is_one_line_with_its_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: iroh\nallowed_tcp: [127.0.0.0/8\n")
    text = config_error(None, {}, path)
    assert text.startswith(f"--config {path}: not valid YAML: line ") and "\n" not in text


def test_every_number_has_finite_bounds_and_its_default_is_inside() -> None:
    import math

    numbers = [o for o in (*opts.SENDER_OPTIONS, *opts.RECEIVER_OPTIONS) if o.kind in ("int", "float")]
    assert numbers
    for option in numbers:
        assert option.bounds is not None, option.key
        low, high = option.bounds
        assert math.isfinite(low) and math.isfinite(high) and low <= option.default <= high, option.key
        assert f"{low:g}" in option.help_text.replace("_", ""), option.help_text


@pytest.mark.parametrize("key", ["max_sessions", "drain_grace", "heartbeat_timeout"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), -1, 0, 10**12])
def test_numbers_outside_their_bounds_are_refused_from_flags_and_yaml(tmp_path: Path, key: str, value) -> None:  # type: ignore[no-untyped-def]
    if key == "max_sessions" and isinstance(value, float):
        value = 10**30  # an int option: YAML/flags give ints; an enormous one must not reach status
    flag = "--" + key.replace("_", "-")
    text = config_error("iroh", {key: value}, write(tmp_path, MINIMAL))
    assert text.startswith(f"{flag}: must be a number from "), text
    yaml_path = write(tmp_path, MINIMAL + f"{key}: {value if not isinstance(value, float) else '.nan'}\n", "b.yaml")
    assert f"{key}: must be a number from " in config_error("iroh", {}, yaml_path)


def test_a_bare_endpoint_id_with_no_relay_asks_for_the_ticket() -> None:
    raw = RawValues(opts.RECEIVER_OPTIONS, "iroh")
    raw.update_from_cli(
        {"node_id": "ab" * 32, "source": "tcp://127.0.0.1:22", "listen": "127.0.0.1:2222", "no_relay": True}
    )
    with pytest.raises(ConfigError, match=r"--node-id: with --no-relay .* pass the full ticket \(endpoint\.\.\.\)"):
        cfg.build_receiver_config(raw)
