"""One typed config: defaults < YAML file < CLI flags, merged, then validated into frozen models.

Every option is declared once in :data:`SENDER_OPTIONS` / :data:`RECEIVER_OPTIONS`; the CLI
builds its flags and help from the same table, and the YAML loader accepts exactly these
keys (unknown keys and keys of another mode are errors that name the key). Errors name where
a bad value came from (``--max-sessions`` or ``sender.yaml: max_sessions``). Secrets are
wrapped in :class:`Secret`, masked in reprs and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunnelpy.common.allowlist import AllowLists, Source, parse_networks, parse_socket_addr, parse_source
from tunnelpy.common.errors import ConfigError
from tunnelpy.common.logs import LOG_FORMATS, LOG_LEVELS

MODES = ("iroh", "iroh-manual", "custom-manual", "nostr")
IROH, IROH_MANUAL, CUSTOM_MANUAL = "iroh", "iroh-manual", "custom-manual"
DEFAULT_STUN_SERVERS = ("stun.l.google.com:19302", "stun1.l.google.com:19302")


class Secret(str):
    """A string that never shows itself in a repr or a log line."""

    def __repr__(self) -> str:
        return "Secret('****')"


@dataclass(frozen=True, slots=True)
class Option:
    """One config key and its CLI flag; ``kind`` is str, path, int, float, bool, list or secret.

    A relative ``path`` in a YAML file is taken relative to that file's folder.
    """

    key: str
    flag: str
    help: str
    kind: str = "str"
    default: Any = None
    metavar: str | None = None
    modes: tuple[str, ...] = MODES


_IROH_ONLY = (IROH,)
_IROH_BOTH = (IROH, IROH_MANUAL)
_STUN_MODES = (IROH_MANUAL, CUSTOM_MANUAL)

_COMMON = (
    Option(
        "stun_servers",
        "--stun-server",
        "STUN server HOST:PORT (repeatable; default: public Google STUN servers; an empty list in YAML disables STUN)",
        "list",
        None,
        "HOST:PORT",
        _STUN_MODES,
    ),
    Option(
        "no_stun",
        "--no-stun",
        "do not use STUN: host candidates / direct addresses only",
        "bool",
        False,
        None,
        _STUN_MODES,
    ),
    Option(
        "ice_hosts",
        "--ice-host",
        "gather ICE host candidates only on this address, CIDR or "
        "interface (repeatable; default: every non-loopback interface)",
        "list",
        (),
        "ADDR|CIDR|IFACE",
        (CUSTOM_MANUAL,),
    ),
    Option(
        "relay_urls",
        "--relay-url",
        "iroh relay server URL (repeatable; default: n0's public relays)",
        "list",
        (),
        "URL",
        _IROH_ONLY,
    ),
    Option(
        "relay_only",
        "--relay-only",
        "send all traffic through the relays (needs --relay-url)",
        "bool",
        False,
        None,
        _IROH_ONLY,
    ),
    Option("dns_server", "--dns-server", "custom pkarr/DNS discovery server URL", "str", None, "URL", _IROH_ONLY),
    Option(
        "no_relay",
        "--no-relay",
        "no relay servers and no internet discovery: direct addresses only (LAN/offline)",
        "bool",
        False,
        None,
        _IROH_ONLY,
    ),
    Option(
        "bind",
        "--bind",
        "local IP:PORT the iroh endpoint binds (default: all interfaces, random port)",
        "str",
        None,
        "IP:PORT",
        _IROH_BOTH,
    ),
    Option(
        "log_format",
        "--log-format",
        "log format on stderr: json, console, or auto (console on a TTY, json otherwise)",
        "str",
        "auto",
        "FMT",
    ),
    Option("log_level", "--log-level", "debug, info, warning or error", "str", "info", "LEVEL"),
)

SENDER_OPTIONS: tuple[Option, ...] = (
    Option(
        "allowed_tcp",
        "--allowed-tcp",
        "CIDR of tcp sources receivers may ask for (repeatable; empty = no tcp source allowed)",
        "list",
        (),
        "CIDR",
    ),
    Option(
        "allowed_udp",
        "--allowed-udp",
        "CIDR of udp sources receivers may ask for (repeatable; empty = no udp source allowed)",
        "list",
        (),
        "CIDR",
    ),
    Option(
        "max_sessions",
        "--max-sessions",
        "concurrent sessions (one worker process each) before new receivers are refused as at capacity",
        "int",
        100,
        "N",
        _IROH_ONLY,
    ),
    Option(
        "secret",
        "--secret",
        "sender identity as base64 of 32 bytes (prefer --secret-file: a flag shows up in ps and shell history)",
        "secret",
        None,
        "B64",
        _IROH_ONLY,
    ),
    Option(
        "secret_file",
        "--secret-file",
        "file with the sender's persistent identity (see "
        "generate-iroh-key); without it the EndpointId changes every start",
        "path",
        None,
        "PATH",
        _IROH_ONLY,
    ),
    Option(
        "authorized_keys",
        "--authorized-keys",
        "file of receiver EndpointIds allowed to connect, one per line, # comments",
        "path",
        None,
        "PATH",
        _IROH_ONLY,
    ),
    Option(
        "allow_any_receiver",
        "--allow-any-receiver",
        "accept any receiver EndpointId (the allow-lists still apply)",
        "bool",
        False,
        None,
        _IROH_ONLY,
    ),
    Option(
        "ticket_file",
        "--ticket-file",
        "write the endpoint ticket (id + addresses) to this file once online",
        "path",
        None,
        "PATH",
        _IROH_ONLY,
    ),
    Option(
        "control",
        "--control",
        "path of the supervisor's local status socket (default: $XDG_RUNTIME_DIR/tunnel-py/supervisor.sock)",
        "path",
        None,
        "PATH",
    ),
    Option(
        "drain_grace",
        "--drain-grace",
        "seconds live sessions get to finish after SIGTERM before their workers are stopped",
        "float",
        30.0,
        "SECONDS",
    ),
    Option(
        "heartbeat_timeout",
        "--heartbeat-timeout",
        "seconds without a worker heartbeat before the worker is terminated as stale",
        "float",
        10.0,
        "SECONDS",
    ),
    *_COMMON,
)

RECEIVER_OPTIONS: tuple[Option, ...] = (
    Option(
        "node_id",
        "--node-id",
        "the sender's EndpointId, or a full endpoint ticket carrying its addresses",
        "str",
        None,
        "ID_OR_TICKET",
        _IROH_ONLY,
    ),
    Option(
        "source", "--source", "service on the sender's side: tcp://HOST:PORT or udp://HOST:PORT", "str", None, "URL"
    ),
    Option("target", "--target", "local IP:PORT to listen on for the tunneled service", "str", None, "IP:PORT"),
    Option(
        "secret_file",
        "--secret-file",
        "receiver identity file (its EndpointId is what the sender's --authorized-keys lists); default: ephemeral",
        "path",
        None,
        "PATH",
        _IROH_ONLY,
    ),
    *_COMMON,
)


@dataclass(frozen=True, slots=True)
class NetOptions:
    """How an endpoint reaches the network: iroh relays/discovery, STUN, ICE host filter."""

    relay_urls: tuple[str, ...] = ()
    relay_only: bool = False
    dns_server: str | None = None
    no_relay: bool = False
    bind: tuple[str, int] | None = None
    stun_servers: tuple[str, ...] = ()
    ice_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SenderConfig:
    mode: str
    allowed: AllowLists
    net: NetOptions
    max_sessions: int = 100
    secret: Secret | None = None
    authorized_keys: frozenset[str] | None = None  # None = any receiver (--allow-any-receiver)
    ticket_file: Path | None = None
    control: Path = field(default_factory=lambda: default_control_path())
    drain_grace: float = 30.0
    heartbeat_timeout: float = 10.0
    log_format: str = "auto"
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    mode: str
    source: Source
    target: tuple[str, int]
    net: NetOptions
    node_id: str | None = None
    secret: Secret | None = None
    log_format: str = "auto"
    log_level: str = "info"


def default_control_path() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/tunnel-py-{os.getuid()}"
    return Path(runtime) / "tunnel-py" / "supervisor.sock"


class RawValues:
    """Merged raw values with the origin of each (a flag or ``file: key``) for error messages."""

    def __init__(self, options: tuple[Option, ...], mode: str) -> None:
        self._options = {o.key: o for o in options if mode in o.modes}
        self.values: dict[str, Any] = {k: o.default for k, o in self._options.items()}
        self.origin: dict[str, str] = {k: o.flag for k, o in self._options.items()}
        self.mode = mode

    def update_from_file(self, data: dict[str, Any], path: str, all_options: tuple[Option, ...]) -> None:
        known = {o.key: o for o in all_options}
        for key, value in data.items():
            if key == "mode":
                continue
            if key not in known:
                raise ConfigError(f"{path}: unknown key {key!r}; valid keys: {', '.join(sorted(known))}")
            if key not in self._options:
                modes = ", ".join(known[key].modes)
                raise ConfigError(f"{path}: key {key!r} does not apply to mode {self.mode!r} (only {modes})")
            if known[key].kind == "path" and isinstance(value, str):
                value = str(Path(path).parent / Path(value).expanduser())
            self.values[key] = value
            self.origin[key] = f"{path}: {key}"

    def update_from_cli(self, given: dict[str, Any]) -> None:
        for key, value in given.items():
            if key in self._options and value is not None:
                self.values[key] = value
                self.origin[key] = self._options[key].flag

    def get(self, key: str) -> Any:
        """The checked value of ``key``; None if unset or not an option of this mode."""
        value = self.values.get(key)
        if value is None or key not in self._options:
            return None
        kind = self._options[key].kind
        if not _KIND_CHECKS[kind](value):
            raise ConfigError(f"{self.origin[key]}: expected {_KIND_NAMES[kind]}, got {value!r}")
        return tuple(value) if kind == "list" else value


_KIND_CHECKS = {
    "str": lambda v: isinstance(v, str),
    "path": lambda v: isinstance(v, str),
    "secret": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, (list, tuple)) and all(isinstance(i, str) for i in v),
}
_KIND_NAMES = {
    "str": "a string",
    "path": "a path",
    "secret": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "list": "a list of strings",
}


def load_yaml(path: str) -> dict[str, Any]:
    import yaml  # only senders read files; receivers start faster without it

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: the top level must be a mapping of keys")
    return data


def _choice(raw: RawValues, key: str, choices: tuple[str, ...]) -> str:
    value = raw.get(key)
    if value not in choices:
        raise ConfigError(f"{raw.origin[key]}: {value!r} is not one of {', '.join(choices)}")
    return value


def _positive(raw: RawValues, key: str) -> Any:
    value = raw.get(key)
    if value is None or value <= 0:
        raise ConfigError(f"{raw.origin[key]}: must be > 0, got {value!r}")
    return value


def _net_options(raw: RawValues) -> NetOptions:
    if raw.get("relay_only") and not raw.get("relay_urls"):
        raise ConfigError(
            f"{raw.origin['relay_only']} needs at least one --relay-url (the public relays are rate-limited)"
        )
    if raw.get("relay_only") and raw.get("no_relay"):
        raise ConfigError("--relay-only and --no-relay contradict each other: choose one")
    bind = raw.get("bind")
    stun: tuple[str, ...] = ()
    if "stun_servers" in raw.values:  # a mode that uses STUN
        listed = raw.get("stun_servers")
        if raw.get("no_stun") and listed:
            raise ConfigError("--no-stun cannot be combined with --stun-server")
        stun = () if raw.get("no_stun") else (DEFAULT_STUN_SERVERS if listed is None else listed)
        for item in stun:
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(f"{raw.origin['stun_servers']}: {item!r} is not HOST:PORT")
    return NetOptions(
        relay_urls=raw.get("relay_urls") or (),
        relay_only=bool(raw.get("relay_only")),
        dns_server=raw.get("dns_server"),
        no_relay=bool(raw.get("no_relay")),
        bind=parse_socket_addr(bind, what=raw.origin["bind"]) if bind else None,
        stun_servers=stun,
        ice_hosts=raw.get("ice_hosts") or (),
    )


def _read_secret(raw: RawValues) -> Secret | None:
    inline, path = raw.get("secret"), raw.get("secret_file")
    if inline and path:
        raise ConfigError("--secret and --secret-file are mutually exclusive: keep one")
    if path:
        try:
            return Secret(Path(path).read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError(
                f"{raw.origin['secret_file']} {path}: cannot read ({exc.strerror}); "
                "create one with `tunnel-py generate-iroh-key -o PATH`"
            ) from exc
    return Secret(inline) if inline else None


def read_authorized_keys(path: str, where: str) -> frozenset[str]:
    """Read EndpointIds, one per line; ``#`` starts a comment; each must be 64 hex chars."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{where} {path}: cannot read ({exc.strerror})") from exc
    keys = set()
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        key = text.split()[0].lower()
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ConfigError(f"{where} {path}:{number}: {key!r} is not an EndpointId (64 hex characters)")
        keys.add(key)
    return frozenset(keys)


