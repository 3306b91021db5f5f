"""NostrSignal against real nostr-relay processes on 127.0.0.1: exchange, privacy, relay failures."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nostr_sdk
import pytest
from structlog.testing import capture_logs

from tests import nostr_relay
from tests.nostr_relay import Relay
from tests.support import run
from tunnelpy.signaling import nostr_wire as wire
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.signaling.nostr_signal import NostrSignal, RelayError

relay_factory = nostr_relay.relay_factory  # the fixture, registered in this module

SOURCE = "tcp://10.11.12.13:5432"
RECEIVER_ICE = IceParameters("rUfr", "receiver-password-0123456", ("1 1 UDP 2130706431 192.0.2.55 40401 typ host",))
SENDER_ICE = IceParameters("sUfr", "sender-password-987654321", ("1 1 UDP 2130706431 198.51.100.66 40402 typ host",))
CERT = "c0ffee" + "ab" * 29
RECONNECT_DEADLINE = 60.0  # nostr-sdk retries every 10 s by default (adjusted, at least 5 s)


class Inbox:
    """Collects what a NostrSignal receives, in a task, so tests can wait with deadlines."""

    def __init__(self, signal: NostrSignal) -> None:
        self.signal = signal
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def pump(self) -> None:
        async for item in self.signal.receive():
            await self.queue.put(item)

    async def next(self, timeout: float = 10.0) -> tuple[str, wire.Message]:
        async with asyncio.timeout(timeout):
            author, plaintext = await self.queue.get()
        return author, wire.decode(plaintext)


@contextlib.asynccontextmanager
async def peers(urls: list[str]) -> AsyncIterator[tuple[NostrSignal, Inbox, NostrSignal, Inbox]]:
    """A receiver and a sender signal on the same relays, each with a running inbox."""
    receiver = NostrSignal(nostr_sdk.Keys.generate(), urls)
    sender = NostrSignal(nostr_sdk.Keys.generate(), urls)
    async with receiver, sender, asyncio.TaskGroup() as tg:
        r_inbox, s_inbox = Inbox(receiver), Inbox(sender)
        pumps = [tg.create_task(r_inbox.pump()), tg.create_task(s_inbox.pump())]
        try:
            yield receiver, r_inbox, sender, s_inbox
        finally:
            for task in pumps:
                task.cancel()


async def exchange(receiver: NostrSignal, r_inbox: Inbox, sender: NostrSignal, s_inbox: Inbox) -> str:
    """One full request -> offer -> answer exchange; returns the session id."""
    session_id = wire.new_session_id()
    gate = wire.RequestGate({receiver.public_key_hex})
    request = wire.TunnelRequest.create(session_id, SOURCE, RECEIVER_ICE, int(time.time()))
    await receiver.publish(sender.public_key_hex, wire.encode(request))

    author, got = await s_inbox.next()
    assert isinstance(got, wire.TunnelRequest)
    assert gate.check(author, got, time.time()) == wire.ACCEPT
    assert got == request
    await sender.publish(author, wire.encode(wire.TunnelOffer.create(session_id, SENDER_ICE, CERT)))

    author, reply = await r_inbox.next()
    assert wire.check_reply(reply, author, sender.public_key_hex, session_id) == wire.ACCEPT
    assert isinstance(reply, wire.TunnelOffer) and reply.ice == SENDER_ICE and reply.cert_sha256 == CERT
    await receiver.publish(sender.public_key_hex, wire.encode(wire.TunnelAnswer(session_id)))
    author, answer = await s_inbox.next()
    assert author == receiver.public_key_hex and answer == wire.TunnelAnswer(session_id)
    return session_id


async def wait_connected(signal: NostrSignal, url: str, timeout: float = RECONNECT_DEADLINE) -> None:
    async with asyncio.timeout(timeout):
        while url not in await signal.connected_relays():
            await asyncio.sleep(0.1)


def test_request_offer_answer_both_ways(relay_factory: Callable[..., Relay]) -> None:
    relay = relay_factory()

    async def scenario() -> None:
        async with peers([relay.url]) as (receiver, r_inbox, sender, s_inbox):
            await exchange(receiver, r_inbox, sender, s_inbox)
            await exchange(sender, s_inbox, receiver, r_inbox)  # roles swapped: the other direction

    run(scenario())


async def observe(url: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every event of our kind the relay hands to a plain subscriber that holds no key of ours."""
    observer = nostr_sdk.Client()
    await observer.add_relay(nostr_sdk.RelayUrl.parse(url))
    await observer.connect(datetime.timedelta(seconds=timeout))
    query = nostr_sdk.Filter().kind(nostr_sdk.Kind(wire.EVENT_KIND))
    events = await observer.fetch_events(nostr_sdk.ReqTarget.auto([query]), datetime.timedelta(seconds=timeout))
    await observer.shutdown()
    return [json.loads(event.as_json()) for event in events]


