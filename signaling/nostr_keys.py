"""Nostr identities of nostr mode: parse keys from flags and files, create and show key files.

A sender and each receiver have a static secp256k1 key pair ("WireGuard-like"): the secret
key as ``nsec1...`` (bech32, NIP-19) or 64 hex digits, the public key as ``npub1...`` or 64
hex. A key file holds one nsec line, mode 0600. Malformed input becomes a one-line
:class:`~tunnelpy.common.errors.ConfigError` naming the flag; a secret key is never echoed.

These back ``tunnel-py generate-nostr-key -o PATH [--force]`` and ``tunnel-py show-npub -n PATH``.
"""

from __future__ import annotations

import re
from pathlib import Path

import nostr_sdk

from tunnelpy.common import uniffi_fastcopy
from tunnelpy.common.config import NostrOptions
from tunnelpy.common.errors import ConfigError
from tunnelpy.common.private_files import read_secret, write_private

uniffi_fastcopy.apply("nostr-sdk")

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_GENERATE = "create one with `tunnel-py generate-nostr-key -o PATH`"


def parse_secret_key(text: str, flag: str = "--nsec") -> nostr_sdk.Keys:
    """Keys from an ``nsec1...`` or 64-hex secret key."""
    value = text.strip()
    if value.startswith("npub1"):
        raise ConfigError(f"{flag}: this is a public key (npub); give the secret key (nsec1...) instead")
    if not (value.startswith("nsec1") or _HEX64.fullmatch(value)):
        raise ConfigError(f"{flag}: not a Nostr secret key: expected nsec1... or 64 hex digits; {_GENERATE}")
    try:
        return nostr_sdk.Keys.parse(value)
    except nostr_sdk.NostrSdkError as exc:  # the value stays out of the message: it is a secret
        raise ConfigError(f"{flag}: invalid Nostr secret key ({exc}); {_GENERATE}") from None


def parse_public_key(text: str, flag: str = "--peer-npub") -> str:
    """The lowercase hex of an ``npub1...`` or 64-hex public key."""
    value = text.strip()
    if value.startswith("nsec1"):
        raise ConfigError(
            f"{flag}: this is a SECRET key (nsec); give the peer's public key (npub1...), "
            "and treat that nsec as leaked if you pasted it anywhere"
        )
    if not (value.startswith("npub1") or _HEX64.fullmatch(value)):
        raise ConfigError(f"{flag}: {value[:24]!r} is not a Nostr public key: expected npub1... or 64 hex digits")
    try:
        key = nostr_sdk.PublicKey.parse(value)
        # nostr-sdk parses any 32 bytes; a key off the curve fails only when we encrypt to it
        nostr_sdk.nip44_encrypt(nostr_sdk.SecretKey.generate(), key, "x", nostr_sdk.Nip44Version.V2)
    except nostr_sdk.NostrSdkError as exc:
        raise ConfigError(f"{flag}: invalid Nostr public key {value[:24]!r} ({exc})") from None
    return key.to_hex()


def load_secret_key_file(path: Path, flag: str = "--nsec-file") -> nostr_sdk.Keys:
    """Keys from a key file (surrounding whitespace ignored), under the one secret-file policy of
    :func:`~tunnelpy.common.private_files.read_secret`: a file others can read, a symlink or an
    empty file (never a new key) is refused with a one-line error naming ``flag``."""
    if not path.exists() and not path.is_symlink():
        raise ConfigError(f"{flag} {path}: no such file; {_GENERATE}")
    return parse_secret_key(read_secret(path, flag, _GENERATE), f"{flag} {path}")


def identity(options: NostrOptions) -> tuple[nostr_sdk.Keys, tuple[str, ...]]:
    """Our keys and the peers' lowercase hex public keys from the config; errors name their origin."""
    keys = parse_secret_key(options.secret_key, options.secret_origin)
    peers = tuple(dict.fromkeys(parse_public_key(peer, options.peers_origin) for peer in options.peers))
    return keys, peers


def generate_keys() -> tuple[str, str]:
    """A fresh key pair as (nsec, npub), for ``generate-nostr-key -o -``."""
    keys = nostr_sdk.Keys.generate()
    return str(keys.secret_key().to_bech32()), str(keys.public_key().to_bech32())


def generate_key_file(path: Path, *, force: bool = False) -> str:
    """Write a fresh secret key to ``path`` (0600, atomic) and return its npub.

    An existing file is kept unless ``force``: overwriting loses that identity.
    """
    if path.exists() and not force:
        raise ConfigError(f"{path} exists: pass --force to replace it (its key is then lost for good)")
    keys = nostr_sdk.Keys.generate()
    try:
        write_private(path, keys.secret_key().to_bech32() + "\n")
    except OSError as exc:
        raise ConfigError(f"-o {path}: cannot write the key file ({exc})") from None
    return str(keys.public_key().to_bech32())


def show_npub(path: Path, flag: str = "-n") -> str:
    """The npub of the key in a key file."""
    return str(load_secret_key_file(path, flag).public_key().to_bech32())


def npub_of(public_key_hex: str) -> str:
    """The npub (bech32) of a hex public key, for messages and logs."""
    return str(nostr_sdk.PublicKey.parse(public_key_hex).to_bech32())
