"""Make the uniffi binding of nostr-sdk copy ``bytes`` with one memmove.

The generated ``_UniffiRustBufferBuilder.write`` copies every byte argument into Rust one
byte at a time in Python: bulk data crawls at ~5 MB/s at 100 % CPU (stack-notes §1;
uniffi-rs PR #2824 fixed the template upstream). iroh no longer goes through uniffi: it
uses our native binding, :mod:`tunnelpy.worker._native`.
This module replaces that method (and the per-byte ``_pack_into``) with C-speed copies.

It is pinned to the binding versions it was checked against and fails loudly if the
generated code changed shape; a binding that already copies in bulk is left alone, so an
upgrade removes the patch naturally.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import inspect
import struct
from types import ModuleType

from tunnelpy.common.errors import TunnelError

#: distribution name -> (binding module, versions whose generated code was checked)
CHECKED_BINDINGS = {
    "nostr-sdk": ("nostr_sdk.nostr_sdk", {"0.45.1"}),
}

_PER_BYTE_LOOP = "for i, byte in enumerate("


class BindingShapeChanged(TunnelError):
    """The generated binding is not the shape this patch was written for."""


def _fast_write(self, value) -> None:  # type: ignore[no-untyped-def]
    n = len(value)
    if type(value) is not bytes:
        value = bytes(value)
    with self._reserve(n):
        dest = ctypes.cast(self.rbuf.data, ctypes.c_void_p).value + self.rbuf.len
        ctypes.memmove(dest, value, n)


def _fast_pack_into(self, size: int, fmt: str, value) -> None:  # type: ignore[no-untyped-def]
    packed = struct.pack(fmt, value)
    if len(packed) != size:
        raise BindingShapeChanged(f"uniffi scalar {fmt!r} packs to {len(packed)} bytes, not {size}")
    _fast_write(self, packed)


def needs_patch(module: ModuleType) -> bool:
    """True if the module's buffer builder still copies byte by byte."""
    builder = getattr(module, "_UniffiRustBufferBuilder", None)
    if builder is None or not hasattr(builder, "_reserve") or not hasattr(builder, "write"):
        raise BindingShapeChanged(
            f"{module.__name__} has no _UniffiRustBufferBuilder with _reserve/write: "
            "the generated code changed; review tunnelpy.common.uniffi_fastcopy"
        )
    if builder.write is _fast_write:
        return False
    return _PER_BYTE_LOOP in inspect.getsource(builder.write)


def patch_module(module: ModuleType, distribution: str, version: str) -> bool:
    """Patch one binding module; returns True if patched, False if it needed no patch."""
    if not needs_patch(module):
        return False
    checked = CHECKED_BINDINGS[distribution][1]
    if version not in checked:
        raise BindingShapeChanged(
            f"{distribution} {version} still copies bytes one at a time but this patch was only "
            f"checked against {sorted(checked)}: pin {distribution} to a checked version"
        )
    builder = module._UniffiRustBufferBuilder
    builder.write = _fast_write
    if _PER_BYTE_LOOP in inspect.getsource(builder._pack_into):
        builder._pack_into = _fast_pack_into
    return True


def apply(distribution: str) -> bool:
    """Import and patch the binding of ``distribution`` ("nostr-sdk")."""
    module_name, _ = CHECKED_BINDINGS[distribution]
    module = importlib.import_module(module_name)
    version = importlib.metadata.version(distribution)
    return patch_module(module, distribution, version)
