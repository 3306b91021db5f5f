"""The QUIC transport rows of the option table (the iroh endpoint's), like tunnel-rs's
``[iroh.transport]``: congestion controller, windows, keep-alive, idle timeout, MTU bound.

Spliced into the shared rows by :mod:`tunnelpy.common.options`; kept apart to keep that
module small.
"""

from __future__ import annotations

from tunnelpy.common.modes import Mode
from tunnelpy.common.option_spec import Option

_IROH_BOTH = (Mode.IROH, Mode.IROH_MANUAL)

IROH_TRANSPORT_OPTIONS: tuple[Option, ...] = (
    Option(
        "congestion",
        "--congestion",
        "QUIC congestion controller: default, cubic, newreno or bbr3",
        default="default",
        metavar="NAME",
        modes=_IROH_BOTH,
    ),
    Option(
        "receive_window",
        "--receive-window",
        "QUIC receive window of the connection and of each stream, bytes (0 = iroh's default)",
        kind="int",
        default=0,
        metavar="BYTES",
        modes=_IROH_BOTH,
        bounds=(0, 1 << 30),
    ),
    Option(
        "send_window",
        "--send-window",
        "QUIC send window, bytes (0 = iroh's default)",
        kind="int",
        default=0,
        metavar="BYTES",
        modes=_IROH_BOTH,
        bounds=(0, 1 << 30),
    ),
    Option(
        "keep_alive",
        "--keep-alive",
        "seconds between QUIC keep-alives on an idle connection",
        kind="float",
        default=5.0,
        metavar="S",
        modes=_IROH_BOTH,
        bounds=(0.5, 600),
    ),
    Option(
        "idle_timeout",
        "--idle-timeout",
        "seconds without a packet from the peer before a connection is dead (its worker then ends)",
        kind="float",
        default=15.0,
        metavar="S",
        modes=_IROH_BOTH,
        bounds=(1, 3_600),
    ),
    Option(
        "max_mtu",
        "--max-mtu",
        "upper bound of QUIC path-MTU discovery, bytes (0 = iroh's default)",
        kind="int",
        default=0,
        metavar="BYTES",
        modes=_IROH_BOTH,
        bounds=(0, 65_527),
    ),
)
