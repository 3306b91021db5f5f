"""The copy-paste block codec: round trips, tolerance of pasted text, one error per break."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import zlib

import pytest

from tunnelpy.common.errors import ExitCode, ProtocolError, VersionMismatch
from tunnelpy.signaling import manual_blocks as mb
from tunnelpy.signaling.ice_parameters import IceParameters

ICE_OFFER = mb.IceOffer(
    ice=IceParameters(
        ufrag="abcd",
        pwd="0123456789abcdefghijkl",
        candidates=(
            "6815297761 1 udp 2130706431 192.168.1.5 50000 typ host",
            "1a2b3c 1 udp 1694498815 203.0.113.7 61000 typ srflx raddr 192.168.1.5 rport 50000",
        ),
    ),
    source="tcp://127.0.0.1:22",
)
ICE_ANSWER = mb.IceAnswer(
    ice=IceParameters(
        ufrag="wxyz", pwd="zyxwvutsrqponmlkjihgfe", candidates=("1 1 udp 2130706431 10.0.0.2 40000 typ host",)
    ),
    cert_sha256="ab" * 32,
)
IROH_OFFER = mb.IrohOffer(
    endpoint_id="f" * 64, direct_addresses=("192.168.1.5:4433", "[::1]:4433"), source="udp://dns:53"
)
IROH_ANSWER = mb.IrohAnswer(endpoint_id="e" * 64, direct_addresses=())
ALL = [ICE_OFFER, ICE_ANSWER, IROH_OFFER, IROH_ANSWER]


def make_block(payload: dict, kind: str = "ICE OFFER", prefix: str = "TPY1") -> str:
    """A block with an arbitrary JSON payload, built by hand like a foreign encoder would."""
    raw = json.dumps(payload).encode()
    b64 = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    body = f"{prefix}:{zlib.crc32(raw):08x}:{b64}"
    return f"-----BEGIN TUNNEL-PY {kind}-----\n{body}\n-----END TUNNEL-PY {kind}-----\n"


def offer_payload(**changes: object) -> dict:
    payload = {"version": 1, "ice_ufrag": "abcd", "ice_pwd": "p" * 22, "candidates": []}
    payload["source"] = "tcp://127.0.0.1:22"
    payload.update(changes)
    return payload


@pytest.mark.parametrize("msg", ALL, ids=lambda m: m.KIND.name)
def test_round_trip_every_kind(msg: mb.BlockMessage) -> None:
    text = mb.encode_block(msg)
    assert mb.decode_block(text, msg.KIND) == msg
    lines = text.splitlines()
    assert lines[0] == f"-----BEGIN TUNNEL-PY {msg.KIND.value}-----"
    assert lines[-1] == f"-----END TUNNEL-PY {msg.KIND.value}-----"
    assert lines[1].startswith("TPY1:")
    assert all(len(line) <= 76 for line in lines[1:-1])


def test_body_is_wrapped_at_76_columns() -> None:
    text = mb.encode_block(ICE_OFFER)
    body = text.splitlines()[1:-1]
    assert len(body) > 1
    assert all(len(line) == 76 for line in body[:-1])


def test_tolerates_crlf_indentation_blank_lines_and_junk() -> None:
    lines = mb.encode_block(ICE_ANSWER).splitlines()
    pasted = (
        "[12:01] alice: here it is\r\n\r\n"
        + "\r\n\r\n".join("    " + line + "  " for line in lines)
        + "\r\n[12:02] alice: did it work?\r\n"
    )
    assert mb.decode_block(pasted, mb.BlockKind.ICE_ANSWER) == ICE_ANSWER


def test_errors_are_protocol_errors_with_config_exit_code() -> None:
    with pytest.raises(ProtocolError) as info:
        mb.decode_block("nothing here", mb.BlockKind.ICE_OFFER)
    assert info.value.exit_code == ExitCode.CONFIG


def test_no_begin() -> None:
    with pytest.raises(mb.BeginMarkerMissing, match="no line starting with"):
        mb.decode_block("hello\n\nTPY1:00000000:e30\n", mb.BlockKind.ICE_OFFER)


def test_truncated_paste_is_missing_end() -> None:
    text = mb.encode_block(ICE_OFFER)
    truncated = "\n".join(text.splitlines()[:-1])
    with pytest.raises(mb.EndMarkerMissing, match="truncated"):
        mb.decode_block(truncated, mb.BlockKind.ICE_OFFER)


def test_second_begin_before_end_is_missing_end() -> None:
    first = mb.encode_block(ICE_OFFER).splitlines()[:-1]
    text = "\n".join(first) + "\n" + mb.encode_block(ICE_OFFER)
    with pytest.raises(mb.EndMarkerMissing, match="cut short"):
        mb.decode_block(text, mb.BlockKind.ICE_OFFER)


def test_end_of_another_kind_is_missing_end() -> None:
    text = mb.encode_block(ICE_OFFER).replace("END TUNNEL-PY ICE OFFER", "END TUNNEL-PY ICE ANSWER")
    with pytest.raises(mb.EndMarkerMissing, match="mixed up"):
        mb.decode_block(text, mb.BlockKind.ICE_OFFER)


def test_wrong_kind_says_which_block_to_paste() -> None:
    with pytest.raises(mb.WrongBlockKind, match="expected the ICE ANSWER block but got an ICE OFFER"):
        mb.decode_block(mb.encode_block(ICE_OFFER), mb.BlockKind.ICE_ANSWER)


def test_unknown_kind() -> None:
    with pytest.raises(mb.WrongBlockKind, match="unknown block kind"):
        mb.decode_block(make_block(offer_payload(), kind="PIZZA"), mb.BlockKind.ICE_OFFER)


def test_bad_prefix() -> None:
    with pytest.raises(mb.BadBlockPrefix, match="must start with 'TPY1:'"):
        mb.decode_block(make_block(offer_payload(), prefix="TRS1"), mb.BlockKind.ICE_OFFER)


def test_bad_crc_field_is_bad_prefix() -> None:
    text = mb.encode_block(ICE_OFFER)
    crc = text.splitlines()[1].split(":")[1]
    with pytest.raises(mb.BadBlockPrefix, match="8 lowercase hex"):
        mb.decode_block(text.replace(crc, crc.upper() + "Z", 1), mb.BlockKind.ICE_OFFER)


def test_wrong_prefix_version() -> None:
    with pytest.raises(mb.BlockVersionMismatch, match="version 2") as info:
        mb.decode_block(make_block(offer_payload(), prefix="TPY2"), mb.BlockKind.ICE_OFFER)
    assert isinstance(info.value, VersionMismatch)
    assert info.value.exit_code == ExitCode.VERSION_MISMATCH


def test_wrong_json_version() -> None:
    with pytest.raises(mb.BlockVersionMismatch, match="older"):
        mb.decode_block(make_block(offer_payload(version=0)), mb.BlockKind.ICE_OFFER)


def test_crc_mismatch() -> None:
    lines = mb.encode_block(ICE_OFFER).splitlines()
    body = lines[2]
    flipped = ("B" if body[10] == "A" else "A").join((body[:10], body[11:]))
    lines[2] = flipped
    with pytest.raises(mb.CrcMismatch, match="CRC does not match"):
        mb.decode_block("\n".join(lines), mb.BlockKind.ICE_OFFER)


def test_bad_base64() -> None:
    lines = mb.encode_block(ICE_OFFER).splitlines()
    lines[2] = lines[2][:10] + "!" + lines[2][11:]
    with pytest.raises(mb.BadBase64, match="not valid base64url"):
        mb.decode_block("\n".join(lines), mb.BlockKind.ICE_OFFER)


def test_bad_base64_length() -> None:
    lines = mb.encode_block(IROH_ANSWER).splitlines()
    b64_length = len("".join(lines[1:-1]).split(":")[2])
    lines[-2] += "A" * ((1 - b64_length) % 4)  # a length of 4n+1 is never valid base64
    with pytest.raises(mb.BadBase64):
        mb.decode_block("\n".join(lines), mb.BlockKind.IROH_ANSWER)


def test_bad_json() -> None:
    raw = b"{not json"
    b64 = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    text = f"-----BEGIN TUNNEL-PY ICE OFFER-----\nTPY1:{zlib.crc32(raw):08x}:{b64}\n-----END TUNNEL-PY ICE OFFER-----\n"
    with pytest.raises(mb.BadJson, match="not JSON"):
        mb.decode_block(text, mb.BlockKind.ICE_OFFER)


def test_json_not_an_object() -> None:
    with pytest.raises(mb.BadJson, match="not an object"):
        mb.decode_block(make_block([1, 2]), mb.BlockKind.ICE_OFFER)  # type: ignore[arg-type]


def test_missing_field() -> None:
    payload = offer_payload()
    del payload["source"]
    with pytest.raises(mb.MissingField, match="'source'"):
        mb.decode_block(make_block(payload), mb.BlockKind.ICE_OFFER)


def test_missing_version_field() -> None:
    payload = offer_payload()
    del payload["version"]
    with pytest.raises(mb.MissingField, match="'version'"):
        mb.decode_block(make_block(payload), mb.BlockKind.ICE_OFFER)


@pytest.mark.parametrize(
    ("field", "value"),
    [("ice_ufrag", 5), ("candidates", "a b c"), ("candidates", [1, 2]), ("source", None)],
)
def test_wrong_field_type(field: str, value: object) -> None:
    with pytest.raises(mb.BadFieldType, match=repr(field)):
        mb.decode_block(make_block(offer_payload(**{field: value})), mb.BlockKind.ICE_OFFER)


def test_unknown_fields_are_ignored() -> None:
    msg = mb.decode_block(make_block(offer_payload(extra=1)), mb.BlockKind.ICE_OFFER)
    assert isinstance(msg, mb.IceOffer)


def test_read_block_stops_at_end() -> None:
    stream = io.StringIO("junk\n" + mb.encode_block(IROH_OFFER) + "next input\n")
    assert mb.read_block(stream, mb.BlockKind.IROH_OFFER) == IROH_OFFER
    assert stream.readline() == "next input\n"


def test_read_block_eof_before_end() -> None:
    text = "\n".join(mb.encode_block(IROH_OFFER).splitlines()[:2])
    with pytest.raises(mb.EndMarkerMissing):
        mb.read_block(io.StringIO(text), mb.BlockKind.IROH_OFFER)


def test_read_block_async_stops_at_end_and_reports_eof() -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"> paste below\r\n" + mb.encode_block(ICE_ANSWER).encode() + b"more\n")
        async with asyncio.timeout(5):
            assert await mb.read_block_async(reader, mb.BlockKind.ICE_ANSWER) == ICE_ANSWER
        assert await reader.readline() == b"more\n"

        truncated = asyncio.StreamReader()
        truncated.feed_data(mb.encode_block(ICE_ANSWER).encode()[:60])
        truncated.feed_eof()
        with pytest.raises(mb.EndMarkerMissing):
            await mb.read_block_async(truncated, mb.BlockKind.ICE_ANSWER)

    asyncio.run(scenario())
