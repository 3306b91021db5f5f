"""The tunnel modes: their names (CLI subcommands, the YAML ``mode`` key) and what each one is.

The one list of modes; the CLI, the config and the bench read it from here. ``Mode`` is a
``StrEnum``, so a mode compares equal to its name as typed by a user.
"""

from __future__ import annotations

import enum


class Mode(enum.StrEnum):
    IROH = "iroh"
    IROH_MANUAL = "iroh-manual"
    CUSTOM_MANUAL = "custom-manual"
    NOSTR = "nostr"

    @property
    def implemented(self) -> bool:
        return self in IMPLEMENTED

    @property
    def one_shot(self) -> bool:
        """Copy-paste modes serve one session: the sender exits after it."""
        return self in (Mode.IROH_MANUAL, Mode.CUSTOM_MANUAL)

    @property
    def summary(self) -> str:
        return _SUMMARIES[self]


IMPLEMENTED = (Mode.IROH, Mode.IROH_MANUAL, Mode.CUSTOM_MANUAL, Mode.NOSTR)

_SUMMARIES = {
    Mode.IROH: "iroh: persistent EndpointId, discovery, relay fallback; many receivers",
    Mode.IROH_MANUAL: "iroh with copy-paste signaling (OFFER/ANSWER blocks), relays off; one session",
    Mode.CUSTOM_MANUAL: "full ICE + QUIC with copy-paste signaling (OFFER/ANSWER blocks); one session",
    Mode.NOSTR: "full ICE + QUIC signaled over Nostr relays, end-to-end encrypted; many receivers",
}
