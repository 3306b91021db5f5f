"""Which local addresses ICE gathers host candidates on (``--ice-host``): a pure filter over
this host's interfaces, which :func:`local_interfaces` lists."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import ifaddr

from tunnelpy.common.errors import ConfigError


def local_interfaces() -> list[tuple[str, list[str]]]:
    """(interface name, addresses) of this host; IPv6 with a scope id (link-local) left out,
    as aioice does, since those cannot be bound without the scope."""
    result = []
    for adapter in ifaddr.get_adapters():
        addresses = []
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                addresses.append(ip.ip)
            elif ip.ip[2] == 0:
                addresses.append(ip.ip[0])
        result.append((adapter.name, addresses))
    return result


def select_host_addresses(host_filter: Sequence[str], interfaces: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Addresses to gather host candidates on: each entry is an IP of this host, a CIDR or an
    interface name (loopback allowed). Every entry must match something."""
    selected: list[str] = []
    for entry in host_filter:
        matches = _match_filter_entry(entry.strip(), interfaces)
        if not matches:
            known = ", ".join(f"{name} {' '.join(addrs)}" for name, addrs in interfaces)
            raise ConfigError(
                f"ICE host filter entry {entry!r} matches no local address or interface "
                f"(this host has: {known}); use one of those, a CIDR or an interface name"
            )
        selected += [address for address in matches if address not in selected]
    return selected


def _match_filter_entry(entry: str, interfaces: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    all_addresses = [ipaddress.ip_address(a) for _, addrs in interfaces for a in addrs]
    try:
        if "/" in entry:
            network = ipaddress.ip_network(entry, strict=False)
            return [str(a) for a in all_addresses if a in network]
        wanted = ipaddress.ip_address(entry)
        return [str(a) for a in all_addresses if a == wanted]
    except ValueError:
        return [a for name, addrs in interfaces if name == entry for a in addrs]
