"""The JSON wire formats: session (front door), worker (ZeroMQ) and control (status) protocols."""

from __future__ import annotations

import dataclasses
import struct
from types import ModuleType

import orjson
import pytest

from tunnelpy.common.errors import ExitCode, ProtocolError, VersionMismatch
from tunnelpy.signaling import session_wire as sw
from tunnelpy.signaling.ice_parameters import IceParameters
from tunnelpy.supervisor import control_wire as cw
from tunnelpy.worker import contract as ww

SESSION_VIEW = cw.SessionView(
    session_id="s-1",
    receiver_id="e" * 64,
    source="tcp://127.0.0.1:22",
    state="connected",
    age_s=12.5,
    bytes_up=1024,
    bytes_down=2048,
    streams_open=1,
    streams_total=3,
    rtt_ms=None,
    pid=4242,
)

SESSION_MESSAGES = [
    sw.SessionRequest(source="tcp://127.0.0.1:22"),
    sw.SessionRequest(source="udp://[::1]:53"),
    sw.SessionAccepted(session_id="s-1", worker_ticket="endpointabc123"),
    *(sw.SessionRejected(reason=reason, message=f"refused: {reason.value}") for reason in sw.RejectReason),
]
WORKER_MESSAGES = [
    ww.WorkerReady(ticket="endpointabc123"),
    ww.WorkerReady(
        ice=IceParameters("abcd", "0123456789abcdefghijkl", ("1 1 udp 2130706431 10.0.0.2 40000 typ host",)),
        cert_sha256="ab" * 32,
    ),
    ww.Heartbeat(
        state="connected", bytes_up=1, bytes_down=2, streams_open=3, streams_total=4, rtt_ms=1.5, flows_open=6
    ),
    ww.Heartbeat(
        state="connected",
        bytes_up=1,
        bytes_down=2,
        streams_open=0,
        streams_total=0,
        lost_packets=7,
        datagrams_dropped=8,
        path="relay",
    ),
    ww.Heartbeat(state="waiting", bytes_up=0, bytes_down=0, streams_open=0, streams_total=0),
    ww.WorkerExiting(reason="peer closed", exit_code=11),
    ww.Drain(),
    ww.Stop(reason="drain grace over"),
    ww.IceRestart(2, IceParameters("efgh", "0123456789abcdefghijkm", ("1 1 udp 2130706431 10.0.0.3 40001 typ host",))),
    ww.IceRestarted(2, ice=IceParameters("ijkl", "0123456789abcdefghijkn", ())),
    ww.IceRestarted(3, error="no connected ICE session to restart"),
]
CONTROL_MESSAGES = [
    cw.StatusRequest(),
    cw.StatusReply(mode="iroh", endpoint_id="f" * 64, ticket="t", draining=False, max_sessions=100, sessions=()),
    cw.StatusReply(
        mode="iroh",
        endpoint_id="f" * 64,
        ticket="t",
        draining=True,
        max_sessions=2,
        sessions=(dataclasses.asdict(SESSION_VIEW), dataclasses.asdict(dataclasses.replace(SESSION_VIEW, rtt_ms=3.25))),
    ),
]
WIRES: list[tuple[ModuleType, list]] = [(sw, SESSION_MESSAGES), (ww, WORKER_MESSAGES), (cw, CONTROL_MESSAGES)]


def encode_body(wire: ModuleType, msg) -> bytes:  # type: ignore[no-untyped-def]
    """The JSON body of ``msg`` (the session protocol adds a length prefix; strip it)."""
    data = wire.encode(msg)
    return data[sw.LENGTH_SIZE :] if wire is sw else data


def decode_dict(wire: ModuleType, body: dict):  # type: ignore[no-untyped-def]
    return wire.decode(orjson.dumps(body))


