"""The copy-paste signaling blocks of the manual modes: one module for this wire format.

A block is what one side prints and the user pastes into the other side::

    -----BEGIN TUNNEL-PY ICE OFFER-----
    TPY1:<crc32 of the JSON, 8 lowercase hex>:<base64url without padding of the JSON>
    -----END TUNNEL-PY ICE OFFER-----

The body is wrapped at 76 columns. Reading is tolerant of what chat programs and terminals
do to pasted text (junk before BEGIN, blank lines, indentation, CRLF) and strict about
everything else: each way a block can be broken has its own error that says what to do.

:class:`BlockReader` is the sans-IO core (fed one line at a time); :func:`read_block` and
:func:`read_block_async` drive it from a text file or an ``asyncio.StreamReader``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeAlias

from tunnelpy.common.errors import ExitCode, ProtocolError, VersionMismatch
from tunnelpy.signaling.ice_parameters import IceParameters

VERSION = 1
"""The block format version: in the ``TPY<version>`` prefix and in the JSON ``version`` field."""

WRAP_COLUMNS = 76
_BEGIN = "-----BEGIN TUNNEL-PY "
_END = "-----END TUNNEL-PY "
_DASHES = "-----"
_HEADER = re.compile(r"TPY(\d+):([^:]*):(.*)", re.DOTALL)
_CRC = re.compile(r"[0-9a-f]{8}")


class BlockKind(enum.Enum):
    """Which message a block carries; the value is the name on its marker lines."""

    ICE_OFFER = "ICE OFFER"
    ICE_ANSWER = "ICE ANSWER"
    IROH_OFFER = "IROH OFFER"
    IROH_ANSWER = "IROH ANSWER"


@dataclass(frozen=True, slots=True)
class IceOffer:
    """Receiver -> sender (custom-manual): its ICE credentials, candidates and wanted source."""

    KIND: ClassVar[BlockKind] = BlockKind.ICE_OFFER
    ice: IceParameters
    source: str  # e.g. "tcp://127.0.0.1:22": what the sender should connect to


@dataclass(frozen=True, slots=True)
class IceAnswer:
    """Sender -> receiver: its ICE credentials, candidates and its QUIC certificate pin."""

    KIND: ClassVar[BlockKind] = BlockKind.ICE_ANSWER
    ice: IceParameters
    cert_sha256: str  # lowercase hex SHA-256 of the sender's certificate DER


@dataclass(frozen=True, slots=True)
class IrohOffer:
    """Receiver -> sender (iroh-manual): its EndpointId, direct addresses and wanted source."""

    KIND: ClassVar[BlockKind] = BlockKind.IROH_OFFER
    endpoint_id: str
    direct_addresses: tuple[str, ...]  # "ip:port"
    source: str


@dataclass(frozen=True, slots=True)
class IrohAnswer:
    """Sender -> receiver (iroh-manual): its EndpointId and direct addresses."""

    KIND: ClassVar[BlockKind] = BlockKind.IROH_ANSWER
    endpoint_id: str
    direct_addresses: tuple[str, ...]


BlockMessage: TypeAlias = IceOffer | IceAnswer | IrohOffer | IrohAnswer
_MESSAGE_TYPES: dict[BlockKind, type[BlockMessage]] = {
    cls.KIND: cls for cls in (IceOffer, IceAnswer, IrohOffer, IrohAnswer)
}
_FIELD_TYPES: dict[str, type] = {
    "ice_ufrag": str,
    "ice_pwd": str,
    "candidates": tuple,
    "source": str,
    "cert_sha256": str,
    "endpoint_id": str,
    "direct_addresses": tuple,
}


# --- errors: one per way a pasted block can be broken -------------------------------------


class BlockError(ProtocolError):
    """A pasted block does not decode; the message says which check failed and what to do."""

    exit_code = ExitCode.CONFIG  # bad user input: paste again, then the run can go on


class BeginMarkerMissing(BlockError):
    pass


class EndMarkerMissing(BlockError):
    pass


class WrongBlockKind(BlockError):
    pass


class BadBlockPrefix(BlockError):
    pass


class BlockVersionMismatch(BlockError, VersionMismatch):
    exit_code = ExitCode.VERSION_MISMATCH  # BlockError's CONFIG would win the MRO otherwise


class CrcMismatch(BlockError):
    pass


class BadBase64(BlockError):
    pass


class BadJson(BlockError):
    pass


class MissingField(BlockError):
    pass


class BadFieldType(BlockError):
    pass


_REPASTE = "copy the whole block again, from the BEGIN line to the END line"


# --- encoding ------------------------------------------------------------------------------


def encode_block(msg: BlockMessage) -> str:
    """Render ``msg`` as a block of marker lines and a wrapped body, ending with a newline."""
    payload: dict[str, Any] = {"version": VERSION}
    for name, value in _flat_fields(msg):
        payload[name] = list(value) if isinstance(value, tuple) else value
    raw = json.dumps(payload, separators=(",", ":")).encode()
    b64 = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    body = f"TPY{VERSION}:{zlib.crc32(raw):08x}:{b64}"
    lines = [body[i : i + WRAP_COLUMNS] for i in range(0, len(body), WRAP_COLUMNS)]
    kind = msg.KIND.value
    return "\n".join([f"{_BEGIN}{kind}{_DASHES}", *lines, f"{_END}{kind}{_DASHES}"]) + "\n"


# --- reading -------------------------------------------------------------------------------


class BlockReader:
    """Collects one block from pasted lines; sans-IO, so any line source can drive it.

    Feed lines with :meth:`feed` until it returns True (the END line arrived), then call
    :meth:`message`. Call :meth:`eof` if the input ends first: it raises the matching error.
    """

    def __init__(self, expected_kind: BlockKind) -> None:
        self.expected_kind = expected_kind
        self._kind: str | None = None  # the kind named on the BEGIN line, once seen
        self._body: list[str] = []
        self._done = False

    def feed(self, line: str) -> bool:
        """Take one line (with or without its line ending); True once the block is complete."""
        if self._done:
            raise RuntimeError("the block is already complete")
        text = line.strip()
        if self._kind is None:
            if text.startswith(_BEGIN):
                self._kind = _marker_kind(text, _BEGIN)
                self._check_kind(self._kind)
            return False  # anything before BEGIN is chat junk or a prompt
        if text.startswith(_END):
            end_kind = _marker_kind(text, _END)
            if end_kind != self._kind:
                raise EndMarkerMissing(
                    f"the block starts as {self._kind!r} but ends as {end_kind!r}: two blocks got mixed up; {_REPASTE}"
                )
            self._done = True
            return True
        if text.startswith(_DASHES):
            raise EndMarkerMissing(
                f"a marker line {text!r} appeared before the END line of the "
                f"{self._kind} block, so that block was cut short; {_REPASTE}"
            )
        if text:
            self._body.append(text)
        return False

    def eof(self) -> None:
        """The input ended: raise the error for a missing BEGIN or a truncated block."""
        if self._kind is None:
            raise BeginMarkerMissing(
                f"no line starting with {_BEGIN.strip()!r} was found: paste the "
                f"{self.expected_kind.value} block the other side printed, "
                "including its -----BEGIN and -----END lines"
            )
        if not self._done:
            raise EndMarkerMissing(
                f"the input ended before the line {_END}{self._kind}{_DASHES}: the paste was truncated; {_REPASTE}"
            )

    def message(self) -> BlockMessage:
        """Decode the collected body into the expected message (only after END)."""
        if not self._done:
            self.eof()
        return _decode_body("".join(self._body), self.expected_kind)

    def _check_kind(self, kind: str) -> None:
        if kind == self.expected_kind.value:
            return
        known = {k.value for k in BlockKind}
        what = f"an {kind} block" if kind in known else f"an unknown block kind {kind!r}"
        raise WrongBlockKind(
            f"expected the {self.expected_kind.value} block but got {what}: paste the "
            "block the other side printed, not the one this side printed"
        )


def decode_block(text: str, expected_kind: BlockKind) -> BlockMessage:
    """Decode the first block in ``text`` (junk around it is ignored)."""
    reader = BlockReader(expected_kind)
    for line in text.splitlines():
        if reader.feed(line):
            return reader.message()
    reader.eof()
    raise AssertionError("eof() always raises when no END line was fed")


def read_block(lines: Iterable[str], expected_kind: BlockKind) -> BlockMessage:
    """Read lines (e.g. ``sys.stdin``) up to the block's END line; nothing after it is read."""
    reader = BlockReader(expected_kind)
    for line in lines:
        if reader.feed(line):
            return reader.message()
    reader.eof()
    raise AssertionError("eof() always raises when no END line was fed")


