"""Every decoder of a peer's or a user's input, fuzzed with hypothesis.

Each must turn any input into a message or into its own error class (a TunnelError subclass
that says what is wrong), never another exception, and never allocate by a length it did not
check. The suite runs a quick pass; ``scripts/fuzz`` runs the same properties with
TUNNELPY_FUZZ_EXAMPLES=100000 (or more) per decoder.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from pathlib import Path

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunnelpy.common.config import build_sender_config
from tunnelpy.common.errors import ConfigError, ProtocolError
from tunnelpy.common.merge import merge_sender_values
from tunnelpy.signaling import manual_blocks as mb
from tunnelpy.signaling import nostr_wire
from tunnelpy.signaling import session_wire as sw
from tunnelpy.supervisor import control_wire as cw
from tunnelpy.worker import contract
from tunnelpy.worker.forwarding import wire

EXAMPLES = int(os.environ.get("TUNNELPY_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON-like values, so a decoder sees well-formed JSON with wrong shapes as often as junk.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=25,
)


def objects_like(kinds: list[str], version: int) -> st.SearchStrategy[bytes]:
    """JSON objects that look like messages of a protocol: right or wrong version, known or odd kinds."""
    return st.builds(
        lambda v, k, rest: orjson.dumps({"v": v, "kind": k, **rest}),
        st.sampled_from([version, version + 1, 0, "1", None]),
        st.sampled_from([*kinds, "nope", ""]),
        st.dictionaries(st.text(max_size=15), json_values, max_size=8),
    )


@FUZZ
@given(st.binary(max_size=600) | objects_like([k.value for k in sw.Kind], sw.VERSION))
def test_session_wire_framing_and_decode(data: bytes) -> None:
    decoder = sw.MessageDecoder()
    try:
        decoder.feed(struct.pack(">I", len(data)) + data if len(data) % 3 else data)
        while decoder.next() is not None:
            pass
        decoder.eof()
    except ProtocolError:
        pass
    assert len(decoder._buffer) <= 4 + sw.MAX_MESSAGE + 600  # never more than what was fed


@FUZZ
@given(st.binary(min_size=4, max_size=8).map(lambda b: b[:4]))
def test_session_wire_refuses_a_huge_length_before_buffering(prefix: bytes) -> None:
    decoder = sw.MessageDecoder()
    try:
        decoder.feed(prefix)
    except ProtocolError:
        assert struct.unpack(">I", prefix)[0] > sw.MAX_MESSAGE
    else:
        assert decoder.wanted() <= sw.MAX_MESSAGE + 4


@FUZZ
@given(
    st.binary(max_size=400)
    | objects_like([k.value for k in contract.Kind], contract.VERSION)
    | objects_like([k.value for k in cw.Kind], cw.VERSION)
)
def test_worker_contract_and_control_decode(data: bytes) -> None:
    for decode in (contract.decode, cw.decode):
        with contextlib.suppress(ProtocolError):
            decode(data)


block_lines = st.lists(
    st.one_of(
        st.sampled_from(["-----BEGIN TUNNEL-PY ICE OFFER-----", "-----END TUNNEL-PY ICE OFFER-----", "", "  "]),
        st.text(alphabet="TPY1:0123456789abcdef-_ABCxyz=", max_size=90),
        st.text(max_size=90),
    ),
    max_size=12,
)


@FUZZ
@given(block_lines)
def test_manual_blocks_decode(lines: list[str]) -> None:
    with contextlib.suppress(ProtocolError):
        mb.decode_block("\n".join(lines), mb.BlockKind.ICE_OFFER)


@FUZZ
@given(st.dictionaries(st.text(max_size=15), json_values, max_size=8), st.sampled_from(list(mb.BlockKind)))
def test_manual_blocks_with_a_valid_envelope_and_any_json(payload: dict, kind: mb.BlockKind) -> None:  # type: ignore[type-arg]
    import base64
    import zlib

    raw = orjson.dumps({"version": mb.VERSION, **payload})
    body = f"TPY{mb.VERSION}:{zlib.crc32(raw):08x}:{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}"
    text = f"-----BEGIN TUNNEL-PY {kind.value}-----\n{body}\n-----END TUNNEL-PY {kind.value}-----\n"
    with contextlib.suppress(ProtocolError):
        mb.decode_block(text, kind)


@FUZZ
@given(
    st.text(max_size=500)
    | objects_like([k.value for k in nostr_wire.MessageKind], nostr_wire.VERSION).map(lambda b: b.decode())
)
def test_nostr_payload_decode(plaintext: str) -> None:
    with contextlib.suppress(ProtocolError):
        nostr_wire.decode(plaintext)


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_udp_frame_decoder_and_datagrams(chunks: list[bytes]) -> None:
    decoder = wire.FrameDecoder()
    for chunk in chunks:
        try:
            for flow_id, payload in decoder.feed(chunk):
                assert 0 <= flow_id < 2**32 and len(payload) <= wire.MAX_UDP_PAYLOAD
        except ProtocolError:
            break
        try:
            wire.decode_datagram(chunk)
            wire.parse_stream_header(chunk[:2])
        except ProtocolError:
            pass


yaml_documents = st.one_of(
    st.dictionaries(
        st.sampled_from(
            [
                "mode",
                "allowed_tcp",
                "allowed_udp",
                "max_sessions",
                "drain_grace",
                "heartbeat_timeout",
                "secret",
                "authorized_keys",
                "allow_any_receiver",
                "relay_urls",
                "no_relay",
                "bind",
                "log_level",
                "bogus",
            ]
        ),
        json_values,
        max_size=8,
    ).map(lambda d: yaml.safe_dump(d)),
    st.text(max_size=200),
)


@FUZZ
@given(yaml_documents)
def test_sender_config_loading(document: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sender.yaml"
        path.write_text(document, encoding="utf-8")
        try:
            build_sender_config(merge_sender_values(None, {}, str(path)))
        except ConfigError as exc:
            assert "\n" not in str(exc), str(exc)  # one line, always