def valid_body(wire: ModuleType) -> dict:
    """A decodable message of ``wire`` as a dict, to break one thing at a time."""
    return {
        sw: {"v": sw.VERSION, "kind": "session_request", "source": "tcp://127.0.0.1:22"},
        ww: {"v": ww.VERSION, "kind": "stop", "reason": "bye"},
        cw: {"v": cw.VERSION, "kind": "status_request"},
    }[wire]


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "msg"),
    [(wire, msg) for wire, msgs in WIRES for msg in msgs],
    ids=lambda v: getattr(v, "__name__", None) or type(v).__name__,
)
def test_every_message_round_trips(wire: ModuleType, msg) -> None:  # type: ignore[no-untyped-def]
    decoded = wire.decode(encode_body(wire, msg))
    assert type(decoded) is type(msg)
    assert decoded == msg


@pytest.mark.parametrize(("wire", "msgs"), WIRES, ids=["session", "worker", "control"])
def test_samples_cover_every_kind(wire: ModuleType, msgs: list) -> None:
    kinds = {orjson.loads(encode_body(wire, msg))["kind"] for msg in msgs}
    assert kinds == {kind.value for kind in wire.Kind}


def test_encoding_is_version_kind_then_fields() -> None:
    assert ww.encode(ww.Stop(reason="bye")) == b'{"v":3,"kind":"stop","reason":"bye"}'
    assert ww.encode(ww.Drain()) == b'{"v":3,"kind":"drain"}'
    assert cw.encode(cw.StatusRequest()) == b'{"v":1,"kind":"status_request"}'


def test_session_message_is_length_prefixed() -> None:
    data = sw.encode(sw.SessionRequest(source="tcp://127.0.0.1:22"))
    body = b'{"v":1,"kind":"session_request","source":"tcp://127.0.0.1:22","instance":"","replaces":""}'
    assert data == struct.pack(">I", len(body)) + body


def test_a_request_of_an_older_receiver_without_instance_fields_decodes() -> None:
    old = sw.decode(b'{"v":1,"kind":"session_request","source":"tcp://127.0.0.1:22"}')
    assert old == sw.SessionRequest(source="tcp://127.0.0.1:22", instance="", replaces="")


def test_rejection_decodes_to_the_enum() -> None:
    msg = sw.decode(b'{"v":1,"kind":"session_rejected","reason":"at_capacity","message":"full"}')
    assert msg == sw.SessionRejected(reason=sw.RejectReason.AT_CAPACITY, message="full")
    assert msg.reason is sw.RejectReason.AT_CAPACITY


def test_sessions_list_decodes_to_a_tuple() -> None:
    reply = cw.decode(
        b'{"v":1,"kind":"status_reply","mode":"iroh","endpoint_id":"x","ticket":"t","draining":false,'
        b'"max_sessions":3,"sessions":[{"session_id":"a"}]}'
    )
    assert reply.sessions == ({"session_id": "a"},)
    assert isinstance(reply.sessions, tuple)


def test_heartbeat_optional_fields_take_defaults() -> None:
    msg = decode_dict(
        ww,
        {
            "v": ww.VERSION,
            "kind": "heartbeat",
            "state": "connected",
            "bytes_up": 5,
            "bytes_down": 6,
            "streams_open": 1,
            "streams_total": 2,
        },
    )
    assert msg == ww.Heartbeat(state="connected", bytes_up=5, bytes_down=6, streams_open=1, streams_total=2)
    assert msg.rtt_ms is None
    assert msg.flows_open == 0


def test_float_field_accepts_an_integer() -> None:
    msg = decode_dict(
        ww,
        {
            "v": ww.VERSION,
            "kind": "heartbeat",
            "state": "connected",
            "bytes_up": 0,
            "bytes_down": 0,
            "streams_open": 0,
            "streams_total": 0,
            "rtt_ms": 7,
        },
    )
    assert msg.rtt_ms == 7


# -- version -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "protocol"), [(sw, "session protocol"), (ww, "worker protocol"), (cw, "control protocol")]
)
@pytest.mark.parametrize("offset", [-1, 1, "str", None])
def test_other_version_is_a_version_mismatch_that_says_what_to_do(wire: ModuleType, protocol: str, offset) -> None:  # type: ignore[no-untyped-def]
    version = wire.VERSION + offset if isinstance(offset, int) else str(wire.VERSION) if offset else None
    body = valid_body(wire) | {"v": version}
    with pytest.raises(VersionMismatch) as info:
        decode_dict(wire, body)
    text = str(info.value)
    assert text.startswith(f"{protocol}: peer speaks version {version!r}, we speak {wire.VERSION}")
    assert "run the same tunnel-py version on both sides" in text
    assert info.value.exit_code is ExitCode.VERSION_MISMATCH


