"""Each iroh network/transport option reaches the native EndpointOptions as it should."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunnelpy.common import config as cfg
from tunnelpy.common import options as opts
from tunnelpy.common.errors import ConfigError
from tunnelpy.common.merge import RawValues
from tunnelpy.worker import _native
from tunnelpy.worker.transport import iroh_transport

KEY_A = "a" * 64
BASE = {"node_id": KEY_A, "source": "tcp://127.0.0.1:22", "listen": "127.0.0.1:2222"}
# With a custom relay and no --dns-server nothing looks a bare EndpointId up: a ticket then.
RELAY = {"relay_urls": ["https://relay.example.org"], "node_id": "endpoint" + "a" * 40}


def net(cli: dict, mode: str = "iroh") -> cfg.NetOptions:  # type: ignore[type-arg]
    raw = RawValues(opts.RECEIVER_OPTIONS, mode)
    raw.update_from_cli(BASE | cli)
    return cfg.build_receiver_config(raw).net


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict:  # type: ignore[type-arg]
    """The keywords endpoint_options passes to the native class."""
    captured: dict = {}  # type: ignore[type-arg]

    def fake(**kwargs: object) -> object:
        captured.clear()
        captured.update(kwargs)
        return kwargs

    monkeypatch.setattr(_native, "EndpointOptions", fake)
    return captured


def options(seen: dict, cli: dict, mode: str = "iroh") -> dict:  # type: ignore[type-arg]
    iroh_transport.endpoint_options(net(cli, mode), secret=None, alpns=[b"x"])
    return seen


def test_defaults_free_a_dead_peer_slot_within_20_s(seen: dict) -> None:  # type: ignore[type-arg]
    kw = options(seen, {})
    assert kw["keep_alive"] == 5.0 and kw["idle_timeout"] == 15.0
    assert kw["congestion"] == "default"
    for key in ("offline", "relay_only", "port_mapper", "bind_v4", "bind_v6", "receive_window", "max_mtu"):
        assert key not in kw


def test_no_relay_is_fully_offline(seen: dict) -> None:  # type: ignore[type-arg]
    iroh_transport.endpoint_options(cfg.NetOptions(no_relay=True), secret=None, alpns=[])
    assert seen["offline"] is True  # no relays, no discovery, no port mapper, no probes
    assert seen["bind_v4"] == "0.0.0.0:0"
    iroh_transport.endpoint_options(cfg.NetOptions(no_relay=True, bind=("127.0.0.1", 0)), secret=None, alpns=[])
    assert seen["bind_v4"] == "127.0.0.1:0" and "bind_v6" not in seen


def test_relay_urls_only_and_token(seen: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    os.chmod(token, 0o600)
    kw = options(seen, RELAY | {"relay_only": True, "relay_auth_token_file": str(token)})
    assert kw["relay_urls"] == ["https://relay.example.org"]
    assert kw["relay_only"] is True
    assert kw["relay_auth_token"] == "s3cret"


def test_a_readable_token_file_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    os.chmod(token, 0o644)
    with pytest.raises(ConfigError):
        net(RELAY | {"relay_auth_token_file": str(token)})


def test_relay_only_and_dns_server_need_a_relay_url() -> None:
    with pytest.raises(ConfigError, match="relay-url"):
        net({"relay_only": True})
    with pytest.raises(ConfigError, match="relay-url"):
        net({"dns_server": "https://dns.example.org/pkarr"})


def test_dns_server_url_or_resolver(seen: dict) -> None:  # type: ignore[type-arg]
    assert options(seen, RELAY | {"dns_server": "https://dns.example.org/pkarr"})["pkarr_url"] == (
        "https://dns.example.org/pkarr"
    )
    assert options(seen, RELAY | {"dns_server": "10.0.0.53:53"})["dns_server"] == "10.0.0.53:53"


def test_no_portmap(seen: dict) -> None:  # type: ignore[type-arg]
    assert options(seen, {"no_portmap": True})["port_mapper"] is False


def test_bind_and_bind6(seen: dict) -> None:  # type: ignore[type-arg]
    kw = options(seen, {"bind": "127.0.0.1:7000", "bind6": "[::1]:7001"})
    assert kw["bind_v4"] == "127.0.0.1:7000" and kw["bind_v6"] == "[::1]:7001"
    assert options(seen, {"bind": "[::1]:0"})["bind_v6"] == "[::1]:0"
    with pytest.raises(ConfigError, match="IPv6"):
        net({"bind6": "127.0.0.1:0"})


def test_transport_section(seen: dict) -> None:  # type: ignore[type-arg]
    kw = options(
        seen,
        {
            "congestion": "bbr3",
            "receive_window": 1 << 20,
            "send_window": 1 << 21,
            "keep_alive": 2.5,
            "idle_timeout": 9,
            "max_mtu": 1400,
        },
        mode="iroh-manual",
    )
    assert kw["congestion"] == "bbr3"
    assert (kw["receive_window"], kw["send_window"], kw["max_mtu"]) == (1 << 20, 1 << 21, 1400)
    assert (kw["keep_alive"], kw["idle_timeout"]) == (2.5, 9)


@pytest.mark.parametrize(
    "cli",
    [
        {"congestion": "vegas"},
        {"receive_window": 100},
        {"max_mtu": 500},
        {"keep_alive": 20, "idle_timeout": 15},
        {"idle_timeout": 0},
    ],
)
def test_bad_transport_values_are_refused(cli: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError):
        net(cli)


def test_the_real_native_options_accept_the_mapping() -> None:
    net_options = net(RELAY | {"no_portmap": True, "congestion": "cubic", "bind": "127.0.0.1:0", "max_mtu": 1400})
    assert "127.0.0.1:0" in repr(iroh_transport.endpoint_options(net_options, secret=None, alpns=[]))


def test_custom_relays_turn_internet_discovery_off_and_need_a_ticket(seen: dict) -> None:  # type: ignore[type-arg]
    assert options(seen, RELAY)["discovery"] is False  # n0's DNS never learns about a private deployment
    assert "discovery" not in options(seen, RELAY | {"dns_server": "https://dns.example.org/pkarr"})
    with pytest.raises(ConfigError, match="--relay-url and no --dns-server"):
        net({"relay_urls": ["https://relay.example.org"]})  # BASE's bare EndpointId


def test_relay_ca_file_is_read_into_der(seen: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    import ssl

    der = b"0\x03\x02\x01\x01"  # any bytes: the PEM framing is what the reader checks
    pem = tmp_path / "ca.pem"
    pem.write_text("# a private relay's CA\n" + ssl.DER_cert_to_PEM_cert(der) * 2)
    assert options(seen, RELAY | {"relay_ca_file": str(pem)})["relay_ca_roots"] == [der, der]
    (tmp_path / "empty.pem").write_text("no certificate here\n")
    with pytest.raises(ConfigError, match=r"--relay-ca-file .*no PEM certificate"):
        net(RELAY | {"relay_ca_file": str(tmp_path / "empty.pem")})
    with pytest.raises(ConfigError, match="--relay-ca-file needs --relay-url"):
        net({"relay_ca_file": str(pem)})
