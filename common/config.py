"""The typed config: frozen models, validated and built from merged raw values.

:mod:`tunnelpy.common.options` declares every key once (flag, help, default) and merges
defaults < YAML file < CLI flags into :class:`~tunnelpy.common.merge.RawValues`. This module
checks the merged values together (contradicting flags, required keys, the files they name)
and builds the frozen models the supervisor, the workers and the receiver run on. A model's
field defaults are read from the option table, not written here again. Errors name where a bad
value came from (``--max-sessions`` or ``sender.yaml: max_sessions``). Secrets are wrapped in
:class:`Secret`, masked in reprs and logs.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunnelpy.common.allowlist import AllowLists, Source, parse_networks, parse_socket_addr, parse_source
from tunnelpy.common.cert_files import read_ca_file
from tunnelpy.common.errors import ConfigError
from tunnelpy.common.logs import LOG_FORMATS, LOG_LEVELS
from tunnelpy.common.merge import RawValues, merge_sender_values
from tunnelpy.common.modes import Mode
from tunnelpy.common.options import DEFAULT_STUN_SERVERS, default_of
from tunnelpy.common.options_nostr import DEFAULT_NOSTR_RELAYS, NSEC_ENV
from tunnelpy.common.private_files import read_authorized_keys, read_secret
from tunnelpy.common.turn import TurnOptions, turn_options

NODE_ORDERS = ("order", "random")  # how a receiver goes through its senders (``node_order``)


class Secret(str):
    """A string that never shows itself in a repr or a log line."""

    def __repr__(self) -> str:
        return "Secret('****')"


def default_control_path() -> Path:
    """The supervisor's status socket when ``control`` is not given (per user, never shared)."""
    return default_control_dir() / "supervisor.sock"


def default_control_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/tunnel-py-{os.getuid()}"
    return Path(runtime) / "tunnel-py"


@dataclass(frozen=True, slots=True)
class NetOptions:
    """How an endpoint reaches the network: iroh relays/discovery, STUN, ICE host filter, TURN.

    Built by :func:`build_sender_config` / :func:`build_receiver_config` from the keys of the
    same names; workers and tests also build one directly (e.g. an offline endpoint).
    """

    relay_urls: tuple[str, ...] = field(default=default_of("relay_urls"))
    relay_only: bool = field(default=default_of("relay_only"))
    dns_server: str | None = field(default=default_of("dns_server"))
    no_relay: bool = field(default=default_of("no_relay"))
    # The parsed IP and port of ``bind``; None = all interfaces, a random port.
    bind: tuple[str, int] | None = field(default=default_of("bind"))
    # The servers in use, not the option: empty means no STUN, as in the modes that never use it.
    stun_servers: tuple[str, ...] = ()
    ice_hosts: tuple[str, ...] = field(default=default_of("ice_hosts"))
    relay_auth_token: Secret | None = None  # read from ``relay_auth_token_file``
    relay_ca_certs: tuple[bytes, ...] = ()  # DER, read from ``relay_ca_file``
    no_portmap: bool = field(default=default_of("no_portmap"))
    bind6: tuple[str, int] | None = None
    transport: TransportOptions = field(default_factory=lambda: TransportOptions())
    turn: TurnOptions = field(default_factory=TurnOptions)  # the ICE modes' TURN servers


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """The iroh endpoint's QUIC transport; None = iroh's default."""

    congestion: str = field(default=default_of("congestion"))
    receive_window: int | None = None
    send_window: int | None = None
    keep_alive: float = field(default=default_of("keep_alive"))
    idle_timeout: float = field(default=default_of("idle_timeout"))
    max_mtu: int | None = None


