"""The ICE rows of the option table (custom-manual and nostr): host filter and TURN servers.

Spliced into the shared rows by :mod:`tunnelpy.common.options`; the TURN values are checked
by :func:`tunnelpy.common.turn.turn_options`.
"""

from __future__ import annotations

from tunnelpy.common.modes import Mode
from tunnelpy.common.option_spec import Option

ICE_MODES = (Mode.CUSTOM_MANUAL, Mode.NOSTR)

ICE_OPTIONS: tuple[Option, ...] = (
    Option(
        "ice_hosts",
        "--ice-host",
        "gather ICE host candidates only on this address, CIDR or "
        "interface (repeatable; default: every non-loopback interface)",
        kind="list",
        default=(),
        metavar="ADDR|CIDR|IFACE",
        modes=ICE_MODES,
    ),
    Option(
        "turn_servers",
        "--turn-server",
        "TURN server as an RFC 7065 URI: turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT] "
        "(TLS); a relay path when no direct one works, e.g. both sides behind symmetric NATs. "
        "Repeatable: a relay candidate is gathered from each (all share --turn-user and "
        "--turn-password-file); ICE tries direct pairs first and keeps the first pair that answers; "
        "YAML: one or a list",
        kind="list",
        metavar="URI",
        modes=ICE_MODES,
        scalar_ok=True,
    ),
    Option(
        "turn_user",
        "--turn-user",
        "user name for the --turn-server long-term credentials",
        metavar="USER",
        modes=ICE_MODES,
    ),
    Option(
        "turn_password_file",
        "--turn-password-file",
        "file holding the TURN password (private to its owner: chmod 600)",
        kind="path",
        metavar="PATH",
        modes=ICE_MODES,
    ),
)