def test_relays_and_observers_see_no_source_address_or_credentials(relay_factory: Callable[..., Relay]) -> None:
    relay = relay_factory()

    async def scenario() -> None:
        async with peers([relay.url]) as (receiver, r_inbox, sender, s_inbox):
            session_id = await exchange(receiver, r_inbox, sender, s_inbox)
            # the relay kept the ephemeral events (until its garbage collector runs) and gives them
            # to anyone who asks: what an observer of the relay sees
            seen = await observe(relay.url)
        assert len(seen) == 3
        secrets = [SOURCE, "10.11.12.13", session_id, CERT, "c0ffee", "192.0.2.55", "198.51.100.66"]
        secrets += [p for ice in (RECEIVER_ICE, SENDER_ICE) for p in (ice.ufrag, ice.pwd)]
        for event in seen:
            raw = str(event)
            assert not [s for s in secrets if s in raw], raw
            assert event["kind"] == wire.EVENT_KIND
            assert [t[0] for t in event["tags"]] == ["p"]
            assert event["tags"][0][1] in (receiver.public_key_hex, sender.public_key_hex)

    run(scenario())


def test_two_relays_one_stopped_mid_run(relay_factory: Callable[..., Relay]) -> None:
    first, second = relay_factory(), relay_factory()

    async def scenario() -> None:
        async with peers([first.url, second.url]) as (receiver, r_inbox, sender, s_inbox):
            for signal in (receiver, sender):
                await wait_connected(signal, second.url)
            await exchange(receiver, r_inbox, sender, s_inbox)
            first.stop()
            for signal in (receiver, sender):
                async with asyncio.timeout(10):
                    while first.url in await signal.connected_relays():
                        await asyncio.sleep(0.05)
            # publish must not wait for the dead relay (nostr-sdk would, ~10 s): 5 s bounds it
            async with asyncio.timeout(5):
                published = await receiver.publish(sender.public_key_hex, wire.encode(wire.TunnelAnswer("1" * 16)))
            assert published.relays == (second.url,)
            _, got = await s_inbox.next()
            assert got == wire.TunnelAnswer("1" * 16)
            await exchange(receiver, r_inbox, sender, s_inbox)

    run(scenario())


def test_a_restarted_relay_is_reconnected_and_resubscribed(relay_factory: Callable[..., Relay]) -> None:
    relay = relay_factory()

    async def scenario() -> None:
        async with peers([relay.url]) as (receiver, r_inbox, sender, s_inbox):
            await exchange(receiver, r_inbox, sender, s_inbox)
            await asyncio.to_thread(relay.restart)
            for signal in (receiver, sender):
                await wait_connected(signal, relay.url)
            # the only relay is the restarted one: this flows only if both subscriptions were sent again
            await exchange(receiver, r_inbox, sender, s_inbox)

    run(scenario(), timeout=150)


def test_a_relay_down_at_start_is_connected_later(relay_factory: Callable[..., Relay]) -> None:
    up, late = relay_factory(), relay_factory(running=False)

    async def scenario() -> None:
        async with peers([up.url, late.url]) as (receiver, r_inbox, sender, s_inbox):
            assert await receiver.connected_relays() == [up.url]
            await asyncio.to_thread(late.start)
            for signal in (receiver, sender):
                await wait_connected(signal, late.url)
            up.stop()
            await exchange(receiver, r_inbox, sender, s_inbox)

    run(scenario(), timeout=150)