@pytest.mark.parametrize("wire", [sw, ww, cw], ids=["session", "worker", "control"])
def test_missing_version_is_a_version_mismatch(wire: ModuleType) -> None:
    body = valid_body(wire)
    del body["v"]
    with pytest.raises(VersionMismatch, match="peer speaks version None"):
        decode_dict(wire, body)


# -- malformed messages --------------------------------------------------------------------


def protocol_error(wire: ModuleType, data: bytes) -> str:
    """Decode ``data`` expecting a plain ProtocolError (not a version mismatch); return its text."""
    with pytest.raises(ProtocolError) as info:
        wire.decode(data)
    assert type(info.value) is ProtocolError
    return str(info.value)


@pytest.mark.parametrize("wire", [sw, ww, cw], ids=["session", "worker", "control"])
@pytest.mark.parametrize("data", [b"", b"not json", b'{"v":1,', b"\xff\xfe"])
def test_non_json_is_a_protocol_error(wire: ModuleType, data: bytes) -> None:
    assert "message is not JSON" in protocol_error(wire, data)


@pytest.mark.parametrize("wire", [sw, ww, cw], ids=["session", "worker", "control"])
@pytest.mark.parametrize("data", [b"[]", b'[{"v":1}]', b'"session_request"', b"1", b"null", b"true"])
def test_non_object_is_a_protocol_error(wire: ModuleType, data: bytes) -> None:
    assert protocol_error(wire, data).endswith("message is not a JSON object")


@pytest.mark.parametrize("wire", [sw, ww, cw], ids=["session", "worker", "control"])
@pytest.mark.parametrize("kind", ["nope", None, 1, "SESSION_REQUEST", "REQUEST"])
def test_unknown_kind_is_a_protocol_error(wire: ModuleType, kind) -> None:  # type: ignore[no-untyped-def]
    body = valid_body(wire) | {"kind": kind}
    assert f"unknown message kind {kind!r}" in protocol_error(wire, orjson.dumps(body))


def test_kind_of_another_protocol_is_unknown() -> None:
    assert "unknown message kind 'stop'" in protocol_error(sw, b'{"v":1,"kind":"stop","reason":"x"}')
    assert "unknown message kind 'session_request'" in protocol_error(ww, b'{"v":3,"kind":"session_request"}')


@pytest.mark.parametrize("kind", [[], {}], ids=["list", "object"])
def test_unhashable_kind_is_a_protocol_error(kind) -> None:  # type: ignore[no-untyped-def]
    assert "unknown message kind" in protocol_error(sw, orjson.dumps({"v": 1, "kind": kind}))


@pytest.mark.parametrize(
    ("wire", "body", "field"),
    [
        (sw, {"v": 1, "kind": "session_request"}, "source"),
        (sw, {"v": 1, "kind": "session_accepted", "session_id": "s"}, "worker_ticket"),
        (sw, {"v": 1, "kind": "session_rejected", "message": "m"}, "reason"),
        (
            ww,
            {
                "v": ww.VERSION,
                "kind": "heartbeat",
                "state": "connected",
                "bytes_up": 0,
                "bytes_down": 0,
                "streams_open": 0,
            },
            "streams_total",
        ),
        (ww, {"v": ww.VERSION, "kind": "exiting", "reason": "r"}, "exit_code"),
        (ww, {"v": ww.VERSION, "kind": "stop"}, "reason"),
        (
            cw,
            {
                "v": 1,
                "kind": "status_reply",
                "mode": "iroh",
                "endpoint_id": "x",
                "ticket": "t",
                "draining": False,
                "max_sessions": 1,
            },
            "sessions",
        ),
    ],
)
def test_missing_field_is_named(wire: ModuleType, body: dict, field: str) -> None:
    text = protocol_error(wire, orjson.dumps(body))
    assert text.endswith(f"{body['kind']} message lacks field {field!r}")


