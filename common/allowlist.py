"""Sources a receiver may ask for, and the sender's CIDR allow-lists.

The decision is a pure function of the parsed source, the addresses it resolved to and the
lists: nothing is reachable unless a list admits it. An empty list denies every source of
its protocol (tunnel-rs allows all there, a bug we do not copy). A hostname is allowed only
if *every* address it resolves to is inside the list, and the worker dials exactly those
checked addresses, never resolving the name again (no DNS-rebinding gap).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tunnelpy.common.errors import ConfigError, ExitCode, TunnelError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Proto(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, slots=True)
class Source:
    """A service on the sender's side, as the receiver names it: ``tcp://host:port``."""

    proto: Proto
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.proto}://{host}:{self.port}"


class SourceNotAllowed(TunnelError):
    exit_code = ExitCode.NOT_ALLOWED


class SourceUnresolvable(TunnelError):
    exit_code = ExitCode.SOURCE_UNREACHABLE


def parse_source(text: str, *, what: str = "--source") -> Source:
    """Parse ``tcp://HOST:PORT`` or ``udp://HOST:PORT`` (IPv6 hosts in brackets)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{what} {text!r}: {exc}; expected tcp://HOST:PORT or udp://HOST:PORT") from exc
    if parts.scheme not in ("tcp", "udp"):
        raise ConfigError(f"{what} {text!r}: scheme must be tcp:// or udp://")
    if not parts.hostname or port is None or port == 0:
        raise ConfigError(f"{what} {text!r}: needs a host and a port 1-65535, e.g. tcp://127.0.0.1:22")
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(f"{what} {text!r}: only scheme://host:port is allowed")
    return Source(Proto(parts.scheme), parts.hostname, port)


def parse_socket_addr(text: str, *, what: str) -> tuple[str, int]:
    """Parse ``IP:PORT`` / ``[IPv6]:PORT`` (an IP, not a hostname; port 0 allowed)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdecimal()) or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{what} {text!r}: expected IP:PORT such as 127.0.0.1:2222 or [::1]:2222")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ConfigError(f"{what} {text!r}: {host!r} is not an IP address") from exc
    return host, int(port_text)


def parse_networks(items: Iterable[str], *, what: str) -> tuple[IPNetwork, ...]:
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"{what} {item!r}: not a CIDR such as 127.0.0.0/8 or ::1/128") from exc
    return tuple(nets)


@dataclass(frozen=True, slots=True)
class AllowLists:
    """Per-protocol CIDR lists; an empty list admits nothing."""

    tcp: tuple[IPNetwork, ...] = ()
    udp: tuple[IPNetwork, ...] = ()

    def networks(self, proto: Proto) -> tuple[IPNetwork, ...]:
        return self.tcp if proto is Proto.TCP else self.udp

    def check(self, source: Source, addresses: Iterable[str]) -> tuple[str, ...]:
        """Return the addresses to dial, or raise SourceNotAllowed naming the offender."""
        nets = self.networks(source.proto)
        flag = f"--allowed-{source.proto}"
        if not nets:
            raise SourceNotAllowed(f"{source} refused: the sender allows no {source.proto} sources ({flag} is empty)")
        addrs = tuple(dict.fromkeys(addresses))
        if not addrs:
            raise SourceUnresolvable(f"{source} refused: {source.host!r} resolved to no address")
        for text in addrs:
            addr = ipaddress.ip_address(text.split("%", 1)[0])
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                addr = addr.ipv4_mapped
            if not any(addr.version == net.version and addr in net for net in nets):
                via = "" if text == source.host else f" ({source.host} resolves to {text})"
                raise SourceNotAllowed(f"{source} refused: {text}{via} is outside the sender's {flag} list")
        return addrs


async def resolve(source: Source, *, timeout: float = 5.0) -> tuple[str, ...]:
    """Resolve the source host once; IP literals come back as they are."""
    try:
        ipaddress.ip_address(source.host)
        return (source.host,)
    except ValueError:
        pass
    socktype = socket.SOCK_STREAM if source.proto is Proto.TCP else socket.SOCK_DGRAM
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(source.host, source.port, type=socktype)
    except (OSError, TimeoutError) as exc:
        raise SourceUnresolvable(f"{source} refused: cannot resolve {source.host!r} ({exc or 'timeout'})") from exc
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))
