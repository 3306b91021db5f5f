"""A real Nostr relay on 127.0.0.1: PyPI ``nostr-relay`` (sqlite), for the bench and the tests.

``scripts/setup-nostr-relay`` (called by ``scripts/setup-test-env``) installs it into its own
venv outside the clone. The bench shows nostr mode as skipped where it is missing; the tests
(``tests/nostr_relay.py``) fail with that instruction, never skip.

What this relay does with our events (checked by tests/integration/test_nostr_signal.py):
it accepts every kind (no ``is_certain_kind`` validator here), forwards ephemeral kinds
20000-29999 to live subscribers, and, unlike NIP-01's "not stored", keeps them in sqlite
until its garbage collector runs (every ``collect_interval`` s), so a new subscription with
``since`` gets recent ones again: a replay the receiving side must ignore.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

RELAY_VENV = Path(os.environ.get("TUNNELPY_CACHE", "/var/cache/tunnel-py")) / "nostr-relay-venv"
RELAY_BIN = RELAY_VENV / "bin" / "nostr-relay"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
MAX_EVENT_SIZE = 4096
"""Largest event content (characters) the relay stores: nostr-relay's own default, kept so tests
meet the same limit a small public relay would impose."""

_CONFIG = """\
DEBUG: false
relay_name: tunnel-py test relay
storage:
  sqlalchemy.url: sqlite+aiosqlite:///{db}
  validators:
    - nostr_relay.validators.is_not_too_large
    - nostr_relay.validators.is_signed
    - nostr_relay.validators.is_recent
max_event_size: {max_event_size}
garbage_collector:
  collect_interval: 300
gunicorn:
  bind: 127.0.0.1:{port}
  workers: 1
  loglevel: warning
  reload: false
authentication:
  enabled: false
"""


class RelayNotInstalled(RuntimeError):
    """scripts/setup-nostr-relay has not run on this machine."""


def installed() -> bool:
    return RELAY_BIN.exists()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts_websocket(port: int) -> bool:
    """True if 127.0.0.1:port answers a WebSocket upgrade with 101 (the relay is serving)."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(request.encode())
            return sock.recv(64).startswith(b"HTTP/1.1 101")
    except OSError:
        return False


class Relay:
    """One relay process (a gunicorn master and its worker, in their own process group)."""

    def __init__(self, workdir: Path, port: int, *, max_event_size: int = MAX_EVENT_SIZE) -> None:
        self.workdir, self.port = workdir, port
        self.url = f"ws://127.0.0.1:{port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self.config = workdir / "config.yaml"
        self.config.write_text(_CONFIG.format(db=workdir / "relay.sqlite3", port=port, max_event_size=max_event_size))
        self.log = workdir / "relay.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if not installed():
            raise RelayNotInstalled(f"nostr-relay is not installed at {RELAY_VENV}: run scripts/setup-nostr-relay")
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(RELAY_BIN), "-c", str(self.config), "serve"],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() ends the gunicorn worker too
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not accepts_websocket(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"nostr-relay on port {self.port} did not start; its log ends with:\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the relay's process group at once; idempotent.

        SIGKILL, not a graceful stop: gunicorn's graceful and quick shutdowns both take 2.5 s+
        here, the data is throwaway, and a relay that vanishes is what the tests simulate.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):  # the group: a stray gunicorn worker holds the port
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        """Stop, then start again on the same port (clients must reconnect by themselves)."""
        self.stop()
        self.start()


def start_relay(workdir: Path, *, max_event_size: int = MAX_EVENT_SIZE, running: bool = True) -> Relay:
    """A relay on a free 127.0.0.1 port, config and sqlite file under ``workdir``; started unless not ``running``."""
    workdir.mkdir(parents=True, exist_ok=True)
    relay = Relay(workdir, free_port(), max_event_size=max_event_size)
    if running:
        relay.start()
    return relay
