"""The one option table: every config key, its flag, help, kind, default and bounds.

Every config key is declared once, in :data:`SENDER_OPTIONS` / :data:`RECEIVER_OPTIONS`, with
its flag, help text, kind and default. Everything else is generated from these tables: the CLI
builds its flags and help from them, the YAML loader accepts exactly their keys (an unknown key,
or a key of another mode, is an error that names it), and the typed models in
:mod:`tunnelpy.common.config` read their field defaults through :func:`default_of`, so a default
is written in one place only.

The merge of values (defaults < YAML file < CLI flags) is :mod:`tunnelpy.common.merge`;
checks across keys and the building of frozen models live in :mod:`tunnelpy.common.config`.
"""

from __future__ import annotations

from typing import Any

from tunnelpy.common.modes import Mode
from tunnelpy.common.option_spec import Option
from tunnelpy.common.options_ice import ICE_OPTIONS
from tunnelpy.common.options_nostr import (
    NOSTR_ONLY,
    NOSTR_RECEIVER_OPTIONS,
    NOSTR_SENDER_OPTIONS,
)
from tunnelpy.common.options_transport import IROH_TRANSPORT_OPTIONS

# Used when a STUN mode lists no server. The option's own default stays None, so that "not
# given" (use these) and an explicit empty list in YAML (no STUN at all) remain distinguishable.
DEFAULT_STUN_SERVERS = ("stun.l.google.com:19302", "stun1.l.google.com:19302")


_IROH_ONLY = (Mode.IROH,)
_IROH_BOTH = (Mode.IROH, Mode.IROH_MANUAL)
_STUN_MODES = (Mode.IROH_MANUAL, Mode.CUSTOM_MANUAL, *NOSTR_ONLY)
_RECONNECTING = (Mode.IROH, Mode.NOSTR)  # modes whose receiver can start a new session alone

# Keys both sides share: how an endpoint reaches the network, and logging.
_COMMON = (
    Option(
        "stun_servers",
        "--stun-server",
        "STUN server HOST:PORT (repeatable; default: public Google STUN servers; an empty list in YAML disables STUN)",
        kind="list",
        metavar="HOST:PORT",
        modes=_STUN_MODES,
    ),
    Option(
        "no_stun",
        "--no-stun",
        "do not use STUN: host candidates / direct addresses only",
        kind="bool",
        default=False,
        modes=_STUN_MODES,
    ),
    *ICE_OPTIONS,
    Option(
        "relay_urls",
        "--relay-url",
        "iroh relay server URL (repeatable; default: n0's public relays). With it, n0's internet "
        "discovery is off unless --dns-server names a server: the receiver then needs the sender's ticket",
        kind="list",
        default=(),
        metavar="URL",
        modes=_IROH_ONLY,
    ),
    Option(
        "relay_only",
        "--relay-only",
        "send all traffic through the relays (needs --relay-url)",
        kind="bool",
        default=False,
        modes=_IROH_ONLY,
    ),
    Option(
        "relay_auth_token_file",
        "--relay-auth-token-file",
        "file holding the token sent to each --relay-url (private to its owner)",
        kind="path",
        metavar="PATH",
        modes=_IROH_ONLY,
    ),
    Option(
        "relay_ca_file",
        "--relay-ca-file",
        "PEM file of CA certificates trusted for the --relay-url servers' TLS (HTTPS, QUIC address "
        "discovery) besides the public web roots: a private relay with its own CA",
        kind="path",
        metavar="PATH",
        modes=_IROH_ONLY,
    ),
    Option(
        "dns_server",
        "--dns-server",
        "custom discovery server: a pkarr relay URL (https://...) or a DNS resolver IP:PORT (needs --relay-url)",
        metavar="URL|IP:PORT",
        modes=_IROH_ONLY,
    ),
    Option(
        "no_portmap",
        "--no-portmap",
        "do not ask the router for a port mapping (UPnP/PCP/NAT-PMP)",
        kind="bool",
        default=False,
        modes=_IROH_BOTH,
    ),
    Option(
        "no_relay",
        "--no-relay",
        "no relay servers and no internet discovery: direct addresses only (LAN/offline)",
        kind="bool",
        default=False,
        modes=_IROH_ONLY,
    ),
    Option(
        "bind",
        "--bind",
        "local IP:PORT the iroh endpoint binds; given alone, no socket of the other family is opened "
        "(default: all interfaces, random port)",
        metavar="IP:PORT",
        modes=_IROH_BOTH,
    ),
    Option(
        "bind6",
        "--bind6",
        "local [IPv6]:PORT the iroh endpoint binds, with or without --bind",
        metavar="[IP]:PORT",
        modes=_IROH_BOTH,
    ),
    *IROH_TRANSPORT_OPTIONS,
    Option(
        "log_format",
        "--log-format",
        "log format on stderr: json, console, or auto (console on a TTY, json otherwise)",
        default="auto",
        metavar="FMT",
    ),
    Option("log_level", "--log-level", "debug, info, warning or error", default="info", metavar="LEVEL"),
)

