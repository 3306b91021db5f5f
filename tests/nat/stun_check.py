"""Run inside a lab host: one UDP socket asks each STUN server for its mapped address.

    python3 -m tests.nat.stun_check [--timeout S] HOST:PORT HOST:PORT ...

Prints a JSON list of [ip, port, rtt_s] (one per server, in order; rtt_s of the answered
request); exits 1 when a server does not answer. Equal addresses = endpoint-independent
mapping (cone); different = symmetric.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from aioice import stun


def mapped(sock: socket.socket, server: tuple[str, int], timeout: float) -> tuple[str, int, float]:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        sent = time.monotonic()
        sock.sendto(bytes(request), server)
        sock.settimeout(min(0.25, left))
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            continue
        reply = stun.parse_message(data)
        if reply.transaction_id == request.transaction_id:
            ip, port = reply.attributes["XOR-MAPPED-ADDRESS"]
            return str(ip), int(port), time.monotonic() - sent
    raise TimeoutError(f"no STUN answer from {server[0]}:{server[1]} within {timeout} s")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("servers", nargs="+")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    found = []
    for server in args.servers:
        host, port = server.rsplit(":", 1)
        try:
            found.append(mapped(sock, (host, int(port)), args.timeout))
        except TimeoutError as exc:
            print(exc, file=sys.stderr)
            return 1
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
