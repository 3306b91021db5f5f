"""The selected ICE pair as tunnel-py names it: candidate types, route and path type (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import aioice


@dataclass(frozen=True, slots=True)
class SelectedPair:
    """The nominated candidate pair: addresses and candidate types (host, srflx, prflx, relay).

    A relay candidate's address is its allocation on the TURN server; a local srflx or prflx
    one is where the peer saw us (:func:`local_candidate_seen`).
    """

    local: tuple[str, int]
    local_type: str
    remote: tuple[str, int]
    remote_type: str

    @property
    def route(self) -> str:
        """The candidate types, local first: ``srflx->srflx``, ``relay->prflx``."""
        return f"{self.local_type}->{self.remote_type}"

    @property
    def relayed(self) -> bool:
        """A TURN allocation (ours or the peer's) carries the traffic."""
        return "relay" in (self.local_type, self.remote_type)

    @property
    def path(self) -> str:
        """``relay`` or ``direct``, as :class:`~tunnelpy.worker.transport.interface.TransportStats` says it."""
        return "relay" if self.relayed else "direct"

    def __str__(self) -> str:
        return (
            f"{self.local[0]}:{self.local[1]} ({self.local_type}) -> "
            f"{self.remote[0]}:{self.remote[1]} ({self.remote_type})"
        )


def local_candidate_seen(
    candidate: aioice.Candidate, seen: tuple[str, int] | None, gathered: Iterable[aioice.Candidate]
) -> tuple[str, tuple[str, int]]:
    """The valid pair's local candidate type and address as RFC 8445 section 7.2.5.3.1 names
    them: aioice pairs the host socket, but behind a NAT the peer saw our srflx address (a
    candidate we gathered) or a new, peer-reflexive one. ``seen``: the peer's view of us."""
    own = (candidate.host, candidate.port)
    if candidate.type != "host" or seen is None or seen == own:
        return candidate.type, own
    if any(c.type == "srflx" and (c.host, c.port) == seen for c in gathered):
        return "srflx", seen
    return "prflx", seen