def build_sender_config(raw: RawValues) -> SenderConfig:
    """Validate merged sender values into a :class:`SenderConfig`."""
    mode = raw.mode
    allowed = AllowLists(
        tcp=parse_networks(raw.get("allowed_tcp") or (), what=raw.origin["allowed_tcp"]),
        udp=parse_networks(raw.get("allowed_udp") or (), what=raw.origin["allowed_udp"]),
    )
    if not allowed.tcp and not allowed.udp:
        raise ConfigError(
            "no source is allowed: give --allowed-tcp and/or --allowed-udp CIDRs (e.g. --allowed-tcp 127.0.0.0/8)"
        )
    authorized: frozenset[str] | None = frozenset()
    if mode == IROH:
        keys_path = raw.get("authorized_keys")
        if keys_path and raw.get("allow_any_receiver"):
            raise ConfigError("--authorized-keys and --allow-any-receiver contradict each other: choose one")
        if not keys_path and not raw.get("allow_any_receiver"):
            raise ConfigError(
                "refusing to start an open sender: give --authorized-keys PATH (receiver "
                "EndpointIds, one per line) or --allow-any-receiver"
            )
        authorized = read_authorized_keys(keys_path, raw.origin["authorized_keys"]) if keys_path else None
    control = raw.get("control")
    return SenderConfig(
        mode=mode,
        allowed=allowed,
        net=_net_options(raw),
        max_sessions=_positive(raw, "max_sessions") if mode == IROH else 1,
        secret=_read_secret(raw) if mode == IROH else None,
        authorized_keys=authorized,
        ticket_file=Path(raw.get("ticket_file")) if mode == IROH and raw.get("ticket_file") else None,
        control=Path(control) if control else default_control_path(),
        drain_grace=_positive(raw, "drain_grace"),
        heartbeat_timeout=_positive(raw, "heartbeat_timeout"),
        log_format=_choice(raw, "log_format", LOG_FORMATS),
        log_level=_choice(raw, "log_level", LOG_LEVELS),
    )


