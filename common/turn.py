"""TURN servers for the ICE modes: RFC 7065 URIs and the credentials, checked into :class:`TurnOptions`.

``turn:HOST[:PORT][?transport=udp|tcp]`` and ``turns:HOST[:PORT][?transport=tcp]`` (RFC 7065
section 3.1). The port defaults to 3478 for ``turn:`` and 5349 for ``turns:`` as the RFC says;
``turn:`` runs over UDP unless ``?transport=tcp``, ``turns:`` over TLS on TCP (aioice has no
DTLS, so ``turns:...?transport=udp`` is refused). One user and one password serve every
listed server (the long-term credential mechanism of RFC 8489 section 9.2): the password comes
from a private file, never from a flag. Every error names the flag or YAML key and says what
to write instead.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunnelpy.common.errors import ConfigError
from tunnelpy.common.private_files import read_secret

if TYPE_CHECKING:
    from tunnelpy.common.merge import RawValues

DEFAULT_PORTS = {"turn": 3478, "turns": 5349}  # RFC 7065 section 3.1 / RFC 8656 section 4
_EXAMPLE = "e.g. turn:turn.example.net:3478 or turns:turn.example.net:5349"


@dataclass(frozen=True, slots=True)
class TurnServer:
    """One TURN server: where it listens and how to reach it (``tls``: TLS over TCP)."""

    host: str  # a name or an IP (without brackets)
    port: int
    transport: str = "udp"  # "udp" or "tcp", the client-to-server leg
    tls: bool = False

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "turns" if self.tls else "turn"
        query = "" if self.transport == ("tcp" if self.tls else "udp") else f"?transport={self.transport}"
        return f"{scheme}:{host}:{self.port}{query}"


@dataclass(frozen=True, slots=True)
class TurnOptions:
    """The TURN servers both ICE agents gather relay candidates from (empty: no TURN).

    The password is kept out of the repr, so logging a config never shows it.
    """

    servers: tuple[TurnServer, ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_turn_uri(text: str, where: str) -> TurnServer:
    """One RFC 7065 URI; ``where`` (a flag or ``file: key``) starts every error."""
    uri = text.strip()
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise ConfigError(f"{where}: {text!r} is not a TURN URI: start it with turn: or turns: ({_EXAMPLE})")
    if rest.startswith("//"):
        raise ConfigError(f"{where}: {text!r}: a TURN URI has no // (RFC 7065): write {scheme}:{rest[2:]}")
    address, _, query = rest.partition("?")
    if "@" in address:
        raise ConfigError(
            f"{where}: {text!r}: a TURN URI carries no user name (RFC 7065); "
            "give it with --turn-user and the password with --turn-password-file"
        )
    host, port = _host_port(address, DEFAULT_PORTS[scheme], text, where)
    tls = scheme == "turns"
    transport = _transport(query, tls, text, where)
    return TurnServer(host=host, port=port, transport=transport, tls=tls)


def _host_port(address: str, default_port: int, text: str, where: str) -> tuple[str, int]:
    if address.startswith("["):
        host, bracket, tail = address[1:].partition("]")
        if not bracket:
            raise ConfigError(f"{where}: {text!r}: an IPv6 address needs its closing ] (turn:[2001:db8::1]:3478)")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{where}: {text!r}: {host!r} inside [ ] is not an IPv6 address") from None
        if tail and not tail.startswith(":"):
            raise ConfigError(f"{where}: {text!r}: expected :PORT after the ]")
        port_text = tail[1:] if tail else None
    else:
        if address.count(":") > 1:
            raise ConfigError(f"{where}: {text!r}: write an IPv6 address in brackets (turn:[2001:db8::1]:3478)")
        host, colon, port_text_or_empty = address.partition(":")
        port_text = port_text_or_empty if colon else None
    if not host:
        raise ConfigError(f"{where}: {text!r} names no host ({_EXAMPLE})")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(
            f"{where}: {text!r}: the port must be a number from 1 to 65535 "
            f"(or leave out ':PORT' for the default {default_port})"
        )
    return host, int(port_text)


def _transport(query: str, tls: bool, text: str, where: str) -> str:
    if not query:
        return "tcp" if tls else "udp"
    name, eq, value = query.partition("=")
    value = value.lower()
    if name.lower() != "transport" or not eq or value not in ("udp", "tcp"):
        raise ConfigError(f"{where}: {text!r}: the only query a TURN URI takes is ?transport=udp or ?transport=tcp")
    if tls and value == "udp":
        raise ConfigError(
            f"{where}: {text!r}: turns: over UDP would be DTLS, which is not supported; "
            "use turns:HOST:PORT (TLS over TCP) or turn:HOST:PORT"
        )
    return value


def turn_options(raw: RawValues) -> TurnOptions:
    """The TURN keys of the merged values (none in a mode without ICE)."""
    if "turn_servers" not in raw.values:
        return TurnOptions()
    where = raw.origin["turn_servers"]
    uris = raw.get("turn_servers") or ()
    servers = tuple(parse_turn_uri(uri, where) for uri in uris)
    if len(set(servers)) != len(servers):
        raise ConfigError(f"{where}: a TURN server is listed twice; keep one of each")
    user, password_file = raw.get("turn_user"), raw.get("turn_password_file")
    if not servers:
        for key in ("turn_user", "turn_password_file"):
            if raw.get(key):
                raise ConfigError(f"{raw.origin[key]} needs --turn-server turn:HOST:PORT (the server it logs in to)")
        return TurnOptions()
    if user is not None and not user.strip():
        raise ConfigError(f"{raw.origin['turn_user']}: the TURN user name is empty")
    if not user or not password_file:
        missing = "--turn-user U" if not user else "--turn-password-file F"
        raise ConfigError(
            f"{where} needs {missing}: TURN servers take the long-term credentials "
            "--turn-user U and --turn-password-file F (a file only you can read)"
        )
    hint = "write the TURN password into a file only you can read (chmod 600)"
    password = read_secret(Path(password_file), raw.origin["turn_password_file"], hint)
    return TurnOptions(servers=servers, username=user.strip(), password=password)