def test_start_fails_naming_the_relays_when_none_answers() -> None:
    urls = [f"ws://127.0.0.1:{nostr_relay.free_port()}", f"ws://127.0.0.1:{nostr_relay.free_port()}"]

    async def scenario() -> None:
        signal = NostrSignal(nostr_sdk.Keys.generate(), urls)
        with pytest.raises(RelayError) as info:
            await signal.start(timeout=1.0)
        assert all(url in str(info.value) for url in urls)

    run(scenario())


def test_foreign_and_undecryptable_events_are_dropped(relay_factory: Callable[..., Relay]) -> None:
    relay = relay_factory(max_event_size=65536)  # lets the oversize event through to us

    async def scenario() -> None:
        stranger = nostr_sdk.Keys.generate()
        async with peers([relay.url]) as (receiver, _, sender, s_inbox):
            me = sender.public_key
            other = nostr_sdk.Keys.generate().public_key()
            to_other = nostr_sdk.nip44_encrypt(stranger.secret_key(), other, "not for you", nostr_sdk.Nip44Version.V2)
            junk = [
                (1, "a text note addressed to us"),  # another kind: the subscription excludes it
                (wire.EVENT_KIND, "not a NIP-44 payload"),
                (wire.EVENT_KIND, to_other),  # encrypted to someone else, addressed to us
                (wire.EVENT_KIND, "A" * 30000),  # oversize
            ]
            client = nostr_sdk.Client()
            await client.add_relay(nostr_sdk.RelayUrl.parse(relay.url))
            await client.connect(datetime.timedelta(seconds=5))
            with capture_logs() as logs:
                for kind, content in junk:
                    event = nostr_sdk.EventBuilder(nostr_sdk.Kind(kind), content).tags([nostr_sdk.Tag.public_key(me)])
                    out = await client.send_event(event.finalize(stranger))
                    assert out.success, out.failed
                # the relay forwards in order: once our own message is through, the junk was handled
                await receiver.publish(sender.public_key_hex, wire.encode(wire.TunnelAnswer("2" * 16)))
                author, got = await s_inbox.next()
            await client.shutdown()
            assert author == receiver.public_key_hex and got == wire.TunnelAnswer("2" * 16)
            assert s_inbox.queue.empty()
            reasons = [e["why"] for e in logs if e["event"] == "nostr.dropped"]
            assert len(reasons) == 3 and "content of 30000 characters" in reasons, reasons
            assert sum("undecryptable" in r for r in reasons) == 2, reasons

    run(scenario())


def test_a_refusing_relay_is_logged_and_only_all_refusing_raises(relay_factory: Callable[..., Relay]) -> None:
    small, large = relay_factory(max_event_size=1000), relay_factory(max_event_size=65536)
    many = IceParameters("u", "p" * 24, tuple(f"{i} 1 UDP 1 192.0.2.{i} {40000 + i} typ host" for i in range(20)))

    async def scenario() -> None:
        async with peers([small.url, large.url]) as (receiver, _, sender, s_inbox):
            for signal in (receiver, sender):
                await wait_connected(signal, large.url)
                await wait_connected(signal, small.url)
            request = wire.TunnelRequest.create(wire.new_session_id(), SOURCE, many, int(time.time()))
            with capture_logs() as logs:
                published = await receiver.publish(sender.public_key_hex, wire.encode(request))
            assert published.relays == (large.url,)
            refusals = [e for e in logs if e["event"] == "nostr.relay_refused"]
            assert [e["relay"] for e in refusals] == [small.url]
            _, got = await s_inbox.next()
            assert got == request
        async with NostrSignal(nostr_sdk.Keys.generate(), [small.url]) as lone:
            with pytest.raises(RelayError, match="every Nostr relay refused"):
                await lone.publish(sender.public_key_hex, wire.encode(request))

    run(scenario())


