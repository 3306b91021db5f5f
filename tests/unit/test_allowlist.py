"""Sources, socket addresses, CIDR lists and the allow decision (pure, plus one offline resolve)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from tunnelpy.common.allowlist import (
    AllowLists,
    Proto,
    Source,
    SourceNotAllowed,
    SourceUnresolvable,
    parse_networks,
    parse_socket_addr,
    parse_source,
    resolve,
)
from tunnelpy.common.errors import ConfigError, ExitCode

# -- parse_source --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "source", "canonical"),
    [
        ("tcp://127.0.0.1:22", Source(Proto.TCP, "127.0.0.1", 22), "tcp://127.0.0.1:22"),
        ("udp://10.0.0.1:53", Source(Proto.UDP, "10.0.0.1", 53), "udp://10.0.0.1:53"),
        ("tcp://[::1]:2222", Source(Proto.TCP, "::1", 2222), "tcp://[::1]:2222"),
        ("udp://[fe80::1]:65535", Source(Proto.UDP, "fe80::1", 65535), "udp://[fe80::1]:65535"),
        ("tcp://db.internal:5432", Source(Proto.TCP, "db.internal", 5432), "tcp://db.internal:5432"),
        ("tcp://localhost:1", Source(Proto.TCP, "localhost", 1), "tcp://localhost:1"),
        ("  tcp://localhost:80\n", Source(Proto.TCP, "localhost", 80), "tcp://localhost:80"),
    ],
)
def test_parse_source(text: str, source: Source, canonical: str) -> None:
    parsed = parse_source(text)
    assert parsed == source
    assert parsed.proto is source.proto
    assert str(parsed) == canonical


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("http://127.0.0.1:22", "scheme must be tcp:// or udp://"),
        ("sctp://127.0.0.1:22", "scheme must be tcp:// or udp://"),
        ("127.0.0.1:22", "scheme must be tcp:// or udp://"),
        ("junk", "scheme must be tcp:// or udp://"),
        ("", "scheme must be tcp:// or udp://"),
        ("tcp://127.0.0.1", "needs a host and a port 1-65535"),
        ("tcp://[::1]", "needs a host and a port 1-65535"),
        ("tcp://127.0.0.1:0", "needs a host and a port 1-65535"),
        ("tcp://:22", "needs a host and a port 1-65535"),
        ("tcp:127.0.0.1:22", "needs a host and a port 1-65535"),
        ("tcp://127.0.0.1:65536", "Port out of range"),
        ("tcp://127.0.0.1:ssh", "expected tcp://HOST:PORT or udp://HOST:PORT"),
        ("tcp://127.0.0.1:-1", "expected tcp://HOST:PORT or udp://HOST:PORT"),
        ("tcp://[not-an-ip]:22", "expected tcp://HOST:PORT or udp://HOST:PORT"),
        ("tcp://127.0.0.1:22/", "only scheme://host:port is allowed"),
        ("tcp://127.0.0.1:22/etc/passwd", "only scheme://host:port is allowed"),
        ("tcp://127.0.0.1:22?x=1", "only scheme://host:port is allowed"),
        ("tcp://127.0.0.1:22#frag", "only scheme://host:port is allowed"),
        ("tcp://user@127.0.0.1:22", "only scheme://host:port is allowed"),
    ],
)
def test_parse_source_errors_name_the_flag(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_source(text)
    assert str(info.value).startswith(f"--source {text!r}: ")
    assert problem in str(info.value)


def test_parse_source_names_the_given_origin() -> None:
    with pytest.raises(ConfigError, match=r"^session request 'ftp://x:1': "):
        parse_source("ftp://x:1", what="session request")


@pytest.mark.parametrize("text", ["tcp://:secret@127.0.0.1:22", "tcp://@127.0.0.1:22"])
def test_parse_source_refuses_any_userinfo(text: str) -> None:
    with pytest.raises(ConfigError, match="only scheme://host:port is allowed"):
        parse_source(text)


# -- parse_socket_addr -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "addr"),
    [
        ("127.0.0.1:2222", ("127.0.0.1", 2222)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:2222", ("::1", 2222)),
        ("[::]:65535", ("::", 65535)),
        (" 10.1.2.3:80 ", ("10.1.2.3", 80)),
    ],
)
def test_parse_socket_addr(text: str, addr: tuple[str, int]) -> None:
    assert parse_socket_addr(text, what="--target") == addr


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("127.0.0.1", "expected IP:PORT"),
        ("127.0.0.1:", "expected IP:PORT"),
        ("127.0.0.1:http", "expected IP:PORT"),
        ("127.0.0.1:65536", "expected IP:PORT"),
        ("127.0.0.1:-1", "expected IP:PORT"),
        ("[::1]", "expected IP:PORT"),
        ("localhost:2222", "'localhost' is not an IP address"),
        (":2222", "'' is not an IP address"),
        ("[::1:2222", "'[::1' is not an IP address"),
    ],
)
def test_parse_socket_addr_errors(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_socket_addr(text, what="--target")
    assert str(info.value).startswith(f"--target {text!r}: ")
    assert problem in str(info.value)


def test_parse_socket_addr_superscript_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected IP:PORT"):
        parse_socket_addr("127.0.0.1:²", what="--target")


def test_parse_socket_addr_non_ascii_digit_port_is_refused() -> None:
    with pytest.raises(ConfigError, match="expected IP:PORT"):
        parse_socket_addr("127.0.0.1:٣", what="--target")


# -- parse_networks ----------------------------------------------------------------------


def test_parse_networks() -> None:
    nets = parse_networks(["127.0.0.0/8", " ::1/128 ", "10.1.2.3/8", "192.168.1.1"], what="--allowed-tcp")
    assert nets == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("10.0.0.0/8"),  # host bits dropped, not an error
        ipaddress.ip_network("192.168.1.1/32"),
    )


@pytest.mark.parametrize("item", ["banana", "10.0.0.0/33", "::1/129", "", "10.0.0.0/8/8", "tcp://127.0.0.1:22"])
def test_parse_networks_errors_name_the_origin_and_item(item: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_networks(["127.0.0.0/8", item], what="sender.yaml: allowed_tcp")
    assert str(info.value) == f"sender.yaml: allowed_tcp {item!r}: not a CIDR such as 127.0.0.0/8 or ::1/128"


# -- AllowLists.check ---------------------------------------------------------------------


def lists(tcp: tuple[str, ...] = (), udp: tuple[str, ...] = ()) -> AllowLists:
    return AllowLists(tcp=parse_networks(tcp, what="--allowed-tcp"), udp=parse_networks(udp, what="--allowed-udp"))


def source_for(address: str) -> str:
    """``tcp://ADDRESS:22`` with IPv6 in brackets (and without a scope id)."""
    host = address.split("%", 1)[0]
    return f"tcp://[{host}]:22" if ":" in host else f"tcp://{host}:22"