HEARTBEAT = {
    "v": ww.VERSION,
    "kind": "heartbeat",
    "state": "connected",
    "bytes_up": 0,
    "bytes_down": 0,
    "streams_open": 0,
    "streams_total": 0,
}
STATUS_REPLY = {
    "v": 1,
    "kind": "status_reply",
    "mode": "iroh",
    "endpoint_id": "x",
    "ticket": "t",
    "draining": False,
    "max_sessions": 1,
    "sessions": [],
}


@pytest.mark.parametrize(
    ("wire", "body", "field", "value"),
    [
        (ww, HEARTBEAT, "bytes_up", True),  # bool is not an int
        (ww, HEARTBEAT, "bytes_up", "5"),
        (ww, HEARTBEAT, "bytes_up", 1.0),
        (ww, HEARTBEAT, "bytes_up", None),
        (ww, HEARTBEAT, "state", 1),
        (ww, HEARTBEAT, "rtt_ms", "fast"),
        (ww, HEARTBEAT, "rtt_ms", False),  # bool is not a float either
        (ww, HEARTBEAT, "flows_open", 2.5),
        (ww, {"v": ww.VERSION, "kind": "exiting", "reason": "r"}, "exit_code", "11"),
        (ww, {"v": ww.VERSION, "kind": "ready"}, "ticket", ["t"]),
        (ww, {"v": ww.VERSION, "kind": "ready"}, "ice", "abcd"),
        (ww, HEARTBEAT, "state", "bogus"),
        (sw, {"v": 1, "kind": "session_request"}, "source", {"host": "x"}),
        (sw, {"v": 1, "kind": "session_rejected", "message": "m"}, "reason", "bogus"),
        (sw, {"v": 1, "kind": "session_rejected", "message": "m"}, "reason", 3),
        (sw, {"v": 1, "kind": "session_accepted", "worker_ticket": "t"}, "session_id", None),
        (cw, STATUS_REPLY, "draining", 1),  # int is not a bool
        (cw, STATUS_REPLY, "draining", "false"),
        (cw, STATUS_REPLY, "max_sessions", True),
        (cw, STATUS_REPLY, "sessions", {"session_id": "a"}),
        (cw, STATUS_REPLY, "sessions", [1, 2]),
        (cw, STATUS_REPLY, "sessions", "[]"),
    ],
)
def test_wrong_field_type_is_named(wire: ModuleType, body: dict, field: str, value) -> None:  # type: ignore[no-untyped-def]
    text = protocol_error(wire, orjson.dumps(body | {field: value}))
    assert f"{body['kind']}.{field} has the wrong type: {value!r}" in text


@pytest.mark.parametrize(
    ("ice", "where"),
    [
        ({"ufrag": "a", "pwd": "b", "candidates": "1 1 udp 2130706431 10.0.0.2 40000 typ host"}, "ice.candidates"),
        ({"ufrag": "a", "pwd": "b", "candidates": [1]}, "ice.candidates"),
        ({"ufrag": 5, "pwd": "b", "candidates": []}, "ice.ufrag"),
    ],
)
def test_nested_field_errors_name_the_path(ice: dict, where: str) -> None:
    text = protocol_error(ww, orjson.dumps({"v": ww.VERSION, "kind": "ready", "ice": ice}))
    assert f"ready.{where} has the wrong type" in text


def test_nested_missing_field_is_named() -> None:
    text = protocol_error(ww, orjson.dumps({"v": ww.VERSION, "kind": "ready", "ice": {"ufrag": "a", "pwd": "b"}}))
    assert text.endswith("ready.ice message lacks field 'candidates'")


@pytest.mark.parametrize("value", [[], {}], ids=["list", "object"])
def test_unhashable_enum_value_is_a_protocol_error(value) -> None:  # type: ignore[no-untyped-def]
    body = {"v": 1, "kind": "session_rejected", "reason": value, "message": "m"}
    assert "session_rejected.reason has the wrong type" in protocol_error(sw, orjson.dumps(body))


