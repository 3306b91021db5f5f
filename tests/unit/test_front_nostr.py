"""The nostr front door's request handling, with the session service and the relays faked."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import nostr_sdk

from tests.support import run
from tunnelpy.common import config as cfg
from tunnelpy.signaling import nostr_wire as wire
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.signaling.nostr_signal import Published
from tunnelpy.supervisor import front_nostr
from tunnelpy.supervisor.admission import Refusal, Refused
from tunnelpy.supervisor.sessions import Opened
from tunnelpy.worker.contract import WorkerReady

ICE = IceParameters("u", "p" * 22, ("1 1 UDP 1 127.0.0.1 9 typ host",))
RECEIVERS = [nostr_sdk.Keys.generate().public_key().to_hex() for _ in range(40)]


@dataclass
class FakeService:
    """open_session waits for ``release`` (a slow worker start); ``refuse`` answers at once."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    opened: list[str] = field(default_factory=list)
    refuse: bool = False

    async def open_session(self, receiver_id, source, rendezvous):  # type: ignore[no-untyped-def]
        self.opened.append(receiver_id)
        if self.refuse:
            return Refused(Refusal.AT_CAPACITY, "sender at capacity (1/1 sessions)")
        await self.release.wait()
        return Opened("f" * 16, WorkerReady(ice=ICE, cert_sha256="ab" * 32))


@dataclass
class FakeSignal:
    sent: list[tuple[str, wire.Message]] = field(default_factory=list)

    async def publish(self, peer, plaintext):  # type: ignore[no-untyped-def]
        self.sent.append((peer, wire.decode(plaintext)))
        return Published("0" * 64, ("ws://127.0.0.1:1",))


def front(service: FakeService) -> tuple[front_nostr.NostrFrontDoor, FakeSignal]:
    options = cfg.NostrOptions(cfg.Secret("x"), "--nsec", tuple(RECEIVERS), "--peer-npub", ("ws://127.0.0.1:1",))
    config = cfg.SenderConfig("nostr", cfg.AllowLists(), cfg.NetOptions(), nostr=options)
    door = front_nostr.NostrFrontDoor(config, service)  # type: ignore[arg-type]
    door._gate = wire.RequestGate(RECEIVERS)
    door._signal = signal = FakeSignal()  # type: ignore[assignment]
    return door, signal


def request(n: int) -> wire.TunnelRequest:
    return wire.TunnelRequest.create(f"{n:016x}", "tcp://127.0.0.1:22", ICE, int(time.time()))


async def settle(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_requests_in_flight_are_bounded_and_a_dropped_one_is_taken_when_asked_again() -> None:
    async def main() -> None:
        service = FakeService()
        door, signal = front(service)
        async with asyncio.TaskGroup() as tg:
            for n in range(front_nostr.MAX_IN_FLIGHT + 1):
                door._on_request(tg, RECEIVERS[n], request(n))
            door._on_request(tg, RECEIVERS[0], request(0))  # a copy through another relay
            await settle(lambda: len(service.opened) == front_nostr.MAX_IN_FLIGHT)
            service.release.set()
            await settle(lambda: len(signal.sent) == front_nostr.MAX_IN_FLIGHT)
            late = front_nostr.MAX_IN_FLIGHT
            door._on_request(tg, RECEIVERS[late], request(late))  # its republication
            await settle(lambda: len(signal.sent) == late + 1)
        assert len(service.opened) == late + 1
        assert all(isinstance(msg, wire.TunnelOffer) for _, msg in signal.sent)
        assert {peer for peer, _ in signal.sent} == set(RECEIVERS[: late + 1])

    run(main())


def test_a_receiver_asking_again_gets_the_same_reply_at_most_once_per_interval() -> None:
    async def main() -> None:
        service = FakeService(refuse=True)
        door, signal = front(service)
        async with asyncio.TaskGroup() as tg:
            door._on_request(tg, RECEIVERS[0], request(7))
            await settle(lambda: len(signal.sent) == 1)
            door._on_request(tg, RECEIVERS[0], request(7))  # at once: too soon to send again
            await asyncio.sleep(0.05)
            assert len(signal.sent) == 1
            key = (RECEIVERS[0], request(7).session_id)
            plaintext, sent = door._replies[key]
            door._replies[key] = (plaintext, sent - door.options.republish_interval)  # the interval passed
            door._on_request(tg, RECEIVERS[0], request(7))
            await settle(lambda: len(signal.sent) == 2)
        assert signal.sent[0] == signal.sent[1]
        assert isinstance(signal.sent[0][1], wire.TunnelReject) and "1/1 sessions" in signal.sent[0][1].message
        assert len(service.opened) == 1  # never a second session for the same request

    run(main())


def test_strangers_and_stale_requests_get_nothing() -> None:
    async def main() -> None:
        service = FakeService(refuse=True)
        door, signal = front(service)
        stranger = nostr_sdk.Keys.generate().public_key().to_hex()
        stale = wire.TunnelRequest.create("e" * 16, "tcp://127.0.0.1:22", ICE, int(time.time()) - 31)
        async with asyncio.TaskGroup() as tg:
            door._on_request(tg, stranger, request(1))
            door._on_request(tg, RECEIVERS[0], stale)
        assert service.opened == [] and signal.sent == []

    run(main())
