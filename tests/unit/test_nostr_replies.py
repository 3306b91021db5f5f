"""How each side of nostr mode reads the other's messages: replies, rejects, version mismatches."""

from __future__ import annotations

import json

import pytest

from tunnelpy.common.errors import ExitCode, SessionRefused, VersionMismatch
from tunnelpy.signaling import nostr_wire as wire
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.signaling.session_wire import RejectReason
from tunnelpy.supervisor.front_nostr import _session_id_of
from tunnelpy.worker.receiver.nostr_mode import _reply

SENDER, STRANGER = "a" * 64, "b" * 64
SID = "0123456789abcdef"
OFFER = wire.TunnelOffer.create(SID, IceParameters("u", "p" * 22, ("1 1 UDP 1 127.0.0.1 9 typ host",)), "ab" * 32)


def other_version(msg: wire.Message) -> str:
    body = json.loads(wire.encode(msg))
    body["v"] = wire.VERSION + 1
    return json.dumps(body)


def test_the_offer_for_our_request_is_taken() -> None:
    assert _reply(SENDER, wire.encode(OFFER), SENDER, SID) == OFFER


@pytest.mark.parametrize(
    ("author", "msg"),
    [
        (STRANGER, OFFER),  # not our sender
        (SENDER, wire.TunnelOffer.create("f" * 16, OFFER.ice, OFFER.cert_sha256)),  # another request's
        (SENDER, wire.TunnelAnswer(SID)),  # not a reply
    ],
)
def test_other_messages_are_ignored(author: str, msg: wire.Message) -> None:
    assert _reply(author, wire.encode(msg), SENDER, SID) is None


def test_garbage_is_ignored() -> None:
    assert _reply(SENDER, "not json", SENDER, SID) is None


@pytest.mark.parametrize("reason", list(RejectReason))
def test_a_reject_is_its_reasons_exit_code(reason: RejectReason) -> None:
    reject = wire.TunnelReject(SID, reason, "why")
    with pytest.raises(SessionRefused) as info:
        _reply(SENDER, wire.encode(reject), SENDER, SID)
    assert info.value.exit_code is reason.exit_code and "why" in str(info.value)


def test_another_version_from_our_sender_is_exit_6_and_from_others_ignored() -> None:
    with pytest.raises(VersionMismatch) as info:
        _reply(SENDER, other_version(wire.TunnelReject(SID, RejectReason.VERSION_MISMATCH, "x")), SENDER, SID)
    assert info.value.exit_code is ExitCode.VERSION_MISMATCH
    assert "run the same tunnel-py version on both sides" in str(info.value)
    assert _reply(STRANGER, other_version(OFFER), SENDER, SID) is None


def test_the_sender_finds_the_session_id_of_a_request_it_cannot_decode() -> None:
    request = wire.TunnelRequest.create(SID, "tcp://127.0.0.1:22", OFFER.ice, 1)
    assert _session_id_of(other_version(request)) == SID
    assert _session_id_of(json.dumps({"v": 9, "session_id": "XYZ"})) is None
    assert _session_id_of(json.dumps({"v": 9, "session_id": "0123456789ABCDEF"})) is None
    assert _session_id_of("[1, 2]") is None and _session_id_of("{") is None
