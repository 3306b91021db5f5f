"""The supervisor <-> worker contract: what a worker is given, and what the two say over ZeroMQ.

Both sides import this module and nothing of each other's. A worker is started with a
:class:`WorkerSpec` (pickled over the forkserver's pipe, never on argv). It then talks to the
supervisor over ZeroMQ: the supervisor binds a ROUTER socket in a private 0700 directory;
each worker connects a DEALER whose routing id is its session id, so every frame the
supervisor receives says which session spoke. One message per frame,
``{"v": VERSION, "kind": ..., fields}`` (:mod:`tunnelpy.common.messages`).

worker -> supervisor: :class:`WorkerReady` (how the receiver reaches it), :class:`Heartbeat`
(every ``heartbeat_interval`` and at once on every stream open/close and on connect, with
counters), :class:`WorkerExiting` (why, just before exit).
supervisor -> worker: :class:`Drain` (refuse new streams, exit once idle), :class:`Stop`
(close the session now), :class:`IceRestart` (an ICE session's receiver lost its path: restart
ICE with its new parameters under the live QUIC connection), answered by the worker's
:class:`IceRestarted` (its new parameters, or ``error`` when it cannot restart).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tunnelpy.common import messages
from tunnelpy.common.allowlist import Source
from tunnelpy.common.config import NetOptions
from tunnelpy.signaling.ice_parameters import IceParameters

VERSION = 3  # 3: heartbeats carry lost packets, dropped datagrams and the path type (ICE restart kinds: additive)
ACCEPT_TIMEOUT = 30.0  # iroh mode: the receiver connects to its worker right after the answer
PASTE_WAIT = 300.0  # a copy-paste worker waits this long for a person to paste its ANSWER


class Transport(enum.StrEnum):
    """The stack a worker meets its receiver with."""

    IROH = "iroh"  # a fresh iroh endpoint (iroh, iroh-manual)
    ICE = "ice"  # ICE as the controlled agent, then a QUIC server (custom-manual, nostr)


class SessionState(enum.StrEnum):
    """A session's state as the supervisor shows it; the worker reports the middle three."""

    STARTING = "starting"  # spawned, not ready yet (supervisor only)
    WAITING = "waiting"  # ready, the receiver has not connected yet
    CONNECTED = "connected"
    DRAINING = "draining"
    STOPPING = "stopping"  # terminated by the supervisor (supervisor only)
    EXITING = "exiting"  # the worker said it is exiting (supervisor only)


@dataclass(frozen=True, slots=True)
class RendezvousSpec:
    """How the worker meets its receiver, and what it already knows of the peer."""

    transport: Transport = Transport.IROH
    ice_peer: IceParameters | None = None  # the receiver's ICE parameters (Transport.ICE)
    punch: tuple[str, ...] = ()  # the receiver's direct addresses (iroh-manual)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs; small, typed, and passed over a pipe (never argv)."""

    session_id: str
    source: Source
    addresses: tuple[str, ...]  # checked against the allow-list by the supervisor
    receiver_id: str  # the only EndpointId this worker accepts
    net: NetOptions
    control_endpoint: str  # zmq ipc endpoint of the supervisor's ROUTER
    supervisor_pid: int
    rendezvous: RendezvousSpec = field(default_factory=RendezvousSpec)
    heartbeat_interval: float = 1.0
    accept_timeout: float = ACCEPT_TIMEOUT
    log_format: str = "json"
    log_level: str = "info"


class Kind(enum.StrEnum):
    READY = "ready"
    HEARTBEAT = "heartbeat"
    EXITING = "exiting"
    DRAIN = "drain"
    STOP = "stop"
    ICE_RESTART = "ice_restart"
    ICE_RESTARTED = "ice_restarted"


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """How the receiver reaches this worker: an iroh ``ticket``, or ``ice`` parameters and the
    SHA-256 pin of the worker's QUIC certificate."""

    ticket: str = ""
    ice: IceParameters | None = None
    cert_sha256: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    state: SessionState
    bytes_up: int
    bytes_down: int
    streams_open: int
    streams_total: int
    rtt_ms: float | None = None
    flows_open: int = 0
    lost_packets: int = 0  # the transport's lost-packet counter
    datagrams_dropped: int = 0  # UDP datagrams dropped because the tunnel's send queue was full
    path: str | None = None  # "direct" or "relay" once connected (None: unknown)
    route: str | None = None  # ICE: the pair's candidate types, local first ("srflx->srflx", "relay->prflx")
    paths: tuple[str, ...] = ()  # every open path (iroh multipath), the selected first: "direct IP:PORT 3ms"


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


@dataclass(frozen=True, slots=True)
class IceRestart:
    """Restart ICE with the receiver's new parameters (``generation``: the restart's number)."""

    generation: int
    ice: IceParameters


@dataclass(frozen=True, slots=True)
class IceRestarted:
    """The worker's answer to :class:`IceRestart` of the same ``generation``: its new ICE
    parameters (it then runs the checks and moves the connection), or why it cannot."""

    generation: int
    ice: IceParameters | None = None
    error: str = ""


Message = WorkerReady | Heartbeat | WorkerExiting | Drain | Stop | IceRestart | IceRestarted
_CODEC = messages.Codec(
    "worker protocol",
    VERSION,
    {
        WorkerReady: Kind.READY,
        Heartbeat: Kind.HEARTBEAT,
        WorkerExiting: Kind.EXITING,
        Drain: Kind.DRAIN,
        Stop: Kind.STOP,
        IceRestart: Kind.ICE_RESTART,
        IceRestarted: Kind.ICE_RESTARTED,
    },
)
encode = _CODEC.encode
decode = _CODEC.decode