@dataclass(frozen=True, slots=True)
class NostrOptions:
    """nostr mode's keys and relays, as given: the keys are parsed (they need nostr-sdk) by
    :func:`tunnelpy.signaling.nostr_keys.identity`, whose errors name ``*_origin``."""

    secret_key: Secret  # nsec1... or hex
    secret_origin: str  # where it came from: "--nsec", "--nsec-file PATH", "TUNNELPY_NSEC", a YAML key
    peers: tuple[str, ...]  # npub1... or hex: the receivers a sender admits, or the sender a receiver asks
    peers_origin: str
    relays: tuple[str, ...]
    republish_interval: float = field(default=default_of("republish_interval"))
    max_wait: float = field(default=default_of("max_wait"))


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """What a sender's supervisor runs on; built by :func:`sender_config_from`.

    ``allowed`` are the sources receivers may ask for; ``control`` is the status socket.
    """

    mode: str
    allowed: AllowLists
    net: NetOptions
    max_sessions: int = field(default=default_of("max_sessions"))
    max_startups: int = field(default=default_of("max_startups"))
    max_pending: int = field(default=default_of("max_pending"))
    secret: Secret | None = field(default=default_of("secret"))  # or read from ``secret_file``
    authorized_keys: frozenset[str] | None = None  # None = any receiver (--allow-any-receiver)
    ticket_file: Path | None = field(default=default_of("ticket_file"))
    control: Path = field(default_factory=default_control_path)
    drain_grace: float = field(default=default_of("drain_grace"))
    heartbeat_timeout: float = field(default=default_of("heartbeat_timeout"))
    log_format: str = field(default=default_of("log_format"))
    log_level: str = field(default=default_of("log_level"))
    metrics_listen: tuple[str, int] | None = None  # parsed ``metrics_listen``; None = no metrics listener
    metrics_token: Secret | None = None  # read from ``metrics_token_file``
    nostr: NostrOptions | None = None  # nostr mode only


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """What a receiver runs on; built by :func:`build_receiver_config` from its flags.

    It asks a sender (``node_ids`` in iroh mode: the ``node_id`` key, one or several, tried as
    ``node_order`` says) for ``source`` and listens on ``target`` (the ``listen`` key).
    """

    mode: str
    source: Source
    target: tuple[str, int]
    net: NetOptions
    node_ids: tuple[str, ...] = ()  # iroh mode: the senders, EndpointIds or tickets
    node_order: str = field(default=default_of("node_order"))  # "order" or "random"
    secret: Secret | None = None  # read from ``secret_file``
    no_reconnect: bool = field(default=default_of("no_reconnect"))
    reconnect_max: float = field(default=default_of("reconnect_max"))
    log_format: str = field(default=default_of("log_format"))
    log_level: str = field(default=default_of("log_level"))
    quiet: bool = field(default=default_of("quiet"))  # no status line; warnings and errors only
    nostr: NostrOptions | None = None  # nostr mode only


def _choice(raw: RawValues, key: str, choices: tuple[str, ...]) -> str:
    value = raw.get(key)
    if value not in choices:
        raise ConfigError(f"{raw.origin[key]}: {value!r} is not one of {', '.join(choices)}")
    return value


def _bounded(raw: RawValues, key: str) -> Any:
    """A number inside its option's finite bounds (NaN and infinities are never inside)."""
    value, (low, high) = raw.get(key), raw.bounds(key)
    if value is None or not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"{raw.origin[key]}: must be a number from {low:g} to {high:g}, got {value!r}")
    return value


def _stun_servers(raw: RawValues) -> tuple[str, ...]:
    if "stun_servers" not in raw.values:  # a mode that does not use STUN
        return ()
    listed = raw.get("stun_servers")
    if raw.get("no_stun") and listed:
        raise ConfigError("--no-stun cannot be combined with --stun-server")
    stun = () if raw.get("no_stun") else (DEFAULT_STUN_SERVERS if listed is None else listed)
    for item in stun:
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"{raw.origin['stun_servers']}: {item!r} is not HOST:PORT")
    return stun


def _net_options(raw: RawValues) -> NetOptions:
    if raw.get("relay_only") and not raw.get("relay_urls"):
        raise ConfigError(
            f"{raw.origin['relay_only']} needs at least one --relay-url (the public relays are rate-limited)"
        )
    if raw.get("relay_only") and raw.get("no_relay"):
        raise ConfigError("--relay-only and --no-relay contradict each other: choose one")
    if raw.get("dns_server") and not raw.get("relay_urls"):
        raise ConfigError(f"{raw.origin['dns_server']} needs --relay-url (a private deployment: relay and discovery)")
    bind, bind6, token_file = raw.get("bind"), raw.get("bind6"), raw.get("relay_auth_token_file")
    if token_file and not raw.get("relay_urls"):
        raise ConfigError(f"{raw.origin['relay_auth_token_file']} needs --relay-url (the relay it authenticates to)")
    token = None
    if token_file:
        hint = "write the relay's token into a file only you can read (chmod 600)"
        token = Secret(read_secret(Path(token_file), raw.origin["relay_auth_token_file"], hint))
    ca_certs = read_ca_file(raw.get("relay_ca_file"), raw.origin.get("relay_ca_file", ""), raw.get("relay_urls"))
    parsed6 = parse_socket_addr(bind6, what=raw.origin["bind6"]) if bind6 else None
    if parsed6 is not None and ":" not in parsed6[0]:
        raise ConfigError(f"{raw.origin['bind6']}: {bind6!r} is not an IPv6 [IP]:PORT")
    return NetOptions(
        relay_urls=raw.get("relay_urls") or (),
        relay_only=bool(raw.get("relay_only")),
        dns_server=raw.get("dns_server"),
        no_relay=bool(raw.get("no_relay")) or raw.mode == Mode.IROH_MANUAL,  # iroh-manual: relays off, both sides
        bind=parse_socket_addr(bind, what=raw.origin["bind"]) if bind else None,
        stun_servers=_stun_servers(raw),
        ice_hosts=raw.get("ice_hosts") or (),
        relay_auth_token=token,
        relay_ca_certs=ca_certs,
        no_portmap=bool(raw.get("no_portmap")),
        bind6=parsed6,
        transport=_transport_options(raw),
        turn=turn_options(raw),
    )