class LineSource(Protocol):
    async def readline(self) -> bytes: ...


async def read_block_async(source: LineSource, expected_kind: BlockKind) -> BlockMessage:
    """Read lines from e.g. an ``asyncio.StreamReader`` up to END; wrap it in a timeout.

    Each ``await`` is one line read, so cancellation (a deadline, Ctrl-C) stops it cleanly.
    """
    reader = BlockReader(expected_kind)
    while line := await source.readline():
        if reader.feed(line.decode("utf-8", errors="replace")):
            return reader.message()
    reader.eof()
    raise AssertionError("eof() always raises when no END line was fed")


# --- body decoding -------------------------------------------------------------------------


def _marker_kind(text: str, prefix: str) -> str:
    kind = text[len(prefix) :]
    return kind[: -len(_DASHES)].strip() if kind.endswith(_DASHES) else kind.strip()


def _decode_body(body: str, kind: BlockKind) -> BlockMessage:
    match = _HEADER.fullmatch(body)
    if match is None:
        raise BadBlockPrefix(
            f"the block body must start with 'TPY{VERSION}:' followed by a CRC and the "
            f"data, but it starts with {body[:12]!r}; {_REPASTE}"
        )
    version, crc_text, b64 = match.groups()
    if int(version) != VERSION:
        raise _version_mismatch(int(version))
    if _CRC.fullmatch(crc_text) is None:
        raise BadBlockPrefix(f"the CRC field {crc_text[:16]!r} is not 8 lowercase hex digits; {_REPASTE}")
    raw = _b64decode(b64)
    if f"{zlib.crc32(raw):08x}" != crc_text:
        raise CrcMismatch(
            f"the block's CRC does not match its data: some characters were changed or lost while copying; {_REPASTE}"
        )
    return _build_message(_parse_json(raw), kind)


