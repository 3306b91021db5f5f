"""``tunnel-py status``: ask a running supervisor for its sessions and print them."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import orjson
import zmq
import zmq.asyncio

from tunnelpy.common.errors import ConnectFailed
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


def render(reply: cw.StatusReply) -> str:
    lines = [
        f"mode {reply.mode}  endpoint {reply.endpoint_id}  sessions {len(reply.sessions)}/{reply.max_sessions}"
        + ("  DRAINING" if reply.draining else ""),
    ]
    if reply.totals:
        lines.append(_totals_line(reply.totals))
    if reply.sessions:
        lines.append(
            f"{'SESSION':16} {'RECEIVER':12} {'SOURCE':26} {'STATE':10} {'AGE':>7} {'UP':>9} "
            f"{'DOWN':>9} {'STREAMS':>9} {'RTT':>6} {'PATH':>6} {'PID':>7}"
        )
    for s in reply.sessions:
        rtt = "-" if s["rtt_ms"] is None else f"{s['rtt_ms']:.0f}ms"
        lines.append(
            f"{s['session_id']:16} {s['receiver_id'][:12]:12} {s['source'][:26]:26} {s['state']:10} "
            f"{s['age_s']:>6.0f}s {_size(s['bytes_up']):>9} {_size(s['bytes_down']):>9} "
            f"{s['streams_open']:>4}/{s['streams_total']:<4} {rtt:>6} {s['path'] or '-':>6} {s['pid'] or '-':>7}"
        )
    return "\n".join(lines)


def show_status(path: Path, as_json: bool) -> int:
    reply = asyncio.run(fetch_status(path))
    if as_json:
        print(orjson.dumps(dataclasses.asdict(reply), option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(reply))
    return 0
