"""Wire format of the data plane: receiver <-> session worker (ALPN ``tunnel-py/data``).

* Every bi-stream the receiver opens starts with a 2-byte header: :data:`VERSION` and a
  :class:`StreamKind`. The header also makes the stream visible to the worker at once (iroh
  and QUIC announce a stream only with its first byte), so server-first protocols such as
  SSH do not stall.
* ``TCP`` streams then carry the raw bytes of one local TCP connection, half-close by FIN.
* UDP datagrams travel as QUIC datagrams ``flow_id:u32 | payload``; a datagram too large for
  the connection's current datagram size goes on the one ``UDP_FRAMES`` stream as
  ``flow_id:u32 | length:u16 | payload``. A flow is one local UDP client address.
"""

from __future__ import annotations

import enum
import struct

from tunnelpy.common.errors import ProtocolError, VersionMismatch

VERSION = 1
ALPN = b"tunnel-py/data"
MAX_UDP_PAYLOAD = 65535
_FLOW = struct.Struct(">I")
_FRAME = struct.Struct(">IH")
FRAME_HEADER_SIZE = _FRAME.size


class StreamKind(enum.IntEnum):
    TCP = 1
    UDP_FRAMES = 2


def stream_header(kind: StreamKind) -> bytes:
    return bytes((VERSION, kind))


def parse_stream_header(header: bytes) -> StreamKind:
    if len(header) != 2:
        raise ProtocolError("data stream closed before its 2-byte header")
    if header[0] != VERSION:
        raise VersionMismatch(
            f"data protocol version {header[0]} from the receiver, this worker speaks {VERSION}: "
            "run the same tunnel-py version on both sides"
        )
    try:
        return StreamKind(header[1])
    except ValueError:
        raise ProtocolError(f"unknown data stream kind {header[1]}") from None


def encode_datagram(flow_id: int, payload: bytes) -> bytes:
    return _FLOW.pack(flow_id) + payload


def decode_datagram(data: bytes) -> tuple[int, bytes]:
    if len(data) < _FLOW.size:
        raise ProtocolError(f"UDP datagram of {len(data)} bytes is shorter than its flow header")
    return _FLOW.unpack_from(data)[0], data[_FLOW.size :]


def encode_frame(flow_id: int, payload: bytes) -> bytes:
    if len(payload) > MAX_UDP_PAYLOAD:
        raise ProtocolError(f"UDP payload of {len(payload)} bytes exceeds {MAX_UDP_PAYLOAD}")
    return _FRAME.pack(flow_id, len(payload)) + payload


class FrameDecoder:
    """Incremental decoder of ``UDP_FRAMES`` stream bytes into ``(flow_id, payload)`` pairs."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        out = []
        while len(self._buffer) >= _FRAME.size:
            flow_id, length = _FRAME.unpack_from(self._buffer)
            end = _FRAME.size + length
            if len(self._buffer) < end:
                break
            out.append((flow_id, bytes(self._buffer[_FRAME.size : end])))
            del self._buffer[:end]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered (non-zero at EOF means truncation)."""
        return len(self._buffer)
