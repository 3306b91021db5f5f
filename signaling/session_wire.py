"""Wire format of the iroh front door: receiver <-> sender supervisor (ALPN ``tunnel-py/session``).

One bi-stream per session request. Each message is a u32 big-endian length followed by an
orjson object (see :mod:`tunnelpy.common.messages`), at most :data:`MAX_MESSAGE` bytes:

* receiver -> supervisor: :class:`SessionRequest` (the source it wants);
* supervisor -> receiver: :class:`SessionAccepted` (the session's worker endpoint ticket) or
  :class:`SessionRejected` (a :class:`RejectReason` and a message the receiver prints).

The version lives in the messages, not the ALPN, so a mismatch becomes a readable rejection
instead of a failed TLS handshake.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from tunnelpy.common import messages
from tunnelpy.common.errors import ExitCode, ProtocolError

VERSION = 1
ALPN = b"tunnel-py/session"
MAX_MESSAGE = 16 * 1024
_LENGTH = struct.Struct(">I")
LENGTH_SIZE = _LENGTH.size


class Kind(enum.StrEnum):
    REQUEST = "session_request"
    ACCEPTED = "session_accepted"
    REJECTED = "session_rejected"


class RejectReason(enum.StrEnum):
    UNAUTHORIZED = "unauthorized"
    NOT_ALLOWED = "not_allowed"
    AT_CAPACITY = "at_capacity"
    VERSION_MISMATCH = "version_mismatch"
    DRAINING = "draining"
    SOURCE_UNREACHABLE = "source_unreachable"
    INTERNAL = "internal"

    @property
    def exit_code(self) -> ExitCode:
        return _EXIT_CODES[self]


_EXIT_CODES = {
    RejectReason.UNAUTHORIZED: ExitCode.UNAUTHORIZED,
    RejectReason.NOT_ALLOWED: ExitCode.NOT_ALLOWED,
    RejectReason.AT_CAPACITY: ExitCode.AT_CAPACITY,
    RejectReason.VERSION_MISMATCH: ExitCode.VERSION_MISMATCH,
    RejectReason.DRAINING: ExitCode.DRAINING,
    RejectReason.SOURCE_UNREACHABLE: ExitCode.SOURCE_UNREACHABLE,
    RejectReason.INTERNAL: ExitCode.ERROR,
}


@dataclass(frozen=True, slots=True)
class SessionRequest:
    source: str  # tcp://HOST:PORT or udp://HOST:PORT
    # Which receiver process asks (random per process), and the session it held before a
    # reconnect: the sender replaces that receiver's older sessions at once (ghost slots).
    instance: str = ""
    replaces: str = ""


@dataclass(frozen=True, slots=True)
class SessionAccepted:
    session_id: str
    worker_ticket: str  # iroh EndpointTicket of the session's worker


@dataclass(frozen=True, slots=True)
class SessionRejected:
    reason: RejectReason
    message: str


Message = SessionRequest | SessionAccepted | SessionRejected
_CODEC = messages.Codec(
    "session protocol",
    VERSION,
    {SessionRequest: Kind.REQUEST, SessionAccepted: Kind.ACCEPTED, SessionRejected: Kind.REJECTED},
)


def encode(msg: Message) -> bytes:
    body = _CODEC.encode(msg)
    if len(body) > MAX_MESSAGE:
        raise ProtocolError(f"session message of {len(body)} bytes exceeds {MAX_MESSAGE}")
    return _LENGTH.pack(len(body)) + body


def decode(body: bytes) -> Message:
    return _CODEC.decode(body)


class MessageDecoder:
    """Sans-IO framing: feed bytes as they arrive, take whole messages out.

    The length prefix is checked before any of the body is buffered, so a peer cannot make
    us hold more than :data:`MAX_MESSAGE` bytes.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._length: int | None = None

    def wanted(self) -> int:
        """How many more bytes the next message needs (at least 1)."""
        if self._length is None:
            return max(1, _LENGTH.size - len(self._buffer))
        return max(1, _LENGTH.size + self._length - len(self._buffer))

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if self._length is None and len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > MAX_MESSAGE:
                raise ProtocolError(f"session message of {length} bytes exceeds {MAX_MESSAGE}: not a tunnel-py peer?")
            self._length = length

    def next(self) -> Message | None:
        """The next whole message, or None until more bytes are fed."""
        if self._length is None or len(self._buffer) < _LENGTH.size + self._length:
            return None
        end = _LENGTH.size + self._length
        body = bytes(self._buffer[_LENGTH.size : end])
        del self._buffer[:end]
        self._length = None
        self.feed(b"")
        return decode(body)

    def eof(self) -> None:
        """The peer finished: an error unless we are between messages."""
        if self._length is None and self._buffer:
            raise ProtocolError("session message truncated: the peer closed inside the length prefix")
        if self._length is not None:
            raise ProtocolError("session message truncated: the peer closed mid-message")
