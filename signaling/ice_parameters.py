"""What one ICE agent tells the other through signaling (blocks, Nostr): kept light, no aioice import.

The supervisor passes a receiver's parameters to a worker without loading the ICE stack.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IceParameters:
    """Credentials and SDP candidate lines (without the 'candidate:' prefix)."""

    ufrag: str
    pwd: str
    candidates: tuple[str, ...]
