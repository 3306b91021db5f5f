"""Peers of the ICE modes inside the NAT lab (tests/nat/lab.py): tunnel-py processes in a lab
host, the traffic ends, a Nostr relay on the server host, and the result line each test prints.

The lab gives hosts, NATs and coturn; this module adds what the ICE tests need on top of it:
:class:`LabPeer` runs a :class:`~tunnelpy.bench.harness.Peer` through ``ip netns exec`` and
:class:`LabRelay` serves nostr-relay on PUBLIC_A inside the server namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.nat import traffic
from tests.nat.lab import PUBLIC_A, Host, Lab
from tests.nat.traffic import expected_sha256
from tunnelpy.bench import nostr_relay
from tunnelpy.bench.harness import Peer, cli_command

RELAY_PORT = 7447
SIZE = 2 * 1024 * 1024  # bytes per transfer: enough to cross many QUIC windows, quick on a relay


class LabPeer(Peer):
    """A tunnel-py process in one lab host (its log events parsed as for any Peer)."""

    def __init__(self, host: Host, name: str, args: list[str], work: Path) -> None:
        super().__init__(name, args, work, command=host.argv(cli_command()))
        self.host = host


class Peers:
    """Every LabPeer of a test, stopped at exit (before the lab deletes the namespaces)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.all: list[LabPeer] = []

    async def start(self, host: Host, name: str, args: list[str], *, stdin: int | None = None) -> LabPeer:
        peer = LabPeer(host, name, [*args, "--log-format", "json"], self.work)
        self.all.append(peer)
        await peer.start(stdin=asyncio.subprocess.DEVNULL if stdin is None else stdin)
        return peer

    async def __aenter__(self) -> Peers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for peer in reversed(self.all):
            await peer.stop(timeout=5)


def start_source(host: Host, size: int = SIZE, rate: float | None = None) -> int:
    """The ICE tests' source: SIZE known bytes to each client, on the host's 127.0.0.1."""
    return traffic.start_source(host, size, rate)


async def fetch(host: Host, address: str, size: int = SIZE, timeout: float = 60) -> dict[str, Any]:
    """Read everything from ``address`` inside ``host``; checks the bytes and returns the timings."""
    done = await fetch_raw(host, address, timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["bytes"] == size, result
    assert result["sha256"] == expected_sha256(size), "the transfer arrived corrupted"
    return result


async def fetch_raw(host: Host, address: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A fetch whose outcome the caller judges (it may be cut off by a drill)."""
    argv = [sys.executable, "-m", "tests.nat.traffic", "fetch", address, "--timeout", str(timeout)]
    return await asyncio.to_thread(host.run, argv, timeout + 10, False)


def turn_flags(turn: Any, work: Path, query: str = "") -> list[str]:
    """The TURN flags for the lab's coturn (``query``: e.g. ``?transport=tcp``)."""
    return [
        "--turn-server",
        turn.uri + query,
        "--turn-user",
        turn.user,
        "--turn-password-file",
        str(turn.password_file(work)),
    ]


async def status_json(control: Path) -> dict[str, Any]:
    """``tunnel-py status --json`` of a sender (its control socket is a file: any namespace reaches it)."""
    proc = await asyncio.create_subprocess_exec(
        *cli_command(), "status", "--control", str(control), "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return dict(json.loads(out))


async def connected_session(control: Path, timeout: float = 10) -> dict[str, Any]:
    """The sender's one session once its worker reports it connected with a path."""
    async with asyncio.timeout(timeout):
        while True:
            sessions = (await status_json(control))["sessions"]
            if sessions and sessions[0]["state"] == "connected" and sessions[0]["path"]:
                return dict(sessions[0])
            await asyncio.sleep(0.3)


async def paste(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy one printed block (up to its -----END line) to the other side, as a person would."""
    while line := await source.readline():
        sink.write(line)
        if line.startswith(b"-----END"):
            break
    await sink.drain()


def result_line(mode: str, lab_kinds: str, path: str, route: str, fetched: dict[str, Any], setup_s: float) -> str:
    """The one line per test the coordinator collects (pytest -s)."""
    return (
        f"NAT-RESULT mode={mode} nat={lab_kinds} path={path} route={route} "
        f"ttfb_s={fetched['ttfb_s']:.3f} setup_s={setup_s:.2f} transfer_s={fetched['total_s']:.2f} "
        f"bytes={fetched['bytes']}"
    )


# -- a Nostr relay on the server host ---------------------------------------------------------------

_WAIT_FOR_PORT = textwrap.dedent(
    """
    import socket, sys, time
    deadline = time.monotonic() + float(sys.argv[3])
    while True:
        try:
            socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"nothing listens on {sys.argv[1]}:{sys.argv[2]}")
            time.sleep(0.1)
    """
)


class LabRelay:
    """nostr-relay serving ws://PUBLIC_A:RELAY_PORT inside the lab's server namespace."""

    def __init__(self, lab: Lab, work: Path) -> None:
        if not nostr_relay.installed():
            raise RuntimeError(f"nostr-relay is not installed at {nostr_relay.RELAY_VENV}: run scripts/setup-test-env")
        folder = work / "relay"
        folder.mkdir(parents=True)
        relay = nostr_relay.Relay(folder, RELAY_PORT)  # only for its config file, bound on PUBLIC_A below
        relay.config.write_text(relay.config.read_text().replace(f"127.0.0.1:{RELAY_PORT}", f"{PUBLIC_A}:{RELAY_PORT}"))
        self.url = f"ws://{PUBLIC_A}:{RELAY_PORT}"
        self._log = (folder / "relay.log").open("ab")
        self._proc = lab.server.popen(
            [str(nostr_relay.RELAY_BIN), "-c", str(relay.config), "serve"],
            cwd=str(folder),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stop() ends the gunicorn worker too
        )
        waited = lab.server.run(
            [sys.executable, "-c", _WAIT_FOR_PORT, PUBLIC_A, str(RELAY_PORT), str(nostr_relay.START_TIMEOUT)],
            timeout=nostr_relay.START_TIMEOUT + 10,
            check=False,
        )
        if waited.returncode != 0:
            self.stop()
            tail = (folder / "relay.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"nostr-relay did not start in the lab: {waited.stderr.strip()}\n{tail}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(nostr_relay.STOP_TIMEOUT)
        self._log.close()