SENDER_OPTIONS: tuple[Option, ...] = (
    Option(
        "allowed_tcp",
        "--allowed-tcp",
        "CIDR of tcp sources receivers may ask for (repeatable; empty = no tcp source allowed)",
        kind="list",
        default=(),
        metavar="CIDR",
    ),
    Option(
        "allowed_udp",
        "--allowed-udp",
        "CIDR of udp sources receivers may ask for (repeatable; empty = no udp source allowed)",
        kind="list",
        default=(),
        metavar="CIDR",
    ),
    Option(
        "max_sessions",
        "--max-sessions",
        "concurrent sessions (one worker process each) before new receivers are refused as at capacity",
        kind="int",
        default=100,
        metavar="N",
        modes=_IROH_ONLY,
        bounds=(1, 100_000),
    ),
    *NOSTR_SENDER_OPTIONS,
    Option(
        "max_startups",
        "--max-startups",
        "handshakes from not yet authenticated peers at once; more are refused before any crypto",
        kind="int",
        default=32,
        metavar="N",
        modes=_IROH_ONLY,
        bounds=(1, 10_000),
    ),
    Option(
        "max_pending",
        "--max-pending",
        "admitted sessions whose receiver has not connected to its worker yet; more are refused as at "
        "capacity (a peer with many identities cannot hold every slot)",
        kind="int",
        default=16,
        metavar="N",
        modes=_IROH_ONLY,
        bounds=(1, 100_000),
    ),
    Option(
        "secret",
        "--secret",
        "sender identity as base64 of 32 bytes (prefer --secret-file: a flag shows up in ps and shell history)",
        kind="secret",
        metavar="B64",
        modes=_IROH_ONLY,
    ),
    Option(
        "secret_file",
        "--secret-file",
        "file with the sender's persistent identity (see "
        "generate-iroh-key); without it the EndpointId changes every start",
        kind="path",
        metavar="PATH",
        modes=_IROH_ONLY,
    ),
    Option(
        "authorized_keys",
        "--authorized-keys",
        "file of receiver EndpointIds allowed to connect, one per line, # comments",
        kind="path",
        metavar="PATH",
        modes=_IROH_ONLY,
    ),
    Option(
        "allow_any_receiver",
        "--allow-any-receiver",
        "accept any receiver EndpointId (the allow-lists still apply)",
        kind="bool",
        default=False,
        modes=_IROH_ONLY,
    ),
    Option(
        "ticket_file",
        "--ticket-file",
        "write the endpoint ticket (id + addresses) to this file once online",
        kind="path",
        metavar="PATH",
        modes=_IROH_ONLY,
    ),
    Option(
        "control",
        "--control",
        "path of the supervisor's local status socket (default: $XDG_RUNTIME_DIR/tunnel-py/supervisor.sock)",
        kind="path",
        metavar="PATH",
    ),
    Option(
        "drain_grace",
        "--drain-grace",
        "seconds live sessions get to finish after SIGTERM before their workers are stopped",
        kind="float",
        default=30.0,
        metavar="SECONDS",
        bounds=(0.1, 86_400),
    ),
    Option(
        "heartbeat_timeout",
        "--heartbeat-timeout",
        "seconds without a worker heartbeat before the worker is terminated as stale",
        kind="float",
        default=10.0,
        metavar="SECONDS",
        bounds=(1, 3_600),
    ),
    # -- metrics and dashboard (issue 11) --
    Option(
        "metrics_listen",
        "--metrics-listen",
        "serve Prometheus /metrics and the live dashboard on this IP:PORT (default: off; "
        "a non-loopback address needs --metrics-token-file)",
        metavar="IP:PORT",
    ),
    Option(
        "metrics_token_file",
        "--metrics-token-file",
        "private file (mode 0600) holding the bearer token every metrics/dashboard request must send "
        "as 'Authorization: Bearer TOKEN'",
        kind="path",
        metavar="PATH",
    ),
    *_COMMON,
)

