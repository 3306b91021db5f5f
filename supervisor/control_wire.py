"""Wire format of the supervisor's local control socket (``--control PATH``, ZeroMQ ipc).

``tunnel-py status`` connects a REQ socket and sends :class:`StatusRequest`; the supervisor's
ROUTER answers :class:`StatusReply`: the sender's identity and limits, one
:class:`SessionView` dict per live session, and ``totals`` (admission counters, worker exits,
setup times, bytes over all sessions: :meth:`tunnelpy.supervisor.counters.Counters.totals`).
The same reply feeds the dashboard and the Prometheus collector.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from tunnelpy.common import messages

VERSION = 1  # new fields have defaults and unknown fields are ignored: old and new peers still agree


class Kind(enum.StrEnum):
    STATUS_REQUEST = "status_request"
    STATUS_REPLY = "status_reply"


@dataclass(frozen=True, slots=True)
class StatusRequest:
    pass


@dataclass(frozen=True, slots=True)
class SessionView:
    """One session as ``tunnel-py status`` shows it."""

    session_id: str
    receiver_id: str
    source: str
    state: str
    age_s: float
    bytes_up: int
    bytes_down: int
    streams_open: int
    streams_total: int
    rtt_ms: float | None
    pid: int | None
    flows_open: int = 0
    path: str | None = None  # "direct" or "relay" once connected
    paths: list[str] = field(default_factory=list)  # every open path, the selected first (Heartbeat.paths)
    lost_packets: int = 0
    datagrams_dropped: int = 0
    route: str | None = None  # ICE modes: the selected pair's candidate types, e.g. "srflx->srflx"


def view_dict(view: SessionView) -> dict:  # type: ignore[type-arg]
    """``view`` as a dict (its fields are flat: faster than dataclasses.asdict, which the status
    of 100 sessions, built every scrape and every SSE tick, would pay for)."""
    return {name: getattr(view, name) for name in SessionView.__slots__}  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class StatusReply:
    mode: str
    endpoint_id: str
    ticket: str
    draining: bool
    max_sessions: int
    sessions: tuple[dict, ...]  # SessionView fields
    totals: dict = field(default_factory=dict)  # Counters.totals()
    pending: int = 0  # sessions admitted whose receiver has not connected yet
    max_pending: int = 0  # their cap (--max-pending); 0 = none


Message = StatusRequest | StatusReply
_CODEC = messages.Codec(
    "control protocol", VERSION, {StatusRequest: Kind.STATUS_REQUEST, StatusReply: Kind.STATUS_REPLY}
)
encode = _CODEC.encode
decode = _CODEC.decode
