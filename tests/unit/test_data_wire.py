"""The data-plane wire format: stream headers, UDP datagrams and UDP frames on a stream."""

from __future__ import annotations

import random

import pytest

from tunnelpy.common.errors import ProtocolError, VersionMismatch
from tunnelpy.worker.forwarding import wire

# -- stream header ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "header"), [(wire.StreamKind.TCP, b"\x01\x01"), (wire.StreamKind.UDP_FRAMES, b"\x01\x02")]
)
def test_stream_header_round_trip(kind: wire.StreamKind, header: bytes) -> None:
    assert wire.stream_header(kind) == header
    assert wire.parse_stream_header(header) is kind


@pytest.mark.parametrize("version", [0, 2, 255])
def test_stream_header_of_another_version_says_what_to_do(version: int) -> None:
    with pytest.raises(VersionMismatch) as info:
        wire.parse_stream_header(bytes((version, wire.StreamKind.TCP)))
    assert str(info.value) == (
        f"data protocol version {version} from the receiver, this worker speaks 1: "
        "run the same tunnel-py version on both sides"
    )


@pytest.mark.parametrize("kind", [0, 3, 255])
def test_stream_header_of_unknown_kind(kind: int) -> None:
    with pytest.raises(ProtocolError) as info:
        wire.parse_stream_header(bytes((wire.VERSION, kind)))
    assert type(info.value) is ProtocolError
    assert str(info.value) == f"unknown data stream kind {kind}"


@pytest.mark.parametrize("header", [b"", b"\x01", b"\x01\x01\x00"])
def test_stream_header_of_wrong_length(header: bytes) -> None:
    with pytest.raises(ProtocolError, match="data stream closed before its 2-byte header"):
        wire.parse_stream_header(header)


# -- datagrams ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flow_id", "payload", "encoded"),
    [
        (7, b"hi", b"\x00\x00\x00\x07hi"),
        (1, b"", b"\x00\x00\x00\x01"),
        (2**32 - 1, b"\x00\xff", b"\xff\xff\xff\xff\x00\xff"),
    ],
)
def test_datagram_round_trip(flow_id: int, payload: bytes, encoded: bytes) -> None:
    assert wire.encode_datagram(flow_id, payload) == encoded
    assert wire.decode_datagram(encoded) == (flow_id, payload)


def test_large_datagram_round_trip() -> None:
    payload = random.Random(1).randbytes(wire.MAX_UDP_PAYLOAD)
    assert wire.decode_datagram(wire.encode_datagram(99, payload)) == (99, payload)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00\x00"])
def test_datagram_shorter_than_its_flow_header(data: bytes) -> None:
    with pytest.raises(ProtocolError, match=f"UDP datagram of {len(data)} bytes is shorter than its flow header"):
        wire.decode_datagram(data)


# -- frames ------------------------------------------------------------------------------


def test_frame_layout() -> None:
    assert wire.encode_frame(1, b"abc") == b"\x00\x00\x00\x01\x00\x03abc"
    assert wire.encode_frame(0x01020304, b"") == b"\x01\x02\x03\x04\x00\x00"
    assert wire.FRAME_HEADER_SIZE == 6


def test_frame_of_max_payload() -> None:
    frame = wire.encode_frame(5, b"\xaa" * wire.MAX_UDP_PAYLOAD)
    assert frame[:6] == b"\x00\x00\x00\x05\xff\xff"
    assert len(frame) == 6 + 65535


@pytest.mark.parametrize("size", [wire.MAX_UDP_PAYLOAD + 1, 100_000])
def test_frame_payload_over_65535_is_refused(size: int) -> None:
    with pytest.raises(ProtocolError, match=f"UDP payload of {size} bytes exceeds 65535"):
        wire.encode_frame(1, bytes(size))


def sample_frames(seed: int, count: int = 40) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    frames = [(rng.randrange(2**32), rng.randbytes(rng.choice([0, 1, 5, 300, 1500]))) for _ in range(count)]
    frames.insert(count // 2, (42, b""))
    return frames


def stream_of(frames: list[tuple[int, bytes]]) -> bytes:
    return b"".join(wire.encode_frame(flow_id, payload) for flow_id, payload in frames)


def test_decoder_whole_stream_at_once() -> None:
    frames = [*sample_frames(0), (3, random.Random(3).randbytes(wire.MAX_UDP_PAYLOAD))]
    decoder = wire.FrameDecoder()
    assert decoder.feed(stream_of(frames)) == frames
    assert decoder.pending == 0


def test_decoder_byte_by_byte() -> None:
    frames = sample_frames(1, count=20)
    decoder = wire.FrameDecoder()
    out: list[tuple[int, bytes]] = []
    for byte in stream_of(frames):
        out += decoder.feed(bytes((byte,)))
    assert out == frames
    assert decoder.pending == 0


@pytest.mark.parametrize("seed", range(8))
def test_decoder_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    frames = sample_frames(seed)
    data = stream_of(frames)
    decoder = wire.FrameDecoder()
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        step = rng.choice([0, 1, 2, 5, 6, 7, rng.randrange(1, 4000)])
        out += decoder.feed(data[pos : pos + step])
        pos += step
    assert out == frames
    assert decoder.pending == 0


def test_pending_after_a_truncated_frame() -> None:
    first, second = wire.encode_frame(1, b"complete"), wire.encode_frame(2, b"truncated")
    decoder = wire.FrameDecoder()
    assert decoder.feed(first + second[:-1]) == [(1, b"complete")]
    assert decoder.pending == len(second) - 1
    assert decoder.feed(second[-1:]) == [(2, b"truncated")]
    assert decoder.pending == 0


@pytest.mark.parametrize("cut", [1, 3, 5])
def test_pending_inside_the_frame_header(cut: int) -> None:
    decoder = wire.FrameDecoder()
    frame = wire.encode_frame(9, b"xyz")
    assert decoder.feed(frame[:cut]) == []
    assert decoder.pending == cut
    assert decoder.feed(frame[cut:]) == [(9, b"xyz")]
    assert decoder.pending == 0
