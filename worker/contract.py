"""Wire format between the supervisor and its session workers (ZeroMQ, ipc, orjson).

The supervisor binds a ROUTER socket in a private 0700 directory; each worker connects a
DEALER whose routing id is its session id, so every frame the supervisor receives says which
session spoke. One message per frame, ``{"v": VERSION, "kind": ..., fields}``.

worker -> supervisor: :class:`WorkerReady` (the worker's endpoint ticket), :class:`Heartbeat`
(every ``heartbeat_interval``, with counters), :class:`StreamOpened` / :class:`StreamClosed`,
:class:`WorkerExiting` (why, just before exit).
supervisor -> worker: :class:`Drain` (refuse new streams, exit once idle), :class:`Stop`
(close the session now).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tunnelpy.common import messages

VERSION = 1


class Kind(enum.StrEnum):
    READY = "ready"
    HEARTBEAT = "heartbeat"
    STREAM_OPENED = "stream_opened"
    STREAM_CLOSED = "stream_closed"
    EXITING = "exiting"
    DRAIN = "drain"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """How the receiver reaches this worker: an iroh ticket, or ICE parameters + cert pin."""

    ticket: str = ""
    ice_ufrag: str = ""
    ice_pwd: str = ""
    candidates: tuple[str, ...] = ()
    cert_sha256: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    state: str  # waiting | connected | draining
    bytes_up: int
    bytes_down: int
    streams_open: int
    streams_total: int
    rtt_ms: float | None = None
    flows_open: int = 0


@dataclass(frozen=True, slots=True)
class StreamOpened:
    streams_open: int


@dataclass(frozen=True, slots=True)
class StreamClosed:
    streams_open: int


@dataclass(frozen=True, slots=True)
class WorkerExiting:
    reason: str
    exit_code: int


@dataclass(frozen=True, slots=True)
class Drain:
    pass


@dataclass(frozen=True, slots=True)
class Stop:
    reason: str


Message = WorkerReady | Heartbeat | StreamOpened | StreamClosed | WorkerExiting | Drain | Stop
_CODEC = messages.Codec(
    "worker protocol",
    VERSION,
    {
        WorkerReady: Kind.READY,
        Heartbeat: Kind.HEARTBEAT,
        StreamOpened: Kind.STREAM_OPENED,
        StreamClosed: Kind.STREAM_CLOSED,
        WorkerExiting: Kind.EXITING,
        Drain: Kind.DRAIN,
        Stop: Kind.STOP,
    },
)
encode = _CODEC.encode
decode = _CODEC.decode
