"""Traffic ends that run inside lab hosts (the pytest process cannot reach a namespace's
loopback). Both print one JSON line.

    python3 -m tests.nat.traffic serve PORT SIZE [--rate BYTES_PER_S]
        listens on 127.0.0.1:PORT (or --host), prints {"ready": PORT}, then sends SIZE deterministic bytes to
        every connection (paced to --rate when given, so a transfer can span a drill)
    python3 -m tests.nat.traffic fetch HOST:PORT [--timeout S] [--for S]
        connects (retrying until --timeout), reads to EOF (or for --for seconds after the first
        byte), prints {"bytes": N, "sha256": HEX, "ttfb_s": S, "total_s": S, "mb_s": RATE,
        "max_gap_s": S}
        (mb_s: MB/s from the first byte on)

`expected_sha256(size)` is what a fetch of an intact transfer prints.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.nat.lab import Host

CHUNK = 64 * 1024


def _chunks(size: int):  # type: ignore[no-untyped-def]
    block = hashlib.sha256(b"tunnel-py nat lab").digest() * (CHUNK // 32)
    sent = 0
    counter = 0
    while sent < size:
        piece = bytes([counter % 251]) + block[1 : min(CHUNK, size - sent)]
        counter += 1
        sent += len(piece)
        yield piece


def expected_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for piece in _chunks(size):
        digest.update(piece)
    return digest.hexdigest()


def _send(conn: socket.socket, size: int, rate: float | None) -> None:
    start = time.monotonic()
    sent = 0
    with conn, contextlib.suppress(OSError):  # a reader that stops early (a timed fetch) resets
        for piece in _chunks(size):
            conn.sendall(piece)
            sent += len(piece)
            if rate:
                ahead = sent / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(30)
        while conn.recv(CHUNK):
            pass


def serve(port: int, size: int, rate: float | None, host: str = "127.0.0.1") -> int:
    listener = socket.create_server((host, port))
    print(json.dumps({"ready": listener.getsockname()[1]}), flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_send, args=(conn, size, rate), daemon=True).start()


def start_source(host: Host, size: int, rate: float | None = None, listen: str = "127.0.0.1") -> int:
    """Run `serve` in a lab host (from the test's side): sends ``size`` known bytes to each client
    (at ``rate`` bytes/s when given, so that a transfer can span a drill); returns its port."""
    pace = ["--rate", str(rate)] if rate else []
    argv = [sys.executable, "-m", "tests.nat.traffic", "serve", "0", str(size), "--host", listen, *pace]
    proc = host.popen(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return int(json.loads(proc.stdout.readline())["ready"])


def fetch(target: str, timeout: float, seconds: float | None = None) -> dict[str, object]:
    host, port = target.rsplit(":", 1)
    start = time.monotonic()
    while True:
        try:
            conn = socket.create_connection((host, int(port)), timeout=5)
            break
        except OSError:
            if time.monotonic() - start > timeout:
                raise
            time.sleep(0.1)
    digest = hashlib.sha256()
    total = after_first = 0
    first: float | None = None
    last = gap = 0.0
    conn.settimeout(timeout)
    with conn:
        while data := conn.recv(CHUNK):
            now = time.monotonic()
            if first is None:
                first = now
            else:
                after_first += len(data)
                gap = max(gap, now - last)
            last = now
            digest.update(data)
            total += len(data)
            if seconds is not None and now - first >= seconds:
                break
    end = time.monotonic()
    return {
        "bytes": total,
        "sha256": digest.hexdigest(),
        "ttfb_s": round((first or end) - start, 3),
        "total_s": round(end - start, 3),
        "mb_s": round(after_first / max(end - (first or end), 1e-9) / 1e6, 3),
        "max_gap_s": round(gap, 3),  # the longest wait between two reads after the first byte
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("size", type=int)
    s.add_argument("--rate", type=float)
    s.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    f = sub.add_parser("fetch")
    f.add_argument("target")
    f.add_argument("--timeout", type=float, default=60)
    f.add_argument("--for", dest="seconds", type=float)
    args = parser.parse_args()
    if args.cmd == "serve":
        return serve(args.port, args.size, args.rate, args.host)
    print(json.dumps(fetch(args.target, args.timeout, args.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
