"""Wire format of nostr mode: the plaintext carried, NIP-44 encrypted, inside Nostr events.

Sans-IO: this module turns messages into plaintext JSON strings and back and holds the
signaling decisions (which requests to act on, when to republish). The glue
(:mod:`tunnelpy.signaling.nostr_signal`) encrypts, signs and talks to relays.

One signaling exchange, receiver-initiated (receiver = ICE controlling and QUIC client pinning
the offer's certificate, sender's worker = ICE controlled and QUIC server, as in custom-manual)::

    receiver -> sender  TunnelRequest  (republished on a RepublishSchedule until answered)
    sender -> receiver  TunnelOffer    (or TunnelReject, with a RejectReason)
    receiver -> sender  TunnelAnswer   (confirmation, sent once)

An ICE restart (RFC 8445 section 9) of a live session, receiver-initiated when its path is lost::

    receiver -> sender  IceRestart     (same session_id, new ICE parameters, republished until answered)
    sender -> receiver  IceRestarted   (the worker's new ICE parameters; no answer: the receiver
                                        falls back to a new session after its deadline)

A peer that predates them refuses the kind (ProtocolError, unknown message kind) and ignores it.

The event
---------
Every message is one event of kind :data:`EVENT_KIND`, signed by its author's key (NIP-01),
with one ``["p", <recipient pubkey hex>]`` tag and no other tag; its content is the NIP-44 v2
encryption of the plaintext to the recipient. Relays and observers see who writes to whom
and when, but none of the source, addresses, ICE credentials or certificate pin (tunnel-rs
sends all of these in clear base64). Only the recipient can decrypt; only the author could
sign, so a decrypted message is authenticated by the event's author.

Why kind 24581 and not tunnel-rs's 24242: 24242 is taken (Blossom authorization events; nostr-sdk
knows it as ``BLOSSOM_AUTH`` and its ``LocalRelay`` rejects it), and a distinct kind keeps
tunnel-rs's plaintext events and ours from ever being mistaken for each other. 24581 is
in the ephemeral range 20000-29999 (relays forward, need not store) and no NIP assigns it.

The plaintext
-------------
``{"v": VERSION, "kind": "<MessageKind>", **fields}`` (:mod:`tunnelpy.common.messages`), at
most :data:`MAX_PLAINTEXT` bytes: larger input is rejected before it is parsed. A version
mismatch raises :class:`~tunnelpy.common.errors.VersionMismatch`, telling the user to run the
same tunnel-py version on both sides.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from typing import TypeAlias

from tunnelpy.common import messages
from tunnelpy.common.errors import ProtocolError
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.signaling.session_wire import RejectReason

VERSION = 1
EVENT_KIND = 24581
"""Nostr event kind of every tunnel-py signaling event (ephemeral range; see the module doc)."""

MAX_PLAINTEXT = 16 * 1024
"""Largest plaintext (UTF-8 bytes) we encode or decode; NIP-44 itself allows 65535.

A request with a dozen ICE candidates is ~1.5 KB. Relays cap event content on their own
(PyPI nostr-relay: 4096 characters by default, which holds ~2.5 KB of NIP-44 plaintext);
the glue logs such refusals per relay."""

MAX_REJECT_MESSAGE = 512
"""A reject's message is cut to this many UTF-8 bytes (at a character boundary, with '...')."""

