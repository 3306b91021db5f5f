"""A real iroh relay server for the tests: crates.io ``iroh-relay`` 1.4.1 (the iroh crate's
version), installed by ``scripts/setup-iroh-relay`` under the cache dir.

It runs in dev mode (``--dev``): relaying over plain HTTP on the address given, from a config
file written here. Nothing leaves the host (or the lab): no ACME (no Let's Encrypt section),
no metrics server, access checked locally (everyone, or ``access.shared_token``).

With ``qad=True`` it also runs its QUIC address discovery (QAD) server on ``QAD_PORT`` of the
same IP (the port iroh's clients probe). QUIC needs TLS even in dev mode, so a throwaway CA and
a server certificate for that IP are made in the work folder; endpoints trust the CA through
``--relay-ca-file`` (:attr:`IrohRelay.ca_file`). Endpoints behind a NAT learn their public
address that way, which direct paths through NATs need.

``popen`` / ``probe`` let the lab start it inside a network namespace (``host.popen``) and
check it from there; the defaults run it here and probe over loopback.

A missing binary fails the test with the instruction to run scripts/setup-test-env, never a skip.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

IROH_RELAY_VERSION = "1.4.1"
RELAY_BIN = Path(os.environ.get("TUNNELPY_CACHE", "/var/cache/tunnel-py")) / "iroh-relay" / "bin" / "iroh-relay"
QAD_PORT = 7842  # iroh_relay::defaults::DEFAULT_RELAY_QUIC_PORT: where clients send QAD probes
START_TIMEOUT = 20.0

# Runs in the relay's network namespace: polls /healthz until it answers 200 or time runs out.
_PROBE = """
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.05)
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def installed() -> bool:
    return RELAY_BIN.exists()


def make_certificates(workdir: Path, ip: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate (IP SAN ``ip``): (ca.pem, server.pem, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tunnel-py test relay CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_pem, 0o600)
    return ca_pem, cert_pem, key_pem


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class IrohRelay:
    """One ``iroh-relay --dev`` process with its config in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        ip: str = "127.0.0.1",
        port: int | None = None,
        *,
        tokens: Sequence[str] = (),
        qad: bool = False,
        popen: Callable[..., subprocess.Popen[Any]] = subprocess.Popen,
        probe: Callable[[str, float], bool] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.ip = workdir, ip
        self.port = port if port is not None else free_port(ip)
        self.url = f"http://{ip}:{self.port}"
        self.ca_file: Path | None = None
        self.config = workdir / "iroh-relay.toml"
        self.log = workdir / "iroh-relay.log"
        self._popen, self._probe = popen, probe or _probe_here
        self._proc: subprocess.Popen[Any] | None = None
        lines = [
            "enable_relay = true",
            f"http_bind_addr = {_toml_str(f'{ip}:{self.port}')}",
            "enable_metrics = false",  # no metrics listener at all
            f"enable_quic_addr_discovery = {'true' if qad else 'false'}",
        ]
        if tokens:
            lines.append("access.shared_token = [" + ", ".join(_toml_str(t) for t in tokens) + "]")
        if qad:  # QUIC needs a certificate even in dev mode (HTTP stays plain)
            self.ca_file, cert, key = make_certificates(workdir, ip)
            lines += [
                "[tls]",
                'cert_mode = "Manual"',  # files only: never ACME
                f"manual_cert_path = {_toml_str(str(cert))}",
                f"manual_key_path = {_toml_str(str(key))}",
                f"quic_bind_addr = {_toml_str(f'{ip}:{QAD_PORT}')}",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> IrohRelay:
        if not installed():
            pytest.fail(f"iroh-relay is not installed at {RELAY_BIN}: run scripts/setup-test-env")
        env = dict(os.environ, RUST_LOG=os.environ.get("TUNNELPY_RELAY_LOG", "warn"))
        with self.log.open("ab") as log:
            self._proc = self._popen(
                [str(RELAY_BIN), "--dev", "--config-path", str(self.config)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        if not self._probe(f"{self.url}/healthz", START_TIMEOUT) or not self.running:
            tail = self.log.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"iroh-relay at {self.url} did not start; its log ends with:\n{tail}")
        return self

    def stop(self) -> None:
        """Kill it at once (idempotent): the relay keeps nothing worth a graceful stop."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _probe_here(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def probe_in(host: Any) -> Callable[[str, float], bool]:
    """A probe run inside ``host``'s namespace (a lab Host with ``run``)."""

    def probe(url: str, timeout: float) -> bool:
        done = host.run([sys.executable, "-c", _PROBE, url, str(timeout)], timeout=timeout + 10, check=False)
        return done.returncode == 0

    return probe


@pytest.fixture
def iroh_relay(tmp_path: Path) -> Iterator[Callable[..., IrohRelay]]:
    """Call it (with IrohRelay's keywords) to start a relay; every one is stopped after the test."""
    started: list[IrohRelay] = []

    def start(**options: Any) -> IrohRelay:
        relay = IrohRelay(tmp_path / f"iroh-relay{len(started)}", **options)
        started.append(relay)
        return relay.start()

    yield start
    for relay in started:
        relay.stop()


def sender_args(flags: list[str], ticket_file: Path, control: Path) -> list[str]:
    """An iroh sender of the relay tests (loopback and NAT lab): any receiver, sources on 127/8."""
    return [
        "sender", "iroh", *flags, "--allow-any-receiver", "--allowed-tcp", "127.0.0.0/8",
        "--ticket-file", str(ticket_file), "--control", str(control), "--log-format", "json",
    ]  # fmt: skip


def receiver_args(flags: list[str], ticket: str, port: int, listen: str) -> list[str]:
    """An iroh receiver of the relay tests, for the source on the sender's 127.0.0.1:``port``."""
    return [
        "receiver", "iroh", *flags, "--node-id", ticket, "--source", f"tcp://127.0.0.1:{port}",
        "--target", listen, "--log-format", "json",
    ]  # fmt: skip
