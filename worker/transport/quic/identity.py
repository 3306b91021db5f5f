"""The sender's per-session QUIC identity: a self-signed certificate the receiver pins.

The sender (QUIC server) creates a fresh certificate per session; its SHA-256 travels in the
signaling answer, and the receiver (QUIC client) compares it with the certificate it is shown.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVER_NAME = "tunnel-py"


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """The sender's per-session certificate and key; ``fingerprint`` goes into the answer."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    fingerprint: str


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the certificate's DER encoding."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def create_server_identity() -> ServerIdentity:
    """A fresh EC P-256 self-signed certificate; nobody verifies it except by its pin."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ServerIdentity(certificate, key, certificate_fingerprint(certificate))


def pin_mismatch(certificate: x509.Certificate | None, pinned_sha256: str) -> str | None:
    """Why ``certificate`` fails the pin (lowercase hex SHA-256), or None if it matches."""
    actual = certificate_fingerprint(certificate) if certificate is not None else "(none)"
    if hmac.compare_digest(actual, pinned_sha256):
        return None
    return (
        f"the peer's QUIC certificate has SHA-256 {actual}, but the answer pinned "
        f"{pinned_sha256}: the answer is from another session or the path is tampered "
        "with; run both sides again and paste the fresh answer"
    )
