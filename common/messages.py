"""The one codec behind every JSON wire format: frozen dataclasses <-> orjson objects.

Each wire module (``signaling.session_wire``, ``worker.contract``,
``supervisor.control_wire``) declares its version, its enum of kinds and its message
classes, and calls :func:`encode` / :func:`decode` with them; field types are checked from the
dataclass annotations so a peer's bad message becomes a :class:`ProtocolError` naming the
field, never a ``KeyError`` deep inside a handler.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any

import orjson

from tunnelpy.common.errors import ProtocolError, VersionMismatch


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, (str, int)) and value in {m.value for m in hint}
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)  # its fields are checked by _build
    return isinstance(value, hint)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        arg = next(a for a in typing.get_args(hint) if _matches(value, a))
        return _coerce(value, arg, where)
    if typing.get_origin(hint) is tuple:
        return tuple(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    return value


def _build(cls: type, body: dict[str, Any], where: str) -> Any:
    """``cls`` from a JSON object whose fields are checked against its annotations (nested too)."""
    hints = _field_types(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in body:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise ProtocolError(f"{where} message lacks field {f.name!r}")
        value = body[f.name]
        if not _matches(value, hints[f.name]):
            raise ProtocolError(f"{where}.{f.name} has the wrong type: {value!r}")
        values[f.name] = _coerce(value, hints[f.name], f"{where}.{f.name}")
    return cls(**values)


def encode(version: int, kind: enum.Enum, msg: Any) -> bytes:
    """Serialize ``msg`` (a dataclass) as ``{"v": version, "kind": kind, **fields}``."""
    body = {"v": version, "kind": kind.value}
    body.update(dataclasses.asdict(msg))
    return orjson.dumps(body)


def decode(data: bytes, *, protocol: str, version: int, classes: dict[Any, type]) -> Any:
    """Parse one message of ``protocol``; ``classes`` maps kind values to message classes."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"{protocol}: message is not JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"{protocol}: message is not a JSON object")
    peer_version = body.pop("v", None)
    if peer_version != version:
        raise VersionMismatch(
            f"{protocol}: peer speaks version {peer_version!r}, we speak {version}: "
            "run the same tunnel-py version on both sides"
        )
    kind = body.pop("kind", None)
    cls = classes.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"{protocol}: unknown message kind {kind!r}")
    return _build(cls, body, f"{protocol}: {kind}")


class Codec:
    """The encode/decode pair of one wire format: its name, version and kind of each class."""

    def __init__(self, protocol: str, version: int, kinds: dict[type, enum.Enum]) -> None:
        self.protocol, self.version, self._kinds = protocol, version, kinds
        self._classes = {kind.value: cls for cls, kind in kinds.items()}

    def encode(self, msg: Any) -> bytes:
        return encode(self.version, self._kinds[type(msg)], msg)

    def decode(self, data: bytes) -> Any:
        return decode(data, protocol=self.protocol, version=self.version, classes=self._classes)
