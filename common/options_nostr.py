"""The option rows of nostr mode, spliced into the tables of :mod:`tunnelpy.common.options`.

Kept apart so that one mode's keys read together (and the table module stays small).
"""

from __future__ import annotations

from tunnelpy.common.modes import Mode
from tunnelpy.common.option_spec import Option

NOSTR_ONLY = (Mode.NOSTR,)
_NOSTR_ONLY = NOSTR_ONLY

# Used when no --relay is given: public relays, for users only (tests always name their own).
DEFAULT_NOSTR_RELAYS = ("wss://nos.lol", "wss://relay.nostr.net", "wss://relay.primal.net", "wss://relay.snort.social")
NSEC_ENV = "TUNNELPY_NSEC"


def _nostr_options(peer_help: str) -> tuple[Option, ...]:
    """The keys both sides of nostr mode have; only the meaning of --peer-npub differs."""
    return (
        Option(
            "nsec",
            "--nsec",
            f"our Nostr secret key, nsec1... or hex (prefer --nsec-file or ${NSEC_ENV}: a flag shows up in ps)",
            kind="secret",
            metavar="KEY",
            modes=_NOSTR_ONLY,
        ),
        Option(
            "nsec_file",
            "--nsec-file",
            f"file holding our Nostr secret key (see generate-nostr-key; mode 0600); or set ${NSEC_ENV}",
            kind="path",
            metavar="PATH",
            modes=_NOSTR_ONLY,
        ),
        Option("peer_npub", "--peer-npub", peer_help, kind="list", default=(), metavar="NPUB", modes=_NOSTR_ONLY),
        Option(
            "relays",
            "--relay",
            "Nostr relay URL, ws:// or wss:// (repeatable; publish to all, accept from any; "
            f"default: {', '.join(DEFAULT_NOSTR_RELAYS)})",
            kind="list",
            default=(),
            metavar="URL",
            modes=_NOSTR_ONLY,
        ),
    )


NOSTR_SENDER_OPTIONS: tuple[Option, ...] = (
    # Same key, another mode: a default of its own and 0 for "unlimited" (as in tunnel-rs).
    Option(
        "max_sessions",
        "--max-sessions",
        "concurrent sessions (one worker process each) before new receivers are refused as at capacity (0 = unlimited)",
        kind="int",
        default=10,
        metavar="N",
        modes=_NOSTR_ONLY,
        bounds=(0, 100_000),
    ),
    *_nostr_options("npub (or hex) of a receiver allowed to ask for sessions (repeatable; at least one)"),
    Option(
        "republish_interval",
        "--republish-interval",
        "seconds before the reply to a receiver that keeps asking (its offer got lost) is sent again",
        kind="float",
        default=5.0,
        metavar="SECONDS",
        modes=_NOSTR_ONLY,
        bounds=(0.5, 60),
    ),
    Option(
        "max_wait",
        "--max-wait",
        "seconds a session's worker waits for its receiver to connect after the offer",
        kind="float",
        default=120.0,
        metavar="SECONDS",
        modes=_NOSTR_ONLY,
        bounds=(1, 3_600),
    ),
)

NOSTR_RECEIVER_OPTIONS: tuple[Option, ...] = (
    *_nostr_options("npub (or hex) of the sender to ask"),
    Option(
        "republish_interval",
        "--republish-interval",
        "seconds before the request is published again while no reply came (doubling up to 60 s)",
        kind="float",
        default=5.0,
        metavar="SECONDS",
        modes=_NOSTR_ONLY,
        bounds=(0.5, 60),
    ),
    Option(
        "max_wait",
        "--max-wait",
        "seconds to wait for the sender's reply before giving up (exit 10)",
        kind="float",
        default=120.0,
        metavar="SECONDS",
        modes=_NOSTR_ONLY,
        bounds=(1, 3_600),
    ),
)
