"""nostr mode's ICE restart decisions, sans-IO (``now`` given); the messages are in
:mod:`~tunnelpy.signaling.nostr_wire` (:class:`IceRestart`, :class:`IceRestarted`).

The sender acts on an :class:`IceRestart` only for a live session that the same receiver key
opened: the session table is keyed by ``(author, request session id)``, so another key,
allowed or not, can never restart someone else's session (it finds no session of its own).
Each restart generation is acted on once (it arrives once per relay and per republication).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from tunnelpy.signaling.nostr_wire import ACCEPT, Decision, IceRestart, IceRestarted, Ignore, Message, stale

RESTART_ANSWER_WAIT = 10.0
"""Seconds a receiver waits for :class:`IceRestarted` before it falls back to a new session."""

RESTART_REPUBLISH = 2.0
"""Seconds between republications of an unanswered :class:`IceRestart`."""


@dataclass(frozen=True, slots=True)
class LiveSession:
    """What the sender's front door remembers of a session it offered."""

    author: str  # the receiver's pubkey (lowercase hex) that requested it
    session_id: str  # the supervisor's session id (routes the restart to the worker)


class RestartGate:
    """The sender's filter in front of every decoded :class:`IceRestart`.

    ``opened()`` records each offered session, ``check()`` decides on a restart: the
    ``(author, session id)`` must name a live session of that author, the timestamp must be
    fresh (as for a request), and the generation must be newer than the last one acted on.
    At most ``capacity`` sessions are kept, the least recently used dropped first.
    """

    def __init__(self, *, max_age: float = 30.0, max_skew: float = 5.0, capacity: int = 1000) -> None:
        self.max_age, self.max_skew, self.capacity = max_age, max_skew, capacity
        self._live: OrderedDict[tuple[str, str], LiveSession] = OrderedDict()
        self._generation: dict[tuple[str, str], int] = {}

    def opened(self, author: str, request_id: str, session_id: str) -> None:
        key = (author.lower(), request_id)
        self._live[key] = LiveSession(author.lower(), session_id)
        self._live.move_to_end(key)
        while len(self._live) > self.capacity:
            old, _ = self._live.popitem(last=False)
            self._generation.pop(old, None)

    def ended(self, session_id: str) -> None:
        """The supervisor's session is over: no restart can reach it any more."""
        for key in [k for k, live in self._live.items() if live.session_id == session_id]:
            del self._live[key]
            self._generation.pop(key, None)

    def session_of(self, author: str, request_id: str) -> LiveSession | None:
        return self._live.get((author.lower(), request_id))

    def check(self, author: str, restart: IceRestart, now: float) -> Decision:
        key = (author.lower(), restart.session_id)
        if key not in self._live:
            return Ignore(f"no live session {restart.session_id} of author {author[:16]}")
        if (refused := stale("ICE restart", restart.timestamp, now, self.max_age, self.max_skew)) is not None:
            return refused
        if restart.generation <= self._generation.get(key, 0):
            return Ignore(f"ICE restart {restart.generation} of session {restart.session_id} already handled")
        self._generation[key] = restart.generation
        self._live.move_to_end(key)
        return ACCEPT


def check_restarted(msg: Message, author: str, peer: str, session_id: str, generation: int) -> Decision:
    """The receiver's filter: is ``msg`` our sender's answer to our restart ``generation``?"""
    if author.lower() != peer.lower():
        return Ignore(f"author {author[:16]} is not the sender we asked")
    if not isinstance(msg, IceRestarted):
        return Ignore(f"a {type(msg).__name__} is not an answer to an ICE restart")
    if msg.session_id != session_id or msg.generation != generation:
        return Ignore(f"ICE restart answer {msg.session_id}/{msg.generation}, ours is {session_id}/{generation}")
    return ACCEPT