def refusal(allowed: AllowLists, source: str, addresses: list[str]) -> SourceNotAllowed:
    with pytest.raises(SourceNotAllowed) as info:
        allowed.check(parse_source(source), addresses)
    assert info.value.exit_code is ExitCode.NOT_ALLOWED
    return info.value


@pytest.mark.parametrize(("proto", "flag"), [("tcp", "--allowed-tcp"), ("udp", "--allowed-udp")])
def test_empty_list_denies_its_protocol(proto: str, flag: str) -> None:
    other = {"tcp": "udp", "udp": "tcp"}[proto]
    allowed = lists(**{other: ("0.0.0.0/0", "::/0")})
    exc = refusal(allowed, f"{proto}://127.0.0.1:22", ["127.0.0.1"])
    assert str(exc) == f"{proto}://127.0.0.1:22 refused: the sender allows no {proto} sources ({flag} is empty)"


def test_default_lists_deny_everything() -> None:
    assert "--allowed-tcp is empty" in str(refusal(AllowLists(), "tcp://127.0.0.1:22", ["127.0.0.1"]))
    assert "--allowed-udp is empty" in str(refusal(AllowLists(), "udp://127.0.0.1:53", ["127.0.0.1"]))


@pytest.mark.parametrize(
    ("nets", "address"),
    [
        (("127.0.0.0/8",), "127.0.0.1"),
        (("127.0.0.0/8",), "127.255.255.254"),
        (("10.0.0.0/8", "192.168.0.0/16"), "192.168.7.7"),
        (("::1/128",), "::1"),
        (("fe80::/10",), "fe80::1"),
        (("fe80::/10",), "febf:ffff::1"),
        (("fe80::/10",), "fe80::1%eth0"),  # scope id stripped for the check
        (("127.0.0.0/8",), "::ffff:127.0.0.1"),  # IPv4-mapped is checked as IPv4
    ],
)
def test_address_inside_passes(nets: tuple[str, ...], address: str) -> None:
    source = parse_source(source_for(address))
    assert lists(tcp=nets).check(source, [address]) == (address,)