def test_request_offer_round_trip_through_the_local_relay(
    relay_factory: Callable[..., Relay], capsys: pytest.CaptureFixture[str]
) -> None:
    relay = relay_factory()
    rounds = 21

    async def scenario() -> list[float]:
        times = []
        async with peers([relay.url]) as (receiver, r_inbox, sender, s_inbox):
            for _ in range(rounds):
                session_id = wire.new_session_id()
                start = time.perf_counter()
                request = wire.TunnelRequest.create(session_id, SOURCE, RECEIVER_ICE, int(time.time()))
                await receiver.publish(sender.public_key_hex, wire.encode(request))
                author, got = await s_inbox.next()
                assert isinstance(got, wire.TunnelRequest)
                await sender.publish(author, wire.encode(wire.TunnelOffer.create(got.session_id, SENDER_ICE, CERT)))
                _, offer = await r_inbox.next()
                assert isinstance(offer, wire.TunnelOffer) and offer.session_id == session_id
                times.append(time.perf_counter() - start)
        return times

    times = run(scenario())
    with capsys.disabled():
        print(
            f"\nnostr request->offer round trip (encrypted, local relay, {rounds} runs): "
            f"median {statistics.median(times) * 1000:.1f} ms, min {min(times) * 1000:.1f} ms, "
            f"max {max(times) * 1000:.1f} ms"
        )


def test_close_ends_a_pending_receive(relay_factory: Callable[..., Relay]) -> None:
    relay = relay_factory()

    async def scenario() -> None:
        signal = NostrSignal(nostr_sdk.Keys.generate(), [relay.url])
        await signal.start()
        inbox = Inbox(signal)
        pump = asyncio.create_task(inbox.pump())
        await asyncio.sleep(0)  # let it block in receive()
        await signal.close()
        async with asyncio.timeout(10):
            await pump  # ends by itself: no cancel needed
        assert inbox.queue.empty()

    run(scenario())


def test_a_missing_relay_install_fails_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nostr_relay, "RELAY_BIN", tmp_path / "absent" / "nostr-relay")
    with pytest.raises(pytest.fail.Exception, match="run scripts/setup-test-env"):
        nostr_relay.start_relay(tmp_path / "relay")


def test_the_subscription_reaches_back_60_s_and_no_further(relay_factory: Callable[..., Relay]) -> None:
    """This relay keeps ephemeral events for a while, so a later subscriber sees recent ones again."""
    relay = relay_factory()

    async def scenario() -> None:
        author, me = nostr_sdk.Keys.generate(), nostr_sdk.Keys.generate()
        client = nostr_sdk.Client()
        await client.add_relay(nostr_sdk.RelayUrl.parse(relay.url))
        await client.connect(datetime.timedelta(seconds=5))
        for age, text in ((120, "too old"), (30, "recent")):
            content = nostr_sdk.nip44_encrypt(author.secret_key(), me.public_key(), text, nostr_sdk.Nip44Version.V2)
            event = (
                nostr_sdk.EventBuilder(nostr_sdk.Kind(wire.EVENT_KIND), content)
                .tags([nostr_sdk.Tag.public_key(me.public_key())])
                .custom_created_at(nostr_sdk.Timestamp.from_secs(int(time.time()) - age))
                .finalize(author)
            )
            assert (await client.send_event(event)).success
        await client.shutdown()
        async with NostrSignal(me, [relay.url]) as late, NostrSignal(author, [relay.url]) as live:
            inbox = Inbox(late)
            async with asyncio.TaskGroup() as tg:
                pump = tg.create_task(inbox.pump())
                # a live event after the subscription: the relay sends stored matches before it
                await live.publish(late.public_key_hex, "marker")
                got = []
                async with asyncio.timeout(10):
                    while not got or got[-1] != "marker":
                        got.append((await inbox.queue.get())[1])
                pump.cancel()
        assert got == ["recent", "marker"]

    run(scenario())