def _transport_options(raw: RawValues) -> TransportOptions:
    if "keep_alive" not in raw.values:  # a mode without an iroh endpoint
        return TransportOptions()

    def optional(key: str, least: int) -> Any:
        value = _bounded(raw, key)  # 0 = iroh's default
        if value and value < least:
            raise ConfigError(f"{raw.origin[key]}: must be 0 (iroh's default) or at least {least}, got {value}")
        return value or None

    options = TransportOptions(
        congestion=_choice(raw, "congestion", ("default", "cubic", "newreno", "bbr3")),
        receive_window=optional("receive_window", 16_384),
        send_window=optional("send_window", 16_384),
        keep_alive=_bounded(raw, "keep_alive"),
        idle_timeout=_bounded(raw, "idle_timeout"),
        max_mtu=optional("max_mtu", 1_200),
    )
    if options.keep_alive >= options.idle_timeout:
        raise ConfigError(
            f"{raw.origin['keep_alive']}: the keep-alive ({options.keep_alive:g} s) must be shorter than "
            f"the idle timeout ({options.idle_timeout:g} s)"
        )
    return options


def _read_secret(raw: RawValues) -> Secret | None:
    inline, path = raw.get("secret"), raw.get("secret_file")
    if inline and path:
        raise ConfigError("--secret and --secret-file are mutually exclusive: keep one")
    if path:
        hint = "create one with `tunnel-py generate-iroh-key -o PATH`"
        return Secret(read_secret(Path(path), raw.origin["secret_file"], hint))
    return Secret(inline) if inline else None


def _nostr_options(raw: RawValues, *, sender: bool) -> NostrOptions:
    """nostr mode's secret key (--nsec, --nsec-file, or $TUNNELPY_NSEC), peers and relays."""
    inline, path = raw.get("nsec"), raw.get("nsec_file")
    if inline and path:
        raise ConfigError("--nsec and --nsec-file are mutually exclusive: keep one")
    hint = "create one with `tunnel-py generate-nostr-key -o PATH`"
    if path:
        origin = f"{raw.origin['nsec_file']} {path}"
        secret = read_secret(Path(path), raw.origin["nsec_file"], hint)
    elif inline:
        origin, secret = raw.origin["nsec"], inline
    elif os.environ.get(NSEC_ENV):
        origin, secret = NSEC_ENV, os.environ[NSEC_ENV]
    else:
        raise ConfigError(f"nostr mode needs our secret key: give --nsec-file PATH (or --nsec, or ${NSEC_ENV}); {hint}")
    peers = raw.get("peer_npub") or ()
    if not peers:
        who = "a receiver allowed to connect (repeatable)" if sender else "the sender to ask"
        raise ConfigError(f"{raw.origin['peer_npub']} is required: the npub of {who}")
    if not sender and len(peers) > 1:
        raise ConfigError(f"{raw.origin['peer_npub']}: a receiver asks one sender; give it once")
    return NostrOptions(
        secret_key=Secret(secret.strip()),
        secret_origin=origin,
        peers=peers,
        peers_origin=raw.origin["peer_npub"],
        relays=raw.get("relays") or DEFAULT_NOSTR_RELAYS,
        republish_interval=_bounded(raw, "republish_interval"),
        max_wait=_bounded(raw, "max_wait"),
    )


def _authorized_keys(raw: RawValues) -> frozenset[str] | None:
    """The receivers an iroh sender admits; None = any. An open sender must be asked for."""
    keys_path = raw.get("authorized_keys")
    if keys_path and raw.get("allow_any_receiver"):
        raise ConfigError("--authorized-keys and --allow-any-receiver contradict each other: choose one")
    if not keys_path and not raw.get("allow_any_receiver"):
        raise ConfigError(
            "refusing to start an open sender: give --authorized-keys PATH (receiver "
            "EndpointIds, one per line) or --allow-any-receiver"
        )
    return read_authorized_keys(keys_path, raw.origin["authorized_keys"]) if keys_path else None


def read_token_file(path: str, where: str) -> Secret:
    """The bearer token in ``path``: a private secret file (see private_files), 16 characters or more."""
    text = read_secret(Path(path), where, "put a token in it, e.g. `openssl rand -hex 32 > FILE`")
    if len(text) < 16:
        raise ConfigError(f"{where} {path}: the token must be at least 16 characters (e.g. openssl rand -hex 32)")
    return Secret(text)


