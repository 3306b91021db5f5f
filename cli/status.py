"""``tunnel-py status``: ask a running supervisor for its sessions and print them.

``--check`` and ``--alive`` are for health probes (a container's HEALTHCHECK, Kubernetes'
readiness and liveness): one line, and an exit code instead of the table.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import orjson
import zmq
import zmq.asyncio

from tunnelpy.common.errors import ConnectFailed, ExitCode
from tunnelpy.supervisor import control_wire as cw

STATUS_TIMEOUT = 3.0


async def fetch_status(path: Path, timeout: float = STATUS_TIMEOUT) -> cw.StatusReply:
    if not path.exists():
        raise ConnectFailed(f"no supervisor control socket at {path}: is the sender running? (see --control)")
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{path}")
        await sock.send(cw.encode(cw.StatusRequest()))
        async with asyncio.timeout(timeout):
            reply = cw.decode(await sock.recv())
    except TimeoutError as exc:
        raise ConnectFailed(f"the supervisor at {path} did not answer within {timeout:.0f} s") from exc
    finally:
        sock.close(0)
        ctx.term()
    return reply


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _totals_line(t: dict) -> str:  # type: ignore[type-arg]
    refused = ", ".join(f"{why} {n}" for why, n in t["sessions_refused"].items() if n) or "none"
    setup = t["setup_seconds"]
    mean = f"{setup['sum'] / setup['count']:.2f}s" if setup["count"] else "-"
    return (
        f"admitted {t['sessions_admitted']}  refused {refused}  setup mean {mean}  "
        f"up {_size(t['bytes_up'])}  down {_size(t['bytes_down'])}  dropped datagrams {t['datagrams_dropped']}"
    )


def load_of(reply: cw.StatusReply) -> dict:  # type: ignore[type-arg]
    """How busy the sender is, for an operator or a script spreading receivers over senders.

    ``limit`` and ``free`` are None when the sender has no limit (nostr ``--max-sessions 0``);
    ``accepting`` is False while it starts, drains, is full or has ``--max-pending`` sessions
    still waiting for their receivers (it refuses new ones until one connects).
    """
    sessions, limit = len(reply.sessions), reply.max_sessions or None
    free = None if limit is None else max(limit - sessions, 0)
    online = bool(reply.endpoint_id)
    return {
        "sessions": sessions,
        "limit": limit,
        "free": free,
        "pending": reply.pending,
        "draining": reply.draining,
        "online": online,
        "accepting": online
        and not reply.draining
        and free != 0
        and not (reply.max_pending and reply.pending >= reply.max_pending),
    }


def _load_text(reply: cw.StatusReply) -> str:
    load = load_of(reply)
    limit = "unlimited" if load["limit"] is None else load["limit"]
    notes = ([] if load["free"] is None else [f"{load['free']} free"]) + (
        [f"{load['pending']} pending"] if load["pending"] else []
    )
    free = f" ({', '.join(notes)})" if notes else ""
    state = "DRAINING" if load["draining"] else "accepting" if load["accepting"] else "not accepting"
    return f"sessions {load['sessions']}/{limit}{free}  {state}"


def render(reply: cw.StatusReply) -> str:
    lines = [f"mode {reply.mode}  endpoint {reply.endpoint_id or '(starting)'}  {_load_text(reply)}"]
    if reply.totals:
        lines.append(_totals_line(reply.totals))
    if reply.sessions:
        lines.append(
            f"{'SESSION':16} {'RECEIVER':12} {'SOURCE':26} {'STATE':10} {'AGE':>7} {'UP':>9} "
            f"{'DOWN':>9} {'STREAMS':>9} {'RTT':>6} {'PATH':>6} {'PID':>7} ROUTE"
        )
    for s in reply.sessions:
        rtt = "-" if s["rtt_ms"] is None else f"{s['rtt_ms']:.0f}ms"
        lines.append(
            f"{s['session_id']:16} {s['receiver_id'][:12]:12} {s['source'][:26]:26} {s['state']:10} "
            f"{s['age_s']:>6.0f}s {_size(s['bytes_up']):>9} {_size(s['bytes_down']):>9} "
            f"{s['streams_open']:>4}/{s['streams_total']:<4} {rtt:>6} {s['path'] or '-':>6} {s['pid'] or '-':>7} "
            f"{s.get('route') or '-'}"
        )
        if len(s.get("paths", ())) > 1:  # multipath: every open path, the selected one first
            lines.append(f"{'':16} paths: {', '.join(s['paths'])}")
    return "\n".join(lines)


def show_status(path: Path, as_json: bool, probe: str | None = None) -> int:
    """Print the status (``--json``: the control reply plus ``load``); with ``probe`` print one
    line and exit 0 if the supervisor is ``alive`` (answers) or ``ready`` (online, not draining)."""
    reply = asyncio.run(fetch_status(path))  # no answer: ConnectFailed, exit 10
    if probe is not None:
        return health(reply, probe)
    if as_json:
        print(orjson.dumps(dataclasses.asdict(reply) | {"load": load_of(reply)}, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(reply))
    return 0


def health(reply: cw.StatusReply, probe: str) -> int:
    """``alive``: it answered, exit 0. ``ready``: 0 once the front door is online, 7 while it
    drains, 10 while it starts. A full sender stays ready (it is healthy, just busy)."""
    endpoint = reply.endpoint_id or "(starting)"
    if probe == "alive":
        code = ExitCode.OK
    elif reply.draining:
        code = ExitCode.DRAINING
    else:
        code = ExitCode.OK if reply.endpoint_id else ExitCode.CONNECT_FAILED
    verdict = {ExitCode.OK: probe, ExitCode.DRAINING: "draining", ExitCode.CONNECT_FAILED: "starting"}[code]
    print(f"{verdict}: {reply.mode} endpoint {endpoint}  {_load_text(reply)}")
    return int(code)
