"""The transport interface the data plane is written against.

A *transport connection* is one authenticated, encrypted peer connection (an iroh
``Connection`` or an aioquic connection on an ICE pair). The TCP and UDP forwarders in
``tunnelpy.worker.forwarding.tcp`` / ``forward_udp`` only ever see these two protocols, so they
do not care which stack is below.

Contract every implementation keeps:

* ``Stream.read(n)`` returns at most ``n`` bytes and ``b""`` once the peer finished its
  side (FIN); it raises :class:`~tunnelpy.common.errors.StreamReset` if the peer reset it.
* ``Stream.write(data)`` returns only when the data is accepted by a bounded send buffer:
  this is the backpressure the forwarders rely on (a slow peer must stall the local reader,
  never grow memory).
* ``Stream.finish()`` half-closes our side; reading keeps working.
* ``Connection.accept_stream()`` raises :class:`~tunnelpy.common.errors.ConnectionLost`
  when the connection is gone; so do all other awaitables once it closed.
* Datagrams are unreliable and unordered; ``send_datagram`` raises ``DatagramTooLarge``
  above ``max_datagram_size()`` and waits (bounded) when the send queue is full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TransportStats:
    """A snapshot of a connection's counters; ``rtt_ms`` is None until measured, ``path`` is
    ``"direct"`` or ``"relay"`` for the path in use (None while none is selected); ``route``
    names an ICE pair's candidate types, local first (``srflx->srflx``, ``relay->prflx``)."""

    rtt_ms: float | None = None
    lost_packets: int = 0
    udp_tx_bytes: int = 0
    udp_rx_bytes: int = 0
    path: str | None = None
    route: str | None = None
    paths: tuple[str, ...] = ()  # every open path, the selected first (iroh multipath): "direct IP:PORT 3ms selected"


class Stream(Protocol):
    """One bidirectional, reliable, ordered byte stream of a transport connection."""

    async def read(self, max_bytes: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def finish(self) -> None: ...

    def reset(self) -> None: ...


class Connection(Protocol):
    """One peer connection: many streams plus unreliable datagrams."""

    async def open_stream(self) -> Stream: ...

    async def accept_stream(self) -> Stream: ...

    def max_datagram_size(self) -> int | None: ...

    async def send_datagram(self, data: bytes) -> None: ...

    async def recv_datagram(self) -> bytes: ...

    def stats(self) -> TransportStats: ...

    def close(self, code: int = 0, reason: str = "") -> None: ...

    async def wait_closed(self) -> str: ...
