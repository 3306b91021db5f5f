"""CA certificate files (PEM) a user names, read into DER for the native binding.

A certificate file is public material (no privacy check, unlike :mod:`private_files`); what it
decides is whom we trust, so a file that is not exactly PEM certificates is refused whole.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from tunnelpy.common.errors import ConfigError

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL)
MAX_BYTES = 1 << 20  # a CA bundle is a few hundred KB at most


def read_ca_file(path: str | None, what: str, relay_urls: object) -> tuple[bytes, ...]:
    """The DER certificates of the PEM file ``path`` (``what`` names its flag); () if unset."""
    if not path:
        return ()
    if not relay_urls:
        raise ConfigError(f"{what} needs --relay-url (the relay whose certificate it vouches for)")
    try:
        data = Path(path).read_bytes()[: MAX_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{what} {path}: larger than {MAX_BYTES} bytes; give a file of CA certificates")
    text = data.decode("ascii", errors="replace")
    blocks = _PEM.findall(text)
    if not blocks:
        raise ConfigError(f"{what} {path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
    try:
        return tuple(ssl.PEM_cert_to_DER_cert(block) for block in blocks)
    except ValueError as exc:
        raise ConfigError(f"{what} {path}: a certificate block is not valid base64 ({exc})") from exc
