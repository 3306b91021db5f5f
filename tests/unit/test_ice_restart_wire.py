"""ICE restart's messages and decisions: nostr_wire's IceRestart/IceRestarted, the sender's
RestartGate (never another key's session), the receiver's answer check, the worker contract's
IceRestart/IceRestarted, and the front door and session service refusing a foreign restart."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import nostr_sdk
import pytest

from tests.support import run
from tunnelpy.common import config as cfg
from tunnelpy.common.errors import ProtocolError
from tunnelpy.signaling import nostr_restart
from tunnelpy.signaling import nostr_wire as wire
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.signaling.nostr_signal import Published
from tunnelpy.supervisor import front_nostr
from tunnelpy.supervisor.sessions import SessionRecord, SessionService
from tunnelpy.worker import contract as ww
from tunnelpy.worker.contract import SessionState

ICE = IceParameters("nEwU", "q" * 24, ("1 1 UDP 2130706431 192.0.2.8 40001 typ host",))
SID = "0123456789abcdef"
ALICE, BOB = (nostr_sdk.Keys.generate().public_key().to_hex() for _ in range(2))
NOW = 1_800_000_000.0


def restart(generation: int = 1, session_id: str = SID, timestamp: float = NOW) -> wire.IceRestart:
    return wire.IceRestart.create(session_id, generation, ICE, int(timestamp))


# --- the Nostr messages ------------------------------------------------------------------------


@pytest.mark.parametrize("msg", [restart(3), wire.IceRestarted.create(SID, 3, ICE)], ids=lambda m: type(m).__name__)
def test_restart_messages_round_trip_and_carry_the_parameters(msg: wire.Message) -> None:
    decoded = wire.decode(wire.encode(msg))
    assert decoded == msg
    assert isinstance(decoded, wire.IceRestart | wire.IceRestarted) and decoded.ice == ICE
    assert json.loads(wire.encode(msg))["kind"] in ("ice_restart", "ice_restarted")


@pytest.mark.parametrize("generation", [0, -1, wire.MAX_GENERATION + 1])
def test_a_restart_generation_out_of_range_is_refused(generation: int) -> None:
    body = json.loads(wire.encode(restart()))
    body["generation"] = generation
    with pytest.raises(ProtocolError, match="generation"):
        wire.decode(json.dumps(body))


def test_a_kind_this_version_does_not_know_is_refused_cleanly() -> None:
    """What an older peer does with our restart: a ProtocolError it logs and ignores."""
    body = json.loads(wire.encode(restart()))
    body["kind"] = "ice_restart_v2"
    with pytest.raises(ProtocolError, match="unknown message kind"):
        wire.decode(json.dumps(body))


# --- the sender's gate and the receiver's check ------------------------------------------------


def test_the_gate_restarts_only_the_owners_live_session_once_per_generation() -> None:
    gate = nostr_restart.RestartGate()
    assert isinstance(gate.check(ALICE, restart(), NOW), wire.Ignore)  # nothing opened yet
    gate.opened(ALICE, SID, "f" * 16)
    foreign = gate.check(BOB, restart(), NOW)
    assert isinstance(foreign, wire.Ignore) and "no live session" in foreign.reason
    assert gate.session_of(BOB, SID) is None
    assert gate.check(ALICE, restart(), NOW) == wire.ACCEPT
    assert gate.session_of(ALICE, SID) == nostr_restart.LiveSession(ALICE, "f" * 16)
    assert isinstance(gate.check(ALICE, restart(), NOW), wire.Ignore)  # another relay's copy
    assert isinstance(gate.check(ALICE, restart(2, timestamp=NOW - 31), NOW), wire.Ignore)  # stale
    assert isinstance(gate.check(ALICE, restart(2, timestamp=NOW + 6), NOW), wire.Ignore)  # future
    assert gate.check(ALICE, restart(2), NOW) == wire.ACCEPT


def test_the_gate_forgets_the_least_recently_used_session_beyond_its_capacity() -> None:
    gate = nostr_restart.RestartGate(capacity=2)
    for n in range(3):
        gate.opened(ALICE, f"{n:016x}", f"{n:016x}")
    assert isinstance(gate.check(ALICE, restart(session_id=f"{0:016x}"), NOW), wire.Ignore)
    assert gate.check(ALICE, restart(session_id=f"{2:016x}"), NOW) == wire.ACCEPT


def test_the_receiver_takes_only_its_senders_answer_to_its_generation() -> None:
    answer = wire.IceRestarted.create(SID, 2, ICE)
    check = nostr_restart.check_restarted
    assert check(answer, ALICE, ALICE, SID, 2) == wire.ACCEPT
    assert isinstance(check(answer, BOB, ALICE, SID, 2), wire.Ignore)
    assert isinstance(check(answer, ALICE, ALICE, SID, 1), wire.Ignore)
    assert isinstance(check(answer, ALICE, ALICE, "f" * 16, 2), wire.Ignore)
    assert isinstance(check(wire.TunnelAnswer(SID), ALICE, ALICE, SID, 2), wire.Ignore)


# --- the worker contract -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [ww.IceRestart(4, ICE), ww.IceRestarted(4, ice=ICE), ww.IceRestarted(4, error="no connected ICE session")],
)
def test_contract_restart_messages_round_trip(msg: ww.Message) -> None:
    assert ww.decode(ww.encode(msg)) == msg


# --- the supervisor: front door and session service --------------------------------------------


@dataclass
class FakePool:
    """The session service's view of the pool; a worker that answers every IceRestart."""

    records: dict[str, SessionRecord] = field(default_factory=dict)
    sent: list[tuple[str, ww.Message]] = field(default_factory=list)

    def send(self, session_id: str, msg: ww.Message) -> None:
        self.sent.append((session_id, msg))
        if isinstance(msg, ww.IceRestart):
            record = self.records[session_id]
            asyncio.get_running_loop().call_soon(record.apply, ww.IceRestarted(msg.generation, ice=ICE))


