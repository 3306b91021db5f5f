"""Which sender a receiver asks next when it names several (``--node-id`` repeated), sans-IO.

A receiver with senders ``A, B, C`` asks them in that order (``--node-order random``: in an
order drawn once per receiver, so a fleet of receivers spreads over the senders). Each attempt
is one *round*: every sender once, starting with the one after the sender it last used, so a
receiver whose session is lost goes to the next sender first instead of knocking again on the
one that just failed. A refusal by one sender may be accepted by another (a full, draining or
unreachable sender, but also one that does not know us or does not allow the source), so a
round moves on after any refusal; only when every sender failed does the round end, with
:func:`round_error`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tunnelpy.common.errors import ExitCode, TunnelError

# Refusals or failures that another try, later, may get past: the receiver's reconnect loop
# retries these with backoff (the others end the receiver with their exit code).
RETRYABLE = frozenset({ExitCode.CONNECTION_LOST, ExitCode.CONNECT_FAILED, ExitCode.AT_CAPACITY, ExitCode.DRAINING})


class SenderRotation:
    """Driven by the receiver's session: :meth:`round` gives the senders to try now, in order;
    :meth:`connected` records the one that carried the session, so the next round starts after it."""

    def __init__(self, node_ids: Sequence[str], order: str = "order", rng: random.Random | None = None) -> None:
        if not node_ids:
            raise ValueError("a receiver needs at least one sender")
        ids = list(dict.fromkeys(node_ids))  # a sender named twice is asked once per round
        if order == "random":
            (rng or random.Random()).shuffle(ids)
        self.order: tuple[str, ...] = tuple(ids)
        self._start = 0

    def round(self) -> tuple[str, ...]:
        """Every sender once, beginning after the sender that carried the last session."""
        return self.order[self._start :] + self.order[: self._start]

    def connected(self, node_id: str) -> None:
        self._start = (self.order.index(node_id) + 1) % len(self.order)


def round_error(errors: Sequence[TunnelError]) -> TunnelError:
    """What a round in which every sender failed ends with: a retryable error if there is one
    (a later round may find a sender with room), else the first sender's (e.g. every sender
    refused us as unauthorized: exit 3, as with one sender)."""
    retryable = [exc for exc in errors if exc.exit_code in RETRYABLE]
    return retryable[-1] if retryable else errors[0]
