"""Path-MTU search for one QUIC connection, RFC 8899 (DPLPMTUD) style: a sans-IO core.

The connection glue (:class:`~tunnelpy.worker.transport.quic.connection.TunnelQuicConnection`) drives it,
always passing ``now``, and reads :attr:`PathMtuSearch.size` (RFC 8899's PLPMTU: the packet size
the path has proven) after each call:

* :meth:`~PathMtuSearch.start` once the handshake is confirmed, with the peer's
  ``max_udp_payload_size`` transport parameter;
* :meth:`~PathMtuSearch.next_probe` whenever it builds packets: a :class:`Probe` to send now
  (one ack-eliciting packet of exactly that size: PING + PADDING), or None;
* :meth:`~PathMtuSearch.on_probe_acked` / :meth:`~PathMtuSearch.on_probe_lost` with each
  probe's fate, :meth:`~PathMtuSearch.on_probe_unsent` if it could not leave unfragmented;
* :meth:`~PathMtuSearch.on_large_packets_lost` when congestion loss hit packets above the base
  size, :meth:`~PathMtuSearch.on_black_hole` when the loss timer fired repeatedly with nothing
  acknowledged; :meth:`~PathMtuSearch.handle_timer` when :meth:`~PathMtuSearch.timer` is due.

The search climbs a short ladder of sizes (:data:`CANDIDATES`, capped by the configured maximum
and the peer's limit, the cap itself being the top rung) with one probe in flight at a time, so
probes are at least an RTT apart (RFC 8899 section 3, item 7). An acknowledged probe raises
``size`` to its size; :data:`MAX_PROBES` lost in a row end the search below that rung, and it is
tried again after :data:`RAISE_INTERVAL`. Black holes (RFC 8899 section 4.3): after large packets
are lost, a probe of ``size`` checks that the path still carries it; if :data:`MAX_PROBES` of
those are lost, or the glue reports a black hole, ``size`` falls back to the base and the search
starts again after :data:`BLACK_HOLE_HOLDOFF`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

# UDP payloads of: Ethernet (1500 - IPv4 20 - UDP 8), two jumbo-ish steps, a 9000-byte jumbo frame
# under IPv6 (9000 - 40 - 8), and 16 KiB, which loopback and some virtual links carry.
CANDIDATES = (1472, 4096, 8192, 8952, 16384)
MAX_UDP_PAYLOAD = 65527  # max_udp_payload_size when the peer sends none (RFC 9000 section 18.2)
MAX_PROBES = 3  # probes of one size lost in a row before giving up on it (RFC 8899 MAX_PROBES)
PROBE_GAP = 0.02  # seconds from a probe's fate to the next probe
PROBE_TIMEOUT = 5.0  # a probe nobody reported on is lost (QUIC's loss detection is far sooner)
RAISE_INTERVAL = 600.0  # retry a size that failed after this long (RFC 8899 PMTU_RAISE_TIMER)
CONFIRM_INTERVAL = 1.0  # at most one black-hole check per second, however much loss
BLACK_HOLE_HOLDOFF = 60.0  # after falling back to the base size, search again after this long


@dataclass(frozen=True, slots=True)
class Probe:
    """A probe to send now: one packet of ``size`` bytes; ``seq`` names it in the reports."""

    size: int
    seq: int


class _Phase(enum.Enum):
    SEARCHING = "searching"  # probing the next rung above size
    CONFIRMING = "confirming"  # probing size itself: does the path still carry it?
    COMPLETE = "complete"  # waiting for the raise timer, or nothing left to try


class PathMtuSearch:
    """The packet-size decisions of one connection; see the module docstring."""

    def __init__(self, *, base: int, maximum: int, candidates: Sequence[int] = CANDIDATES) -> None:
        if maximum < base:
            raise ValueError(f"the maximum packet size {maximum} is below the base size {base}")
        self.base = base
        self.maximum = maximum
        self.size = base  # the confirmed packet size (PLPMTU)
        self.probes_sent = 0
        self._candidates = tuple(sorted(candidates))
        self._ladder: tuple[int, ...] = ()
        self._phase = _Phase.COMPLETE
        self._target: int | None = None  # the size being searched for
        self._failures = 0  # probes lost in a row, of the target or of the confirmation
        self._probe: Probe | None = None  # the one probe in flight
        self._probe_sent_at = 0.0
        self._next_at: float | None = None  # earliest time for the next probe; None: none planned
        self._resume_at: float | None = None  # the COMPLETE phase's timer, kept while confirming
        self._confirmed_at = -math.inf

    @property
    def enabled(self) -> bool:
        return self.maximum > self.base

    def start(self, now: float, peer_limit: int | None) -> None:
        """Begin the search: the handshake is confirmed; ``peer_limit`` is the peer's
        max_udp_payload_size (None if it sent none)."""
        cap = min(self.maximum, MAX_UDP_PAYLOAD if peer_limit is None else peer_limit)
        rungs = {size for size in self._candidates if self.base < size <= cap}
        if cap > self.base:
            rungs.add(cap)
        self._ladder = tuple(sorted(rungs))
        self._search(now, delay=0.0)

    def next_probe(self, now: float) -> Probe | None:
        """The probe to send now, if one is due; it is then in flight until reported on."""
        if self._probe is not None or self._next_at is None or now < self._next_at:
            return None
        if self._phase is _Phase.COMPLETE:  # the raise timer fired
            self._search(now, delay=0.0)
        size = self.size if self._phase is _Phase.CONFIRMING else self._target
        if size is None:
            return None
        self.probes_sent += 1
        self._probe = Probe(size, self.probes_sent)
        self._probe_sent_at = now
        self._next_at = None
        return self._probe

    def on_probe_acked(self, seq: int, now: float) -> None:
        """The probe ``seq`` arrived: the path carries its size."""
        probe = self._take(seq)
        if probe is None:
            return
        self._failures = 0
        if self._phase is _Phase.CONFIRMING:
            self._phase, self._next_at = _Phase.COMPLETE, self._resume_at
        elif probe.size > self.size:
            self.size = probe.size
            self._search(now, delay=PROBE_GAP)

    def on_probe_lost(self, seq: int, now: float) -> None:
        """The probe ``seq`` was declared lost (never a congestion signal)."""
        if self._take(seq) is None:
            return
        self._failures += 1
        if self._failures < MAX_PROBES:
            self._next_at = now + PROBE_GAP
        elif self._phase is _Phase.CONFIRMING:
            self._fall_back(now)
        else:
            self._phase, self._failures = _Phase.COMPLETE, 0
            self._next_at = now + RAISE_INTERVAL

    def on_probe_unsent(self, seq: int, now: float) -> None:
        """The probe ``seq`` could not be sent as one unfragmented datagram: try it again later."""
        if self._take(seq) is not None:
            self._next_at = now + PROBE_GAP

    def on_large_packets_lost(self, now: float) -> None:
        """Congestion loss included packets above the base size: check the path still carries
        ``size`` (a probe of that size), unless a check is under way or was just made."""
        if self._phase is not _Phase.COMPLETE or self.size <= self.base:
            return
        if now - self._confirmed_at < CONFIRM_INTERVAL:
            return
        self._confirmed_at = now
        self._phase, self._failures = _Phase.CONFIRMING, 0
        self._resume_at, self._next_at = self._next_at, now

    def on_black_hole(self, now: float) -> None:
        """Nothing gets through at ``size`` (the glue saw its loss timer fire repeatedly)."""
        if self.size > self.base:
            self._fall_back(now)

    def timer(self) -> float | None:
        """When :meth:`handle_timer` or :meth:`next_probe` has something to do, if ever."""
        if self._probe is not None:
            return self._probe_sent_at + PROBE_TIMEOUT
        return self._next_at

    def handle_timer(self, now: float) -> None:
        """A probe that nobody reported on within PROBE_TIMEOUT counts as lost."""
        if self._probe is not None and now >= self._probe_sent_at + PROBE_TIMEOUT:
            self.on_probe_lost(self._probe.seq, now)

    def _take(self, seq: int) -> Probe | None:
        """The probe in flight if it is ``seq``, no longer in flight; None for a stale report."""
        probe = self._probe
        if probe is None or probe.seq != seq:
            return None
        self._probe = None
        return probe

    def _search(self, now: float, *, delay: float) -> None:
        """Aim at the lowest rung above ``size``, probing after ``delay``; complete if none."""
        self._target = next((rung for rung in self._ladder if rung > self.size), None)
        self._failures = 0
        if self._target is None:
            self._phase, self._next_at = _Phase.COMPLETE, None
        else:
            self._phase, self._next_at = _Phase.SEARCHING, now + delay

    def _fall_back(self, now: float) -> None:
        self.size = self.base
        self._probe = None
        self._phase, self._failures = _Phase.COMPLETE, 0
        self._next_at = now + BLACK_HOLE_HOLDOFF