def test_unknown_extra_fields_are_ignored() -> None:
    # A newer peer of the same version may add optional fields; they must not break us.
    assert ww.decode(b'{"v":3,"kind":"stop","reason":"x","extra":1}') == ww.Stop(reason="x")


# -- session framing ------------------------------------------------------------------


def request_of_size(size: int) -> sw.SessionRequest:
    """A SessionRequest whose JSON body is exactly ``size`` bytes."""
    overhead = len(sw.encode(sw.SessionRequest(source=""))) - sw.LENGTH_SIZE
    return sw.SessionRequest(source="x" * (size - overhead))


def test_message_of_max_size_encodes() -> None:
    data = sw.encode(request_of_size(sw.MAX_MESSAGE))
    assert sw.MAX_MESSAGE == 16 * 1024
    assert len(data) == sw.LENGTH_SIZE + sw.MAX_MESSAGE
    decoder = sw.MessageDecoder()
    decoder.feed(data)
    assert decoder.next() == request_of_size(sw.MAX_MESSAGE)


@pytest.mark.parametrize("size", [sw.MAX_MESSAGE + 1, 10 * sw.MAX_MESSAGE])
def test_oversize_message_refuses_to_encode(size: int) -> None:
    with pytest.raises(ProtocolError, match=f"session message of {size} bytes exceeds 16384"):
        sw.encode(request_of_size(size))


def test_decoder_takes_bytes_in_any_pieces() -> None:
    messages = [sw.SessionRequest(source="tcp://127.0.0.1:22"), sw.SessionAccepted(session_id="s", worker_ticket="t")]
    data = b"".join(sw.encode(m) for m in messages)
    decoder, out = sw.MessageDecoder(), []
    for i in range(len(data)):
        assert decoder.wanted() >= 1
        decoder.feed(data[i : i + 1])
        while (msg := decoder.next()) is not None:
            out.append(msg)
    decoder.eof()
    assert out == messages


@pytest.mark.parametrize("length", [sw.MAX_MESSAGE + 1, 2**32 - 1])
def test_decoder_rejects_oversize_before_buffering_the_body(length: int) -> None:
    decoder = sw.MessageDecoder()
    with pytest.raises(ProtocolError, match=f"session message of {length} bytes exceeds 16384: not a tunnel-py peer"):
        decoder.feed(struct.pack(">I", length))


@pytest.mark.parametrize("prefix", [b"\x00", b"\x00\x00\x01"])
def test_decoder_eof_inside_the_prefix_is_truncation(prefix: bytes) -> None:
    decoder = sw.MessageDecoder()
    decoder.feed(prefix)
    with pytest.raises(ProtocolError, match="truncated: the peer closed inside the length prefix"):
        decoder.eof()


def test_decoder_eof_inside_the_body_is_truncation() -> None:
    decoder = sw.MessageDecoder()
    decoder.feed(sw.encode(sw.SessionRequest(source="tcp://127.0.0.1:22"))[:-1])
    assert decoder.next() is None
    with pytest.raises(ProtocolError, match="truncated: the peer closed mid-message"):
        decoder.eof()


EXPECTED_EXIT_CODES = {
    sw.RejectReason.UNAUTHORIZED: ExitCode.UNAUTHORIZED,
    sw.RejectReason.NOT_ALLOWED: ExitCode.NOT_ALLOWED,
    sw.RejectReason.AT_CAPACITY: ExitCode.AT_CAPACITY,
    sw.RejectReason.VERSION_MISMATCH: ExitCode.VERSION_MISMATCH,
    sw.RejectReason.DRAINING: ExitCode.DRAINING,
    sw.RejectReason.SOURCE_UNREACHABLE: ExitCode.SOURCE_UNREACHABLE,
    sw.RejectReason.INTERNAL: ExitCode.ERROR,
}


@pytest.mark.parametrize("reason", list(sw.RejectReason))
def test_reject_reason_exit_code(reason: sw.RejectReason) -> None:
    assert reason.exit_code is EXPECTED_EXIT_CODES[reason]


def test_every_reject_reason_has_an_expected_exit_code() -> None:
    assert set(EXPECTED_EXIT_CODES) == set(sw.RejectReason)