def service_with(record: SessionRecord) -> tuple[SessionService, FakePool]:
    service = SessionService.__new__(SessionService)
    service.pool = pool = FakePool({record.session_id: record})  # type: ignore[assignment]
    return service, pool


def test_the_session_service_restarts_only_a_connected_session_of_its_own_receiver() -> None:
    async def main() -> None:
        record = SessionRecord("f" * 16, "npub1alice", "tcp://127.0.0.1:22", state=SessionState.CONNECTED)
        service, pool = service_with(record)
        assert await service.restart_ice("f" * 16, "npub1bob", 1, ICE) == "no such session of this receiver"
        assert await service.restart_ice("e" * 16, "npub1alice", 1, ICE) == "no such session of this receiver"
        assert pool.sent == []
        assert await service.restart_ice("f" * 16, "npub1alice", 1, ICE) == ICE
        assert pool.sent == [("f" * 16, ww.IceRestart(1, ICE))]
        record.state = SessionState.WAITING
        assert "not connected" in str(await service.restart_ice("f" * 16, "npub1alice", 2, ICE))

    run(main())


@dataclass
class FakeSignal:
    sent: list[tuple[str, wire.Message]] = field(default_factory=list)

    async def publish(self, peer, plaintext):  # type: ignore[no-untyped-def]
        self.sent.append((peer, wire.decode(plaintext)))
        return Published("0" * 64, ("ws://127.0.0.1:1",))


def test_the_front_door_never_lets_another_key_restart_a_session() -> None:
    async def main() -> None:
        from tunnelpy.signaling import nostr_keys

        record = SessionRecord("f" * 16, nostr_keys.npub_of(ALICE), "tcp://127.0.0.1:22", state=SessionState.CONNECTED)
        service, pool = service_with(record)
        options = cfg.NostrOptions(cfg.Secret("x"), "--nsec", (ALICE, BOB), "--peer-npub", ("ws://127.0.0.1:1",))
        config = cfg.SenderConfig("nostr", cfg.AllowLists(), cfg.NetOptions(), nostr=options)
        door = front_nostr.NostrFrontDoor(config, service)
        door._gate = wire.RequestGate([ALICE, BOB])
        door._signal = signal = FakeSignal()  # type: ignore[assignment]
        door._restarts.opened(ALICE, SID, "f" * 16)
        now = time.time()
        async with asyncio.TaskGroup() as tg:
            door._on_restart(tg, BOB, restart(1, timestamp=now))  # an allowed key, not the owner
            door._on_restart(tg, "c" * 64, restart(1, timestamp=now))  # not even allowed
        assert pool.sent == [] and signal.sent == []
        async with asyncio.TaskGroup() as tg:
            door._on_restart(tg, ALICE, restart(1, timestamp=now))
            door._on_restart(tg, ALICE, restart(1, timestamp=now))  # the copy from another relay
        assert pool.sent == [("f" * 16, ww.IceRestart(1, ICE))]
        assert signal.sent == [(ALICE, wire.IceRestarted.create(SID, 1, ICE))]

    run(main())