RECEIVER_OPTIONS: tuple[Option, ...] = (
    Option(
        "node_id",
        "--node-id",
        "the sender's EndpointId, or a full endpoint ticket carrying its addresses (repeatable: "
        "several senders, tried in turn; a lost session reconnects through the next one; YAML: one or a list)",
        kind="list",
        metavar="ID_OR_TICKET",
        modes=_IROH_ONLY,
        scalar_ok=True,
    ),
    Option(
        "node_order",
        "--node-order",
        "with several --node-id: try them in the order given, or in an order drawn at random once (random "
        "spreads many receivers over the senders)",
        default="order",
        metavar="order|random",
        modes=_IROH_ONLY,
    ),
    Option("source", "--source", "service on the sender's side: tcp://HOST:PORT or udp://HOST:PORT", metavar="URL"),
    Option(
        "listen",
        "--listen",
        "local IP:PORT to listen on for the tunneled service (aliases: --target, -t; YAML: target)",
        metavar="IP:PORT",
        aliases=("--target", "-t"),
        key_aliases=("target",),
    ),
    *NOSTR_RECEIVER_OPTIONS,
    Option(
        "secret_file",
        "--secret-file",
        "receiver identity file (its EndpointId is what the sender's --authorized-keys lists); default: ephemeral",
        kind="path",
        metavar="PATH",
        modes=_IROH_ONLY,
    ),
    Option(
        "no_reconnect",
        "--no-reconnect",
        "exit when the session is lost (exit code 11; 10 if the sender cannot be reached) instead of "
        "reconnecting with backoff while the local listener stays up",
        kind="bool",
        default=False,
        modes=_RECONNECTING,
    ),
    Option(
        "reconnect_max",
        "--reconnect-max",
        "longest wait in seconds between reconnect attempts (exponential backoff with jitter)",
        kind="float",
        default=30.0,
        metavar="SECONDS",
        modes=_RECONNECTING,
        bounds=(1, 3_600),
    ),
    Option(
        "quiet",
        "--quiet",
        "no live status line on a TTY, and log only warnings and errors (for scripts)",
        kind="bool",
        default=False,
    ),
    *_COMMON,
)

# A key both tables declare (secret_file, and the _COMMON ones) has one default; a unit test
# checks they agree, so one lookup by key serves both models. A key declared twice for different
# modes (max_sessions) reads as its first declaration here; each mode gets its own from RawValues.
_DEFAULTS: dict[str, Any] = {}
for _option in (*SENDER_OPTIONS, *RECEIVER_OPTIONS):
    _DEFAULTS.setdefault(_option.key, _option.default)


def default_of(key: str) -> Any:
    """The option table's default for ``key``: what a typed model's field defaults to."""
    return _DEFAULTS[key]