def _metrics(raw: RawValues) -> tuple[tuple[str, int] | None, Secret | None]:
    """The metrics listener and its token: a non-loopback listener must have a token."""
    listen, token_path = raw.get("metrics_listen"), raw.get("metrics_token_file")
    if not listen:
        if token_path:
            raise ConfigError(f"{raw.origin['metrics_token_file']} needs --metrics-listen IP:PORT")
        return None, None
    address = parse_socket_addr(listen, what=raw.origin["metrics_listen"])
    token = read_token_file(token_path, raw.origin["metrics_token_file"]) if token_path else None
    if token is None and not ipaddress.ip_address(address[0]).is_loopback:
        raise ConfigError(
            f"{raw.origin['metrics_listen']} {listen}: not a loopback address, so --metrics-token-file PATH is required"
        )
    return address, token


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
    iroh, nostr = mode == Mode.IROH, mode == Mode.NOSTR
    # iroh mode admits receivers by EndpointId and nostr mode by npub (its front door checks
    # the --peer-npub list), and both serve many; a copy-paste mode serves the one peer whose
    # blocks were exchanged, so it has no key list and one session.
    authorized = _authorized_keys(raw) if iroh else None  # copy-paste modes: the paste channel authenticates
    control = raw.get("control")
    metrics_listen, metrics_token = _metrics(raw)
    return SenderConfig(
        mode=mode,
        allowed=allowed,
        net=_net_options(raw),
        max_sessions=_bounded(raw, "max_sessions") if iroh or nostr else 1,
        max_startups=_bounded(raw, "max_startups") if iroh else default_of("max_startups"),
        max_pending=_bounded(raw, "max_pending") if iroh else default_of("max_pending"),
        secret=_read_secret(raw) if iroh else None,
        authorized_keys=authorized,
        ticket_file=Path(raw.get("ticket_file")) if iroh and raw.get("ticket_file") else None,
        control=Path(control) if control else default_control_path(),
        drain_grace=_bounded(raw, "drain_grace"),
        heartbeat_timeout=_bounded(raw, "heartbeat_timeout"),
        log_format=_choice(raw, "log_format", LOG_FORMATS),
        log_level=_choice(raw, "log_level", LOG_LEVELS),
        metrics_listen=metrics_listen,
        metrics_token=metrics_token,
        nostr=_nostr_options(raw, sender=True) if nostr else None,
    )


def build_receiver_config(raw: RawValues) -> ReceiverConfig:
    """Validate merged receiver values into a :class:`ReceiverConfig`."""
    iroh = raw.mode == Mode.IROH
    for key in ("source", "listen") + (("node_id",) if iroh else ()):
        if not raw.get(key):
            raise ConfigError(f"{raw.origin[key]} is required")
    net = _net_options(raw)
    node_ids = tuple(n.strip() for n in raw.get("node_id") or ()) if iroh else ()
    if not all(node_ids):
        raise ConfigError(f"{raw.origin['node_id']}: an empty sender; give an EndpointId or a ticket")
    lookup_off = net.no_relay or (net.relay_urls and not net.dns_server)
    if lookup_off and not all(n.startswith("endpoint") for n in node_ids):
        why = "--no-relay" if net.no_relay else "--relay-url and no --dns-server"
        raise ConfigError(
            f"{raw.origin['node_id']}: with {why} nothing can look up a bare EndpointId; "
            "pass the full ticket (endpoint...) the sender wrote to its --ticket-file"
        )
    return ReceiverConfig(
        mode=raw.mode,
        source=parse_source(raw.get("source")),
        target=parse_socket_addr(raw.get("listen"), what=raw.origin["listen"]),
        net=net,
        node_ids=node_ids,
        node_order=_choice(raw, "node_order", NODE_ORDERS) if iroh else default_of("node_order"),
        secret=_read_secret(raw) if iroh else None,
        no_reconnect=bool(raw.get("no_reconnect")) if "no_reconnect" in raw.values else True,
        reconnect_max=_bounded(raw, "reconnect_max") if "reconnect_max" in raw.values else default_of("reconnect_max"),
        log_format=_choice(raw, "log_format", LOG_FORMATS),
        log_level=_choice(raw, "log_level", LOG_LEVELS),
        quiet=bool(raw.get("quiet")),
        nostr=_nostr_options(raw, sender=False) if raw.mode == Mode.NOSTR else None,
    )


def sender_config_from(mode: str | None, cli_values: dict[str, Any], config_path: str | None) -> SenderConfig:
    """Merge defaults < YAML file < CLI values and validate (the one entry point)."""
    return build_sender_config(merge_sender_values(mode, cli_values, config_path))