def _b64decode(b64: str) -> bytes:
    try:
        return base64.b64decode(b64 + "=" * (-len(b64) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadBase64(
            f"the block data is not valid base64url ({exc}): a character was changed or lost while copying; {_REPASTE}"
        ) from None


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadJson(
            f"the block data is not JSON ({exc}); the other side may run an incompatible "
            "tunnel-py: upgrade both sides to the same version"
        ) from None
    if not isinstance(obj, dict):
        raise BadJson("the block data is JSON but not an object: upgrade both sides")
    version = obj.get("version")
    if type(version) is not int:
        raise MissingField("the block data has no integer 'version' field: upgrade both sides")
    if version != VERSION:
        raise _version_mismatch(version)
    return obj


# On the wire the ICE parameters are flat fields, as a person reading a decoded block expects.
_ICE_FIELDS = ("ice_ufrag", "ice_pwd", "candidates")


def _flat_fields(msg: BlockMessage) -> Iterable[tuple[str, Any]]:
    for name in msg.__slots__:
        value = getattr(msg, name)
        if isinstance(value, IceParameters):
            yield from zip(_ICE_FIELDS, (value.ufrag, value.pwd, value.candidates), strict=True)
        else:
            yield name, value


def _build_message(obj: dict[str, Any], kind: BlockKind) -> BlockMessage:
    cls = _MESSAGE_TYPES[kind]
    values: dict[str, Any] = {}
    for name in cls.__slots__:
        wire_names = _ICE_FIELDS if name == "ice" else (name,)
        for wire_name in wire_names:
            if wire_name not in obj:
                raise MissingField(
                    f"the {kind.value} block has no {wire_name!r} field: the other side runs an "
                    "incompatible tunnel-py; upgrade both sides to the same version"
                )
        checked = [_check_field(kind, wire_name, obj[wire_name]) for wire_name in wire_names]
        values[name] = IceParameters(*checked) if name == "ice" else checked[0]
    return cls(**values)


def _check_field(kind: BlockKind, name: str, value: Any) -> Any:
    """Return ``value`` in the dataclass's type, or raise BadFieldType."""
    if _FIELD_TYPES[name] is str and isinstance(value, str):
        return value
    is_str_list = isinstance(value, list) and all(isinstance(item, str) for item in value)
    if _FIELD_TYPES[name] is tuple and is_str_list:
        return tuple(value)
    wanted = "a string" if _FIELD_TYPES[name] is str else "a list of strings"
    raise BadFieldType(
        f"the {kind.value} field {name!r} should be {wanted}, not {type(value).__name__}: "
        "upgrade both sides to the same tunnel-py version"
    )


def _version_mismatch(theirs: int) -> BlockVersionMismatch:
    newer = "newer" if theirs > VERSION else "older"
    return BlockVersionMismatch(
        f"the block uses format version {theirs}, this tunnel-py reads version {VERSION}: "
        f"the other side runs a {newer} tunnel-py; install the same version on both sides"
    )