def build_receiver_config(raw: RawValues) -> ReceiverConfig:
    """Validate merged receiver values into a :class:`ReceiverConfig`."""
    for key in ("source", "target") + (("node_id",) if raw.mode == IROH else ()):
        if not raw.get(key):
            raise ConfigError(f"{raw.origin[key]} is required")
    return ReceiverConfig(
        mode=raw.mode,
        source=parse_source(raw.get("source")),
        target=parse_socket_addr(raw.get("target"), what=raw.origin["target"]),
        net=_net_options(raw),
        node_id=raw.get("node_id") if raw.mode == IROH else None,
        secret=_read_secret(raw) if raw.mode == IROH else None,
        log_format=_choice(raw, "log_format", LOG_FORMATS),
        log_level=_choice(raw, "log_level", LOG_LEVELS),
    )


def sender_config_from(mode: str | None, cli_values: dict[str, Any], config_path: str | None) -> SenderConfig:
    """Merge defaults < YAML file < CLI values and validate (the one entry point)."""
    data = load_yaml(config_path) if config_path else {}
    file_mode = data.get("mode")
    if file_mode is not None and file_mode not in MODES:
        raise ConfigError(f"{config_path}: mode {file_mode!r} is not one of {', '.join(MODES)}")
    if mode and file_mode and mode != file_mode:
        raise ConfigError(f"{config_path}: mode {file_mode!r} does not match the command's mode {mode!r}")
    mode = mode or file_mode
    if not mode:
        raise ConfigError(f"{config_path or 'config'}: no mode: set `mode: iroh` (or another mode)")
    raw = RawValues(SENDER_OPTIONS, mode)
    raw.update_from_file(data, config_path or "config", SENDER_OPTIONS)
    raw.update_from_cli(cli_values)
    return build_sender_config(raw)
