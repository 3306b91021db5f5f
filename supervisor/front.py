"""What the arbiter needs from a mode's front door (its signaling end).

A front door receives session requests in its mode's way (an iroh endpoint, a pasted block,
Nostr events), asks the :class:`~tunnelpy.supervisor.sessions.SessionService` to open each
one, and answers the receiver in its own wire format. The arbiter calls ``start`` (may fail
with a user error), then ``serve`` until it stops, then ``close``; ``endpoint_id`` and
``ticket`` feed the status view (empty where the mode has none).
"""

from __future__ import annotations

from typing import Protocol

from tunnelpy.signaling import session_wire as sw
from tunnelpy.supervisor.admission import Refused


class FrontDoor(Protocol):
    @property
    def endpoint_id(self) -> str: ...

    @property
    def ticket(self) -> str: ...

    async def start(self) -> None: ...

    async def serve(self) -> None: ...

    async def close(self) -> None: ...


def rejection(refused: Refused) -> sw.SessionRejected:
    """A refusal as the session wire's rejection (the reasons share their values)."""
    return sw.SessionRejected(sw.RejectReason(refused.reason.value), refused.message)