@pytest.mark.parametrize(
    ("nets", "address"),
    [
        (("127.0.0.0/8",), "128.0.0.1"),
        (("127.0.0.0/8",), "10.0.0.1"),
        (("10.0.0.0/8",), "11.0.0.0"),
        (("::1/128",), "::2"),
        (("fe80::/10",), "fec0::1"),
        (("fe80::/10",), "::1"),
        (("127.0.0.0/8",), "::1"),  # an IPv4 list does not admit IPv6 loopback
        (("::1/128",), "127.0.0.1"),  # nor the other way round
        (("::/0",), "::ffff:10.0.0.1"),  # mapped addresses are IPv4: ::/0 does not open all of IPv4
        (("127.0.0.0/8",), "::ffff:10.0.0.1"),
    ],
)
def test_address_outside_is_refused_by_name(nets: tuple[str, ...], address: str) -> None:
    source = source_for(address)
    exc = refusal(lists(tcp=nets), source, [address])
    assert str(exc) == f"{source} refused: {address} is outside the sender's --allowed-tcp list"


def test_hostname_whose_addresses_are_all_inside_returns_exactly_those() -> None:
    allowed = lists(udp=("10.0.0.0/8", "fd00::/8"))
    source = parse_source("udp://dns.internal:53")
    addresses = ["10.0.0.2", "fd00::53", "10.0.0.1", "10.0.0.2", "fd00::53"]
    assert allowed.check(source, addresses) == ("10.0.0.2", "fd00::53", "10.0.0.1")


def test_hostname_with_one_address_outside_is_refused_naming_it() -> None:
    exc = refusal(lists(tcp=("10.0.0.0/8",)), "tcp://db.internal:5432", ["10.0.0.1", "192.168.1.9", "10.0.0.2"])
    assert str(exc) == (
        "tcp://db.internal:5432 refused: 192.168.1.9 (db.internal resolves to 192.168.1.9) "
        "is outside the sender's --allowed-tcp list"
    )


def test_check_accepts_any_iterable_once() -> None:
    allowed = lists(tcp=("127.0.0.0/8",))
    assert allowed.check(parse_source("tcp://localhost:22"), iter(["127.0.0.1", "127.0.1.1"])) == (
        "127.0.0.1",
        "127.0.1.1",
    )


def test_no_addresses_is_unresolvable() -> None:
    with pytest.raises(SourceUnresolvable) as info:
        lists(tcp=("0.0.0.0/0",)).check(parse_source("tcp://nowhere.internal:22"), [])
    assert str(info.value) == "tcp://nowhere.internal:22 refused: 'nowhere.internal' resolved to no address"
    assert info.value.exit_code is ExitCode.SOURCE_UNREACHABLE


# -- resolve ------------------------------------------------------------------------------


def test_resolve_localhost_offline_gives_loopback_only() -> None:
    addresses = asyncio.run(resolve(parse_source("tcp://localhost:22")))
    assert addresses
    assert len(set(addresses)) == len(addresses)
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "10.9.8.7", "fe80::1"])
def test_resolve_returns_ip_literal_without_resolving(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_lookup(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"getaddrinfo called for an IP literal: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    assert asyncio.run(resolve(Source(Proto.UDP, host, 53))) == (host,)


def test_resolve_deduplicates_keeping_order(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def fake_getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # type: ignore[no-untyped-def]
        seen.append((host, port, type))
        return [
            (socket.AF_INET6, type, 6, "", ("fd00::2", port, 0, 0)),
            (socket.AF_INET, type, 6, "", ("10.0.0.1", port)),
            (socket.AF_INET6, type, 6, "", ("fd00::2", port, 0, 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert asyncio.run(resolve(parse_source("udp://svc.internal:5353"))) == ("fd00::2", "10.0.0.1")
    assert seen == [("svc.internal", 5353, socket.SOCK_DGRAM)]


def test_resolve_failure_is_unresolvable(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(SourceUnresolvable) as info:
        asyncio.run(resolve(parse_source("tcp://nowhere.invalid:22")))
    assert str(info.value).startswith("tcp://nowhere.invalid:22 refused: cannot resolve 'nowhere.invalid' (")
    assert "Name or service not known" in str(info.value)
