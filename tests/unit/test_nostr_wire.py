"""nostr_wire: codec round trips and rejections, RequestGate decisions, RepublishSchedule."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from tunnelpy.common.errors import ExitCode, ProtocolError, VersionMismatch
from tunnelpy.signaling import nostr_wire as wire
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.signaling.session_wire import RejectReason

ICE = IceParameters(
    "uFrg",
    "p" * 24,
    ("1 1 UDP 2130706431 192.0.2.7 40000 typ host", "2 1 UDP 1694498815 198.51.100.9 3478 typ srflx"),
)
SID = "0123456789abcdef"
CERT = "ab" * 32
ALICE, BOB = "a" * 64, "b" * 64
NOW = 1_800_000_000.0


def request(session_id: str = SID, timestamp: float = NOW) -> wire.TunnelRequest:
    return wire.TunnelRequest.create(session_id, "tcp://127.0.0.1:22", ICE, int(timestamp))


def body(**changes: object) -> str:
    """The JSON of a valid request with some keys changed (a value of ... deletes the key)."""
    obj = json.loads(wire.encode(request()))
    for key, value in changes.items():
        if value is ...:
            del obj[key]
        else:
            obj[key] = value
    return json.dumps(obj)


# --- codec -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        request(),
        wire.TunnelOffer.create(SID, ICE, CERT),
        wire.TunnelReject(SID, RejectReason.NOT_ALLOWED, "tcp://10.0.0.1:22 is outside --allowed-tcp"),
        wire.TunnelAnswer(SID),
    ],
    ids=lambda m: type(m).__name__,
)
def test_every_message_round_trips(msg: wire.Message) -> None:
    text = wire.encode(msg)
    assert isinstance(text, str)
    assert wire.decode(text) == msg


def test_ice_parameters_survive_the_round_trip() -> None:
    offer = wire.decode(wire.encode(wire.TunnelOffer.create(SID, ICE, CERT)))
    assert isinstance(offer, wire.TunnelOffer)
    assert offer.ice == ICE
    req = wire.decode(wire.encode(request()))
    assert isinstance(req, wire.TunnelRequest)
    assert req.ice == ICE and req.source == "tcp://127.0.0.1:22" and req.timestamp == int(NOW)


def test_reject_reason_decodes_to_the_enum_with_its_exit_code() -> None:
    rej = wire.decode(wire.encode(wire.TunnelReject(SID, RejectReason.AT_CAPACITY, "10/10 sessions")))
    assert isinstance(rej, wire.TunnelReject)
    assert rej.reason is RejectReason.AT_CAPACITY
    assert rej.reason.exit_code is ExitCode.AT_CAPACITY


def test_reject_message_is_capped_at_a_utf8_boundary() -> None:
    long = "é" * 600  # 2 bytes each: the cut falls inside a character unless handled
    rej = wire.TunnelReject(SID, RejectReason.INTERNAL, long)
    assert rej.message.endswith("...")
    assert len(rej.message.encode()) <= wire.MAX_REJECT_MESSAGE
    assert rej.message[:-3] == "é" * len(rej.message[:-3])
    short = wire.TunnelReject(SID, RejectReason.INTERNAL, "é" * 10)
    assert short.message == "é" * 10


def test_reject_message_from_a_peer_is_capped_on_decode_too() -> None:
    text = wire.encode(wire.TunnelReject(SID, RejectReason.INTERNAL, "x"))
    obj = json.loads(text)
    obj["message"] = "€" * 1000
    rej = wire.decode(json.dumps(obj))
    assert isinstance(rej, wire.TunnelReject)
    assert len(rej.message.encode()) <= wire.MAX_REJECT_MESSAGE


def test_oversize_plaintext_is_rejected_before_parsing() -> None:
    huge = "{" * (wire.MAX_PLAINTEXT + 1)  # not JSON either: the size check must come first
    with pytest.raises(ProtocolError, match="over"):
        wire.decode(huge)
    multibyte = "€" * (wire.MAX_PLAINTEXT // 3 + 1)  # few characters, too many bytes
    with pytest.raises(ProtocolError, match="over"):
        wire.decode(multibyte)


def test_oversize_message_is_refused_on_encode_with_a_hint() -> None:
    many = IceParameters("u", "p" * 24, tuple(f"{i} 1 UDP 1 10.0.0.{i % 250} {i} typ host" for i in range(1000)))
    with pytest.raises(ProtocolError, match="--ice-host"):
        wire.encode(wire.TunnelRequest.create(SID, "tcp://h:1", many, int(NOW)))


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '"a string"'])
def test_bad_json_is_a_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError):
        wire.decode(text)


def test_wrong_version_says_to_run_the_same_version() -> None:
    with pytest.raises(VersionMismatch, match="same tunnel-py version") as info:
        wire.decode(body(v=wire.VERSION + 1))
    assert info.value.exit_code is ExitCode.VERSION_MISMATCH
    with pytest.raises(VersionMismatch):
        wire.decode(body(v=...))


@pytest.mark.parametrize("field", ["session_id", "source", "ice_ufrag", "ice_pwd", "candidates", "timestamp"])
def test_missing_field_is_named(field: str) -> None:
    with pytest.raises(ProtocolError, match=field):
        wire.decode(body(**{field: ...}))


@pytest.mark.parametrize(
    ("field", "value"),
    [("timestamp", "now"), ("timestamp", 1.5), ("candidates", "x"), ("candidates", [1]), ("source", None)],
)
def test_wrong_field_type_is_named(field: str, value: object) -> None:
    with pytest.raises(ProtocolError, match=field):
        wire.decode(body(**{field: value}))


def test_unknown_message_kind_and_bad_reason_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="unknown message kind"):
        wire.decode(body(kind="tunnel_hello"))
    rej = json.loads(wire.encode(wire.TunnelReject(SID, RejectReason.DRAINING, "bye")))
    rej["reason"] = "bored"
    with pytest.raises(ProtocolError, match="reason"):
        wire.decode(json.dumps(rej))


@pytest.mark.parametrize("sid", ["", "0123", "0123456789ABCDEF", "0123456789abcdeg", "0123456789abcdef0"])
def test_malformed_session_id_is_rejected(sid: str) -> None:
    with pytest.raises(ProtocolError, match="session_id"):
        wire.decode(body(session_id=sid))


def test_malformed_cert_pin_is_rejected() -> None:
    offer = json.loads(wire.encode(wire.TunnelOffer.create(SID, ICE, CERT)))
    offer["cert_sha256"] = "AB" * 32
    with pytest.raises(ProtocolError, match="cert_sha256"):
        wire.decode(json.dumps(offer))


def test_session_ids_are_16_hex_and_fresh() -> None:
    ids = {wire.new_session_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 16 and int(i, 16) >= 0 and i == i.lower() for i in ids)


def test_event_kind_is_ephemeral_and_not_tunnel_rs() -> None:
    assert 20000 <= wire.EVENT_KIND < 30000
    assert wire.EVENT_KIND != 24242


# --- RequestGate -------------------------------------------------------------------------


def test_gate_accepts_a_fresh_request_from_an_allowed_author() -> None:
    gate = wire.RequestGate({ALICE})
    assert gate.check(ALICE, request(), NOW) == wire.ACCEPT


def test_gate_ignores_unknown_authors_without_caching_them() -> None:
    gate = wire.RequestGate({ALICE})
    decision = gate.check(BOB, request(), NOW)
    assert isinstance(decision, wire.Ignore) and "not an authorized" in decision.reason
    assert len(gate) == 0


def test_gate_with_no_allow_list_lets_any_author_through() -> None:
    gate = wire.RequestGate(None)
    assert gate.check(BOB, request(), NOW) == wire.ACCEPT


def test_gate_author_match_ignores_hex_case() -> None:
    gate = wire.RequestGate({ALICE.upper()})
    assert gate.check(ALICE, request(), NOW) == wire.ACCEPT


def test_gate_drops_stale_requests() -> None:
    gate = wire.RequestGate({ALICE}, max_age=30)
    assert gate.check(ALICE, request(timestamp=NOW - 30), NOW) == wire.ACCEPT
    decision = gate.check(ALICE, request("1" * 16, timestamp=NOW - 31), NOW)
    assert isinstance(decision, wire.Ignore) and "stale" in decision.reason


def test_gate_drops_requests_from_the_future_beyond_the_skew() -> None:
    gate = wire.RequestGate({ALICE}, max_skew=5)
    assert gate.check(ALICE, request(timestamp=NOW + 5), NOW) == wire.ACCEPT
    decision = gate.check(ALICE, request("1" * 16, timestamp=NOW + 6), NOW)
    assert isinstance(decision, wire.Ignore) and "future" in decision.reason


def test_gate_drops_duplicates_from_several_relays_and_republications() -> None:
    gate = wire.RequestGate({ALICE})
    assert gate.check(ALICE, request(), NOW) == wire.ACCEPT
    for delay in (0.0, 0.01, 5, 15, 35):  # the same event from other relays, then republished copies
        decision = gate.check(ALICE, request(timestamp=NOW + delay), NOW + delay)
        assert isinstance(decision, wire.Ignore) and "duplicate" in decision.reason


def test_gate_keys_on_author_and_session_id() -> None:
    gate = wire.RequestGate({ALICE, BOB})
    assert gate.check(ALICE, request(), NOW) == wire.ACCEPT
    assert gate.check(BOB, request(), NOW) == wire.ACCEPT  # same session id, other author
    assert gate.check(ALICE, request("1" * 16), NOW) == wire.ACCEPT


def test_a_receiver_that_keeps_republishing_stays_a_duplicate_past_the_ttl() -> None:
    gate = wire.RequestGate({ALICE}, ttl=120)
    assert gate.check(ALICE, request(), NOW) == wire.ACCEPT
    for t in (60, 120, 180, 240):  # republished every 60 s with fresh timestamps
        assert isinstance(gate.check(ALICE, request(timestamp=NOW + t), NOW + t), wire.Ignore)


def test_replay_after_the_ttl_is_stale() -> None:
    gate = wire.RequestGate({ALICE}, max_age=30, max_skew=5, ttl=35)
    old = request()
    assert gate.check(ALICE, old, NOW) == wire.ACCEPT
    later = NOW + 36
    decision = gate.check(ALICE, old, later)  # a relay replays the stored event after expiry
    assert isinstance(decision, wire.Ignore) and "stale" in decision.reason
    gate.check(ALICE, request("1" * 16, timestamp=later), later)
    assert len(gate) == 1  # the expired entry is gone


def test_gate_refuses_a_ttl_that_would_let_replays_through() -> None:
    with pytest.raises(ValueError, match="ttl"):
        wire.RequestGate({ALICE}, max_age=30, max_skew=5, ttl=34)


def test_gate_cache_is_bounded_and_drops_the_least_recently_seen() -> None:
    gate = wire.RequestGate(None, capacity=3)
    for i in range(10):
        assert gate.check(ALICE, request(f"{i:016x}"), NOW) == wire.ACCEPT
        assert len(gate) <= 3
    assert isinstance(gate.check(ALICE, request(f"{9:016x}"), NOW), wire.Ignore)
    assert gate.check(ALICE, request(f"{0:016x}"), NOW) == wire.ACCEPT  # evicted: accepted again


def test_check_reply_matches_author_session_and_kind() -> None:
    offer = wire.TunnelOffer.create(SID, ICE, CERT)
    assert wire.check_reply(offer, BOB.upper(), BOB, SID) == wire.ACCEPT
    assert wire.check_reply(wire.TunnelReject(SID, RejectReason.DRAINING, ""), BOB, BOB, SID) == wire.ACCEPT
    assert isinstance(wire.check_reply(offer, ALICE, BOB, SID), wire.Ignore)
    assert isinstance(wire.check_reply(offer, BOB, BOB, "1" * 16), wire.Ignore)
    assert isinstance(wire.check_reply(wire.TunnelAnswer(SID), BOB, BOB, SID), wire.Ignore)


# --- RepublishSchedule -------------------------------------------------------------------


def republish_times(interval: float, max_wait: float) -> list[float]:
    """Drive a schedule as the glue would, publishing exactly when due."""
    schedule = wire.RepublishSchedule(interval, max_wait, now=0.0)
    times = []
    while (at := schedule.next_at()) is not None:
        assert schedule.due(at) and not schedule.due(at - 0.001)
        times.append(at)
        schedule.published(at)
    assert schedule.expired(max_wait) and not schedule.expired(max_wait - 0.001)
    return times


def test_republish_delays_double_and_stop_at_max_wait() -> None:
    assert republish_times(5, 120) == [5, 15, 35, 75]


def test_republish_delays_are_capped_at_60_s() -> None:
    assert republish_times(5, 300) == [5, 15, 35, 75, 135, 195, 255]


def test_republish_counts_from_a_late_publication() -> None:
    schedule = wire.RepublishSchedule(5, 120, now=0.0)
    schedule.published(7.0)  # the loop woke up late
    assert schedule.next_at() == 17.0


def test_republish_wait_time_ends_at_the_deadline() -> None:
    schedule = wire.RepublishSchedule(5, 12, now=0.0)
    assert schedule.wait_time(1.0) == 4.0
    schedule.published(5.0)  # next would be 15 > deadline 12
    assert schedule.next_at() is None
    assert schedule.wait_time(6.0) == 6.0
    assert schedule.wait_time(20.0) == 0.0


@pytest.mark.parametrize(("interval", "max_wait"), [(0, 10), (-1, 10), (5, 0), (120, 300)])
def test_republish_rejects_nonsense(interval: float, max_wait: float) -> None:
    with pytest.raises(ValueError):
        wire.RepublishSchedule(interval, max_wait, now=0.0)


def test_the_wire_module_is_sans_io() -> None:
    code = "import sys, tunnelpy.signaling.nostr_wire; print(sorted({'nostr_sdk', 'asyncio'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_messages_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        request().source = "tcp://evil:1"  # type: ignore[misc]
