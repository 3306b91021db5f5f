"""A delay line for the NAT lab's routers, for kernels without tc netem.

    python3 -m tests.nat.delay --queue N --delay-ms D

The router sends every forwarded packet to NFQUEUE N (iptables); this process binds that queue
over nfnetlink (raw netlink, metadata only: no payload is copied to user space) and gives the
kernel its verdict D ms after each packet arrived. The delay is the same for every packet, so
packets leave in the order they came and one batch verdict ("accept every id up to X") per
tick lets them all go. Loss is the kernel's own (iptables `statistic`), not this process's.
Prints {"ready": N} once bound.
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
MSG_PACKET, MSG_VERDICT_BATCH, MSG_CONFIG = 0, 3, 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
CFG_CMD, CFG_PARAMS, CFG_QUEUE_MAXLEN = 1, 2, 3
CMD_BIND = 1
COPY_META = 1
ATTR_PACKET_HDR, ATTR_VERDICT_HDR = 1, 2
NF_ACCEPT = 1
QUEUE_MAXLEN = 200_000
TICK_S = 0.0005

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_GEN = struct.Struct("!BBH")  # nfgenmsg: family, version, res_id (queue number)
_ATTR = struct.Struct("=HH")


def _attr(kind: int, payload: bytes) -> bytes:
    raw = _ATTR.pack(_ATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(msg: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    body = _GEN.pack(socket.AF_UNSPEC, 0, queue) + attrs
    return _HDR.pack(_HDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body


def _configure(sock: socket.socket, queue: int) -> None:
    steps = [
        _attr(CFG_CMD, struct.pack("!BxH", CMD_BIND, socket.AF_INET)),
        _attr(CFG_PARAMS, struct.pack("!IB", 0, COPY_META)),
        _attr(CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)),
    ]
    for seq, attrs in enumerate(steps, 1):
        sock.send(_message(MSG_CONFIG, queue, attrs, seq, NLM_F_REQUEST | NLM_F_ACK))
        data = sock.recv(65536)
        _, kind, _, _, _ = _HDR.unpack_from(data)
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, _HDR.size)
            if error:
                raise OSError(-error, f"nfqueue config step {seq} refused")


def _packet_ids(data: bytes) -> list[int]:
    """The packet ids in one recv of queued-packet messages."""
    ids = []
    offset = 0
    while offset + _HDR.size <= len(data):
        length, kind, _, _, _ = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            break
        if kind == (NFNL_SUBSYS_QUEUE << 8) | MSG_PACKET:
            at = offset + _HDR.size + _GEN.size
            while at + _ATTR.size <= offset + length:
                size, attr = _ATTR.unpack_from(data, at)
                if size < _ATTR.size:
                    break
                if attr & 0x7FFF == ATTR_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, at + _ATTR.size)[0])
                    break
                at += (size + 3) & ~3
        offset += (length + 3) & ~3
    return ids


def run(queue: int, delay_s: float) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: bursts must not be lost here
    sock.bind((0, 0))
    _configure(sock, queue)
    print(json.dumps({"ready": queue}), flush=True)
    waiting: collections.deque[tuple[float, int]] = collections.deque()
    seq = 100
    while True:
        now = time.monotonic()
        timeout = TICK_S if waiting else 1.0
        readable, _, _ = select.select(
            [sock], [], [], max(0.0, min(timeout, waiting[0][0] + delay_s - now)) if waiting else timeout
        )
        if readable:
            while True:
                try:
                    data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except OSError as exc:  # ENOBUFS: the kernel dropped what did not fit (a loss)
                    if exc.errno != errno.ENOBUFS:
                        raise
                    continue
                arrived = time.monotonic()
                waiting.extend((arrived, packet_id) for packet_id in _packet_ids(data))
        now = time.monotonic()
        last = None
        while waiting and waiting[0][0] + delay_s <= now:
            last = waiting.popleft()[1]
        if last is not None:
            seq += 1
            sock.send(
                _message(MSG_VERDICT_BATCH, queue, _attr(ATTR_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, last)), seq)
            )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args()
    run(args.queue, args.delay_ms / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
