"""nostr mode end to end: the installed CLI on both sides, real nostr-relay processes on 127.0.0.1.

ICE gathers only 127.0.0.1 candidates and STUN is off; every relay is one this test started.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import nostr_sdk
import pytest

from tests import nostr_relay
from tests.nostr_relay import Relay
from tests.support import Cluster, run
from tunnelpy.bench.harness import EchoService, Peer, tcp_echo_roundtrip, udp_echo_roundtrip
from tunnelpy.bench.nostr_peers import make_key, start_nostr_receiver, start_nostr_sender
from tunnelpy.cli.status import fetch_status
from tunnelpy.common.errors import ExitCode
from tunnelpy.signaling import nostr_wire as wire
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.signaling.nostr_signal import NostrSignal
from tunnelpy.signaling.session_wire import RejectReason

pytestmark = pytest.mark.e2e

relay_factory = nostr_relay.relay_factory  # the fixture, registered in this module


async def assert_echo(address: tuple[str, int], size: int) -> None:
    payload = os.urandom(size)
    echoed = await tcp_echo_roundtrip(address, payload)
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()


def ready_workers(sender: Peer) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in sender.events if e.get("event") == "worker.ready"]


class Net:
    """Keys and relays of one test; ``receiver()`` starts a receiver with its own (listed) key."""

    def __init__(self, work: Path, cluster: Cluster, relays: list[str]) -> None:
        self.work, self.cluster, self.relays = work, cluster, relays
        self.sender_key, _ = make_key(work, "sender")
        self.keys: dict[str, tuple[Path, str]] = {}
        self.npub = ""

    def key(self, name: str) -> tuple[Path, str]:
        if name not in self.keys:
            self.keys[name] = make_key(self.work, name)
        return self.keys[name]

    async def sender(self, allowed: list[str], *extra: str, receivers: list[str]) -> Peer:
        npubs = [self.key(name)[1] for name in receivers]
        peer, self.npub = await start_nostr_sender(
            self.work, self.cluster.peers, self.relays, self.sender_key, npubs, extra=[*allowed, *extra]
        )
        return peer

    async def receiver(self, name: str, source: str, *extra: str, wait: bool = True):  # type: ignore[no-untyped-def]
        key, _ = self.key(name)
        return await start_nostr_receiver(
            self.work, self.cluster.peers, self.relays, key, self.npub, source, name=name, extra=list(extra), wait=wait
        )


ALLOW = ["--allowed-tcp", "127.0.0.1/32", "--allowed-udp", "127.0.0.1/32"]


def test_three_receivers_at_once_and_udp_through_one_sender(work, relay_factory: Callable[..., Relay]):
    relay = relay_factory()

    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            net = Net(work, cluster, [relay.url])
            sender = await net.sender(ALLOW, receivers=["r1", "r2", "r3", "udp"])
            tcp = f"tcp://127.0.0.1:{echo.tcp_port}"
            started = await asyncio.gather(*(net.receiver(name, tcp) for name in ("r1", "r2", "r3")))
            await asyncio.gather(*(assert_echo(address, 10 * 1024 * 1024) for _, address in started))
            _, address = await net.receiver("udp", f"udp://127.0.0.1:{echo.udp_port}")
            batches = [[f"client {c} #{i}".encode() for i in range(20)] for c in range(2)]
            await asyncio.gather(
                *(udp_echo_roundtrip(address, batch) for batch in batches),
                udp_echo_roundtrip(address, [os.urandom(3000)]),  # over the datagram size: framed
            )
            status = await fetch_status(work / "sender.sock")
            assert status.mode == "nostr" and status.endpoint_id == net.npub and status.max_sessions == 10
            assert sorted(s["receiver_id"] for s in status.sessions) == sorted(npub for _, npub in net.keys.values())
            assert len(ready_workers(sender)) == 4

    run(main(), timeout=150)


def test_max_sessions_from_yaml_refuses_the_third_then_admits_after_one_leaves(
    work, relay_factory: Callable[..., Relay]
):
    relay = relay_factory()

    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            net = Net(work, cluster, [relay.url])
            npubs = [net.key(f"r{n}")[1] for n in range(1, 5)]
            config = work / "sender.yaml"
            config.write_text(
                "mode: nostr\n"
                f"nsec_file: {net.sender_key.name}\n"  # relative: next to the file
                f"peer_npub: [{', '.join(npubs)}]\n"
                f"relays: [{relay.url}]\n"
                "allowed_tcp: [127.0.0.1/32]\nmax_sessions: 2\nstun_servers: []\nice_hosts: [127.0.0.1]\n"
            )
            sender = Peer(
                "sender", ["--config", str(config), "--control", str(work / "sender.sock")], work, ["tunnel-supervisor"]
            )
            cluster.peers.append(sender)
            await sender.start()
            net.npub = (await sender.wait_event("supervisor.online", timeout=30))["endpoint_id"]
            tcp = f"tcp://127.0.0.1:{echo.tcp_port}"
            first, _ = await net.receiver("r1", tcp)
            await net.receiver("r2", tcp)
            third, _ = await net.receiver("r3", tcp, wait=False)
            assert await third.wait(timeout=30) == ExitCode.AT_CAPACITY
            assert "at capacity (2/2 sessions)" in third.tail()
            await first.stop()
            await sender.wait_event("worker.reaped")
            _, address = await net.receiver("r4", tcp)
            await assert_echo(address, 100_000)

    run(main(), timeout=120)


def test_strangers_hear_nothing_and_refused_sources_get_the_reason(work, relay_factory: Callable[..., Relay]):
    """An npub the sender does not list is ignored (by design: no reply, see front_nostr), so its
    receiver gives up after --max-wait with exit 10; a listed receiver asking for a source outside
    the allow-lists gets the reason (exit 4); the sender serves the next receiver as usual."""
    relay = relay_factory()

    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            net = Net(work, cluster, [relay.url])
            sender = await net.sender(["--allowed-tcp", "127.0.0.1/32"], receivers=["friend"])
            tcp = f"tcp://127.0.0.1:{echo.tcp_port}"
            started = time.monotonic()
            stranger, _ = await net.receiver("stranger", tcp, "--max-wait", "3", wait=False)
            assert await stranger.wait(timeout=30) == ExitCode.CONNECT_FAILED
            assert time.monotonic() - started < 25
            assert "no reply from the sender" in stranger.tail() and "--peer-npub" in stranger.tail()
            refused, _ = await net.receiver("friend", "tcp://10.1.2.3:22", wait=False)
            assert await refused.wait(timeout=30) == ExitCode.NOT_ALLOWED
            assert "outside the sender's --allowed-tcp list" in refused.tail()
            assert not ready_workers(sender)
            assert await _newer_version_is_told(net, relay.url) == RejectReason.VERSION_MISMATCH
            _, address = await net.receiver("friend", tcp)
            await assert_echo(address, 100_000)
            assert len(ready_workers(sender)) == 1

    run(main(), timeout=120)


async def _newer_version_is_told(net: Net, url: str) -> RejectReason:
    """A listed receiver speaking version VERSION + 1 gets a reject it can tell is a version mismatch."""
    keys = nostr_sdk.Keys.parse(net.key("friend")[0].read_text().strip())
    ice = IceParameters("u", "p" * 22, ("1 1 UDP 1 127.0.0.1 9 typ host",))
    body = json.loads(wire.encode(wire.TunnelRequest.create(wire.new_session_id(), "tcp://127.0.0.1:9", ice, 0)))
    body.update(v=wire.VERSION + 1, timestamp=int(time.time()))
    sender_hex = nostr_sdk.PublicKey.parse(net.npub).to_hex()
    async with NostrSignal(keys, [url]) as signal:
        await signal.publish(sender_hex, json.dumps(body))
        async with asyncio.timeout(20):
            async for author, plaintext in signal.receive():
                reply = wire.decode(plaintext)
                ours = isinstance(reply, wire.TunnelReject) and reply.session_id == body["session_id"]
                if author == sender_hex and ours:
                    assert isinstance(reply, wire.TunnelReject)
                    return reply.reason
    raise AssertionError("no reply")


async def relay_events(url: str, timeout: float = 5.0) -> list[nostr_sdk.Event]:
    """Every event of our kind the relay stored, as a plain subscriber holding no key of ours sees it."""
    observer = nostr_sdk.Client()
    await observer.add_relay(nostr_sdk.RelayUrl.parse(url))
    await observer.connect(datetime.timedelta(seconds=timeout))
    query = nostr_sdk.Filter().kind(nostr_sdk.Kind(wire.EVENT_KIND))
    events = await observer.fetch_events(nostr_sdk.ReqTarget.auto([query]), datetime.timedelta(seconds=timeout))
    await observer.shutdown()
    return list(events)


async def replay(url: str, event: nostr_sdk.Event) -> None:
    """Publish a captured event again, byte for byte, from a client of its own."""
    client = nostr_sdk.Client()
    await client.add_relay(nostr_sdk.RelayUrl.parse(url))
    await client.connect(datetime.timedelta(seconds=5))
    await client.send_event(event)
    await client.shutdown()


def test_relays_see_no_plaintext_and_a_replayed_request_spawns_no_worker(work, relay_factory: Callable[..., Relay]):
    relay = relay_factory()

    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            net = Net(work, cluster, [relay.url])
            sender = await net.sender(["--allowed-tcp", "127.0.0.1/32"], receivers=["r1", "r2"])
            source = f"tcp://127.0.0.1:{echo.tcp_port}"
            _, address = await net.receiver("r1", source)
            await assert_echo(address, 10_000)
            events = await relay_events(relay.url)
            receiver_keys = nostr_sdk.Keys.parse(net.key("r1")[0].read_text().strip())
            mine = [e for e in events if e.author().to_hex() == receiver_keys.public_key().to_hex()]
            offers = [e for e in events if e.author().to_hex() != receiver_keys.public_key().to_hex()]
            assert mine and offers
            # what the events really carry, decrypted with the receiver's key: none of it is visible raw
            offer = _decrypt_to(net, "r1", offers[0])
            assert isinstance(offer, wire.TunnelOffer)
            # (a bare port number could turn up by chance in a hex id or a timestamp: not checked)
            secrets = [source, "127.0.0.1", offer.cert_sha256, offer.ice_pwd, offer.ice_ufrag, offer.session_id]
            for event in events:
                raw = event.as_json()
                assert not [s for s in secrets if s in raw], raw
                assert [t[0] for t in json.loads(raw)["tags"]] == ["p"]
            # the receiver's request, replayed raw while the sender runs: no second worker
            request = next(e for e in mine if isinstance(_decrypt_to(net, "sender", e), wire.TunnelRequest))
            await replay(relay.url, request)
            # a fresh receiver afterwards: once it is served, the replay (published before) was seen
            await net.receiver("r2", source)
            assert len(ready_workers(sender)) == 2
            assert sender.proc is not None and sender.proc.returncode is None

    run(main(), timeout=120)


def _decrypt_to(net: Net, name: str, event: nostr_sdk.Event) -> wire.Message:
    path = net.sender_key if name == "sender" else net.key(name)[0]
    keys = nostr_sdk.Keys.parse(path.read_text().strip())
    return wire.decode(nostr_sdk.nip44_decrypt(keys.secret_key(), event.author(), event.content()))


def test_two_relays_one_stopped_mid_run(work, relay_factory: Callable[..., Relay]):
    first, second = relay_factory(), relay_factory()

    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            net = Net(work, cluster, [first.url, second.url])
            await net.sender(["--allowed-tcp", "127.0.0.1/32"], receivers=["r1", "r2", "r3"])
            tcp = f"tcp://127.0.0.1:{echo.tcp_port}"
            _, address = await net.receiver("r1", tcp)
            await assert_echo(address, 100_000)
            first.stop()
            _, address = await net.receiver("r2", tcp)  # only the second relay carries this one
            await assert_echo(address, 100_000)
            first.start()  # back on the same port; the sender reconnects by itself
            second.stop()
            _, address = await net.receiver("r3", tcp)
            await assert_echo(address, 100_000)

    run(main(), timeout=150)


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_key_commands(work):
    async def main() -> None:
        path = work / "me.nsec"
        code, out, _ = await cli("tunnel-py", "generate-nostr-key", "-o", str(path))
        assert code == 0 and out.startswith("npub: npub1")
        assert path.stat().st_mode & 0o777 == 0o600 and path.read_text().startswith("nsec1")
        npub = out.split()[1]
        assert await cli("tunnel-py", "show-npub", "-n", str(path)) == (0, npub + "\n", "")
        code, _, err = await cli("tunnel-py", "generate-nostr-key", "-o", str(path))
        assert code == ExitCode.CONFIG and "--force" in err
        code, out, _ = await cli("tunnel-py", "generate-nostr-key", "-o", str(path), "--force")
        assert code == 0 and out.split()[1] != npub
        code, out, err = await cli("tunnel-py", "generate-nostr-key", "-o", "-")
        assert code == 0 and out.startswith("nsec1") and err.startswith("npub: npub1")

    run(main())


def test_config_errors_are_one_line_naming_the_key(work, relay_factory: Callable[..., Relay]):
    relay = relay_factory()

    async def main() -> None:
        key, _ = make_key(work, "sender")
        _, peer = make_key(work, "peer")
        base = ["--relay", relay.url, "--allowed-tcp", "127.0.0.1/32", "--control", str(work / "s.sock")]
        code, _, err = await cli(
            "tunnel-py", "sender", "nostr", "--nsec-file", str(key), "--peer-npub", "npub1nope", *base
        )
        assert code == ExitCode.CONFIG and last_line(err).startswith("tunnel-py: error: --peer-npub: "), err
        shared = work / "shared.nsec"
        shared.write_text(key.read_text())
        shared.chmod(0o640)
        code, _, err = await cli("tunnel-py", "sender", "nostr", "--nsec-file", str(shared), "--peer-npub", peer, *base)
        assert code == ExitCode.CONFIG and f"--nsec-file {shared}: mode 0640 lets others read it" in last_line(err)
        config = work / "bad.yaml"
        config.write_text(f"mode: nostr\nnsec_file: sender.nsec\npeer_npub: [{peer}]\nallowed_tcp: [127.0.0.1/32]\n")
        with config.open("a") as fh:
            fh.write("max_sessions: -1\n")
        code, _, err = await cli("tunnel-supervisor", "--config", str(config))
        assert code == ExitCode.CONFIG
        assert last_line(err) == f"tunnel-py: error: {config}: max_sessions: must be a number from 0 to 100000, got -1"
        code, _, err = await cli(
            "tunnel-py", "receiver", "nostr", "--peer-npub", peer, "--source", "tcp://127.0.0.1:22", "--listen",
            "127.0.0.1:0", "--relay", relay.url, env={"TUNNELPY_NSEC": "nsec1broken"},
        )  # fmt: skip
        assert code == ExitCode.CONFIG and last_line(err).startswith("tunnel-py: error: TUNNELPY_NSEC: "), err

    run(main())


def test_a_draining_sender_refuses_new_receivers_with_the_reason(work, relay_factory: Callable[..., Relay]):
    relay = relay_factory()

    async def main() -> None:
        async with EchoService() as echo, Cluster(work) as cluster:
            net = Net(work, cluster, [relay.url])
            sender = await net.sender(["--allowed-tcp", "127.0.0.1/32"], receivers=["r1", "r2"])
            tcp = f"tcp://127.0.0.1:{echo.tcp_port}"
            _, address = await net.receiver("r1", tcp)
            reader, writer = await asyncio.open_connection(*address)  # a live stream keeps the drain going
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            assert sender.proc is not None
            sender.proc.send_signal(signal.SIGTERM)
            await sender.wait_event("supervisor.draining")
            late, _ = await net.receiver("r2", tcp, wait=False)
            assert await late.wait(timeout=30) == ExitCode.DRAINING
            assert "(draining)" in late.tail()
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            assert await sender.wait(timeout=30) == 0

    run(main(), timeout=90)