SESSION_ID_BYTES = 8
MAX_GENERATION = 1_000_000  # ICE restarts of one session
_SESSION_ID = re.compile(rf"[0-9a-f]{{{2 * SESSION_ID_BYTES}}}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class MessageKind(enum.StrEnum):
    REQUEST = "tunnel_request"
    OFFER = "tunnel_offer"
    REJECT = "tunnel_reject"
    ANSWER = "tunnel_answer"
    ICE_RESTART = "ice_restart"
    ICE_RESTARTED = "ice_restarted"


def new_session_id() -> str:
    """A fresh session id: 8 random bytes as 16 lowercase hex characters."""
    return secrets.token_hex(SESSION_ID_BYTES)


class _FlatIce:
    """ICE credentials and candidates travel as flat fields of a message; ``ice`` gives them as
    the one :class:`IceParameters` shape."""

    __slots__ = ()
    ice_ufrag: str
    ice_pwd: str
    candidates: tuple[str, ...]

    @property
    def ice(self) -> IceParameters:
        return IceParameters(self.ice_ufrag, self.ice_pwd, self.candidates)


@dataclass(frozen=True, slots=True)
class TunnelRequest(_FlatIce):
    """Receiver -> sender: the source it wants and its ICE parameters.

    ``timestamp`` is the receiver's wall clock (unix seconds) when this copy was published;
    each republication carries a fresh one and the same ``session_id``.
    """

    session_id: str
    source: str  # tcp://HOST:PORT or udp://HOST:PORT
    ice_ufrag: str
    ice_pwd: str
    candidates: tuple[str, ...]
    timestamp: int

    @classmethod
    def create(cls, session_id: str, source: str, ice: IceParameters, timestamp: int) -> TunnelRequest:
        return cls(session_id, source, ice.ufrag, ice.pwd, tuple(ice.candidates), timestamp)


@dataclass(frozen=True, slots=True)
class TunnelOffer(_FlatIce):
    """Sender -> receiver: the session's ICE parameters and QUIC certificate pin."""

    session_id: str
    ice_ufrag: str
    ice_pwd: str
    candidates: tuple[str, ...]
    cert_sha256: str  # lowercase hex SHA-256 of the sender worker's certificate DER

    @classmethod
    def create(cls, session_id: str, ice: IceParameters, cert_sha256: str) -> TunnelOffer:
        return cls(session_id, ice.ufrag, ice.pwd, tuple(ice.candidates), cert_sha256)


@dataclass(frozen=True, slots=True)
class TunnelReject:
    """Sender -> receiver: the request is refused; ``reason.exit_code`` is the receiver's exit code.

    ``message`` (shown to the user) is cut to :data:`MAX_REJECT_MESSAGE` bytes on both
    encode and decode, so a peer cannot make us log or print an unbounded string.
    """

    session_id: str
    reason: RejectReason
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", cap_utf8(self.message, MAX_REJECT_MESSAGE))


@dataclass(frozen=True, slots=True)
class TunnelAnswer:
    """Receiver -> sender: the offer arrived; the receiver starts ICE."""

    session_id: str


@dataclass(frozen=True, slots=True)
class IceRestart(_FlatIce):
    """Receiver -> sender: restart ICE for the live session ``session_id`` (the request's id)
    with these new credentials and candidates. ``generation`` counts the session's restarts
    (1, 2, ...): republications share one; ``timestamp`` as in :class:`TunnelRequest`."""

    session_id: str
    generation: int
    ice_ufrag: str
    ice_pwd: str
    candidates: tuple[str, ...]
    timestamp: int

    @classmethod
    def create(cls, session_id: str, generation: int, ice: IceParameters, timestamp: int) -> IceRestart:
        return cls(session_id, generation, ice.ufrag, ice.pwd, tuple(ice.candidates), timestamp)


@dataclass(frozen=True, slots=True)
class IceRestarted(_FlatIce):
    """Sender -> receiver: the session's worker restarted ICE; its new parameters."""

    session_id: str
    generation: int
    ice_ufrag: str
    ice_pwd: str
    candidates: tuple[str, ...]

    @classmethod
    def create(cls, session_id: str, generation: int, ice: IceParameters) -> IceRestarted:
        return cls(session_id, generation, ice.ufrag, ice.pwd, tuple(ice.candidates))


Message: TypeAlias = TunnelRequest | TunnelOffer | TunnelReject | TunnelAnswer | IceRestart | IceRestarted

_CODEC = messages.Codec(
    "nostr signaling",
    VERSION,
    {
        TunnelRequest: MessageKind.REQUEST,
        TunnelOffer: MessageKind.OFFER,
        TunnelReject: MessageKind.REJECT,
        TunnelAnswer: MessageKind.ANSWER,
        IceRestart: MessageKind.ICE_RESTART,
        IceRestarted: MessageKind.ICE_RESTARTED,
    },
)


def cap_utf8(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` UTF-8 bytes, else cut at a character boundary + '...'."""
    raw = text.encode("utf-8", errors="replace")
    if len(raw) <= limit:
        return text
    # a cut inside a multi-byte character leaves an incomplete tail that "ignore" drops
    return raw[: limit - 3].decode("utf-8", errors="ignore") + "..."


def encode(msg: Message) -> str:
    """The plaintext of ``msg`` (JSON text), ready for NIP-44 encryption."""
    _check_fields(msg)
    body = _CODEC.encode(msg)
    if len(body) > MAX_PLAINTEXT:
        raise ProtocolError(
            f"nostr signaling: a {type(msg).__name__} of {len(body)} bytes exceeds {MAX_PLAINTEXT}: "
            "too many ICE candidates? limit them with --ice-host"
        )
    return body.decode()


def decode(plaintext: str) -> Message:
    """Parse a decrypted plaintext; raises ProtocolError (VersionMismatch for a version mismatch)."""
    # a character is at least one byte: an oversize string is refused before it is even encoded
    raw = b"" if len(plaintext) > MAX_PLAINTEXT else plaintext.encode("utf-8", errors="replace")
    if not raw or len(raw) > MAX_PLAINTEXT:
        size = "empty" if not plaintext else f"over {MAX_PLAINTEXT} bytes"
        raise ProtocolError(f"nostr signaling: the message is {size}: not a tunnel-py peer?")
    msg = _CODEC.decode(raw)
    _check_fields(msg)
    return msg  # type: ignore[no-any-return]


def _check_fields(msg: Message) -> None:
    if _SESSION_ID.fullmatch(msg.session_id) is None:
        raise ProtocolError(f"nostr signaling: session_id {msg.session_id[:40]!r} is not 16 lowercase hex digits")
    if isinstance(msg, TunnelOffer) and _SHA256_HEX.fullmatch(msg.cert_sha256) is None:
        raise ProtocolError("nostr signaling: offer cert_sha256 is not 64 lowercase hex digits")
    if isinstance(msg, IceRestart | IceRestarted) and not 0 < msg.generation <= MAX_GENERATION:
        raise ProtocolError(f"nostr signaling: ICE restart generation {msg.generation} is not 1-{MAX_GENERATION}")


# --- decisions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accept:
    """Act on this request."""


@dataclass(frozen=True, slots=True)
class Ignore:
    """Drop this request silently; ``reason`` is for the debug log only (never sent back)."""

    reason: str


Decision: TypeAlias = Accept | Ignore
ACCEPT = Accept()


def stale(what: str, timestamp: int, now: float, max_age: float, max_skew: float) -> Ignore | None:
    """Why a message published at ``timestamp`` is not fresh at ``now`` (older than ``max_age``
    s, or more than ``max_skew`` s ahead), or None; ``what`` names it in the reason."""
    age = now - timestamp
    if age > max_age:
        return Ignore(f"stale {what}: {age:.0f} s old, the limit is {max_age:.0f} s")
    if -age > max_skew:
        return Ignore(f"{what} from the future: {-age:.0f} s ahead, is the receiver's clock right?")
    return None


class RequestGate:
    """The sender's filter in front of every decoded :class:`TunnelRequest`; sans-IO (``now`` given).

    In order: the author must be allowed (before anything is cached, so strangers cannot
    fill the cache); the request's ``timestamp`` must be at most ``max_age`` s old and at
    most ``max_skew`` s ahead of ``now``; and its ``(author, session_id)`` must be new. The
    same request arrives once per relay and again at every republication: all but the first
    are ignored. An entry expires ``ttl`` s after it was last seen (a receiver republishes at
    least every 60 s, so its entry lives as long as it keeps asking); ``ttl >= max_age +
    max_skew`` makes anything that expired stale, so a later replay fails the age check.
    The cache holds at most ``capacity`` entries, dropping the least recently seen.
    """

    def __init__(
        self,
        allowed_authors: Collection[str] | None,
        *,
        max_age: float = 30.0,
        max_skew: float = 5.0,
        ttl: float = 120.0,
        capacity: int = 1000,
    ) -> None:
        """``allowed_authors``: lowercase hex pubkeys, or None to let any author through."""
        if ttl < max_age + max_skew:
            raise ValueError(f"ttl {ttl} must be at least max_age + max_skew ({max_age + max_skew}): replays")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.allowed = None if allowed_authors is None else frozenset(a.lower() for a in allowed_authors)
        self.max_age, self.max_skew, self.ttl, self.capacity = max_age, max_skew, ttl, capacity
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()  # key -> last seen, oldest first

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, author: str, request: TunnelRequest, now: float) -> Decision:
        if self.allowed is not None and author.lower() not in self.allowed:
            return Ignore(f"author {author[:16]} is not an authorized receiver")
        if (refused := stale("request", request.timestamp, now, self.max_age, self.max_skew)) is not None:
            return refused
        self._expire(now)
        key = (author.lower(), request.session_id)
        seen = key in self._seen
        self._seen[key] = now
        self._seen.move_to_end(key)
        if seen:
            return Ignore(f"duplicate of session {request.session_id}")
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return ACCEPT

    def _expire(self, now: float) -> None:
        while self._seen:
            key, last_seen = next(iter(self._seen.items()))
            if now - last_seen < self.ttl:
                return
            del self._seen[key]


def check_reply(msg: Message, author: str, peer: str, session_id: str) -> Decision:
    """The receiver's filter: is ``msg`` the offer/reject for our request from our sender?"""
    if author.lower() != peer.lower():
        return Ignore(f"author {author[:16]} is not the sender we asked")
    if not isinstance(msg, TunnelOffer | TunnelReject):
        return Ignore(f"a {type(msg).__name__} is not a reply to a request")
    if msg.session_id != session_id:
        return Ignore(f"reply for session {msg.session_id}, ours is {session_id}: an earlier run?")
    return ACCEPT


class RepublishSchedule:
    """When the receiver publishes its request again while it waits for a reply; pure (``now`` given).

    Delays start at ``interval`` and double up to ``max_interval``; nothing is scheduled at or
    after ``deadline`` (``started + max_wait``), where the receiver gives up. A late call
    schedules the next publication from the time it actually happened.
    """

    def __init__(self, interval: float, max_wait: float, now: float, *, max_interval: float = 60.0) -> None:
        if interval <= 0 or max_wait <= 0 or max_interval < interval:
            raise ValueError("need 0 < interval <= max_interval and max_wait > 0")
        self.max_interval = max_interval
        self.deadline = now + max_wait
        self._delay = interval
        self._next = now + interval

    def next_at(self) -> float | None:
        """When to publish again, or None: the deadline comes first."""
        return self._next if self._next < self.deadline else None

    def due(self, now: float) -> bool:
        nxt = self.next_at()
        return nxt is not None and now >= nxt

    def published(self, now: float) -> None:
        """The request was published again at ``now``: schedule the next time."""
        self._delay = min(self._delay * 2, self.max_interval)
        self._next = now + self._delay

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def wait_time(self, now: float) -> float:
        """Seconds from ``now`` until the next publication or the deadline, whichever is first."""
        nxt = self.next_at()
        return max(0.0, (self.deadline if nxt is None else nxt) - now)
