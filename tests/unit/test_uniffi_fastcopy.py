"""The uniffi bulk-copy patch: applied to the pinned nostr-sdk binding, exact, and loud on any other shape."""

from __future__ import annotations

import contextlib
import ctypes
import random
import struct
import types

import pytest

from tunnelpy.common import uniffi_fastcopy
from tunnelpy.common.uniffi_fastcopy import BindingShapeChanged, needs_patch, patch_module

# -- the real bindings ---------------------------------------------------------------------


def test_nostr_sdk_apply() -> None:
    import nostr_sdk

    unpatched = needs_patch(nostr_sdk.nostr_sdk)  # True unless something in this process applied it already
    assert uniffi_fastcopy.apply("nostr-sdk") is unpatched
    assert needs_patch(nostr_sdk.nostr_sdk) is False
    assert uniffi_fastcopy.apply("nostr-sdk") is False
    key = random.Random(3).randbytes(32)
    assert nostr_sdk.SecretKey.from_bytes(key).to_hex() == key.hex()


# -- fake modules shaped like the generated code ---------------------------------------------


class _RustBuffer(ctypes.Structure):
    _fields_ = [("capacity", ctypes.c_uint64), ("len", ctypes.c_uint64), ("data", ctypes.POINTER(ctypes.c_char))]


def per_byte_module(name: str = "fake_ffi") -> types.ModuleType:
    """A module whose builder copies byte by byte, as uniffi's template did (a fresh class each call)."""

    class _UniffiRustBufferBuilder:
        def __init__(self, capacity: int = 64) -> None:
            self.storage = ctypes.create_string_buffer(capacity)
            self.rbuf = _RustBuffer(capacity, 0, ctypes.cast(self.storage, ctypes.POINTER(ctypes.c_char)))

        @contextlib.contextmanager
        def _reserve(self, num_bytes):  # type: ignore[no-untyped-def]
            assert self.rbuf.len + num_bytes <= self.rbuf.capacity
            yield None
            self.rbuf.len += num_bytes

        def _pack_into(self, size, format, value):  # type: ignore[no-untyped-def]
            with self._reserve(size):
                for i, byte in enumerate(struct.pack(format, value)):
                    self.rbuf.data[self.rbuf.len + i] = byte

        def write(self, value):  # type: ignore[no-untyped-def]
            with self._reserve(len(value)):
                for i, byte in enumerate(value):
                    self.rbuf.data[self.rbuf.len + i] = byte

        def write_u32(self, v):  # type: ignore[no-untyped-def]
            self._pack_into(4, ">I", v)

        def written(self) -> bytes:
            return self.storage.raw[: self.rbuf.len]

    module = types.ModuleType(name)
    module._UniffiRustBufferBuilder = _UniffiRustBufferBuilder  # type: ignore[attr-defined]
    return module


def bulk_module() -> types.ModuleType:
    """A module whose builder already copies in bulk (what uniffi generates after the upstream fix)."""

    class _UniffiRustBufferBuilder:
        @contextlib.contextmanager
        def _reserve(self, num_bytes):  # type: ignore[no-untyped-def]
            yield None

        def write(self, value):  # type: ignore[no-untyped-def]
            with self._reserve(len(value)):
                ctypes.memmove(self.rbuf.data, value, len(value))

    module = types.ModuleType("bulk_ffi")
    module._UniffiRustBufferBuilder = _UniffiRustBufferBuilder  # type: ignore[attr-defined]
    return module


def fill(builder) -> bytes:  # type: ignore[no-untyped-def]
    builder.write(b"\x00abc\xff")
    builder.write_u32(0x01020304)
    builder.write(bytearray(b"xy"))
    builder.write(b"")
    return builder.written()


@pytest.mark.parametrize("version", ["0.44.0", "0.45.2", "1.0.0"])
def test_unchecked_version_of_a_per_byte_binding_is_refused(version: str) -> None:
    module = per_byte_module()
    original = module._UniffiRustBufferBuilder.write
    with pytest.raises(BindingShapeChanged) as info:
        patch_module(module, "nostr-sdk", version)
    assert str(info.value) == (
        f"nostr-sdk {version} still copies bytes one at a time but this patch was only checked against "
        "['0.45.1']: pin nostr-sdk to a checked version"
    )
    assert module._UniffiRustBufferBuilder.write is original  # nothing half-patched


def test_checked_version_is_patched_and_writes_the_same_bytes() -> None:
    expected = fill(per_byte_module()._UniffiRustBufferBuilder())
    assert expected == b"\x00abc\xff\x01\x02\x03\x04xy"
    module = per_byte_module()
    assert needs_patch(module) is True
    assert patch_module(module, "nostr-sdk", "0.45.1") is True
    assert needs_patch(module) is False
    assert module._UniffiRustBufferBuilder.write is uniffi_fastcopy._fast_write
    assert fill(module._UniffiRustBufferBuilder()) == expected
    assert patch_module(module, "nostr-sdk", "0.45.1") is False  # second time: nothing to do


@pytest.mark.parametrize(
    "module",
    [
        types.ModuleType("empty_ffi"),
        types.SimpleNamespace(
            __name__="empty_ffi", _UniffiRustBufferBuilder=type("B", (), {"write": lambda s, v: None})
        ),
        types.SimpleNamespace(__name__="empty_ffi", _UniffiRustBufferBuilder=type("B", (), {"_reserve": None})),
    ],
    ids=["no builder", "no _reserve", "no write"],
)
def test_module_without_a_builder_is_refused(module) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BindingShapeChanged, match=r"^empty_ffi has no _UniffiRustBufferBuilder with _reserve/write"):
        patch_module(module, "nostr-sdk", "0.45.1")


@pytest.mark.parametrize("version", ["0.45.1", "9.9.9"])
def test_bulk_builder_is_left_alone(version: str) -> None:
    module = bulk_module()
    original = module._UniffiRustBufferBuilder.write
    assert needs_patch(module) is False
    assert patch_module(module, "nostr-sdk", version) is False
    assert module._UniffiRustBufferBuilder.write is original
