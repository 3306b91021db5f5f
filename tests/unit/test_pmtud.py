"""The path-MTU search core (tunnelpy.worker.transport.quic.pmtud): decisions only, time passed in."""

from __future__ import annotations

import pytest

from tunnelpy.worker.transport.quic.pmtud import (
    BLACK_HOLE_HOLDOFF,
    CONFIRM_INTERVAL,
    MAX_PROBES,
    PROBE_GAP,
    PROBE_TIMEOUT,
    RAISE_INTERVAL,
    PathMtuSearch,
    Probe,
)

BASE = 1452


def started(maximum: int = 16384, peer_limit: int | None = None, now: float = 0.0) -> PathMtuSearch:
    search = PathMtuSearch(base=BASE, maximum=maximum)
    search.start(now, peer_limit)
    return search


def probe_at(search: PathMtuSearch, now: float) -> Probe:
    probe = search.next_probe(now)
    assert probe is not None, f"no probe due at {now}"
    return probe


def climb(search: PathMtuSearch, now: float = 0.0) -> tuple[list[int], float]:
    """Ack every probe as soon as it is due; return the sizes probed and the time reached."""
    sizes = []
    while (at := search.timer()) is not None and at < now + 100:
        now = max(now, at)
        probe = probe_at(search, now)
        sizes.append(probe.size)
        search.on_probe_acked(probe.seq, now + 0.001)
    return sizes, now


def test_climbs_the_ladder_one_acked_probe_at_a_time() -> None:
    search = started()
    first = probe_at(search, 0.0)
    assert first.size == 1472
    assert search.next_probe(0.0) is None  # one probe in flight at a time
    assert search.size == BASE  # nothing changes before the ack
    search.on_probe_acked(first.seq, 0.01)
    assert search.size == 1472
    assert search.next_probe(0.01) is None  # paced: the next one waits PROBE_GAP
    assert search.timer() == pytest.approx(0.01 + PROBE_GAP)
    assert probe_at(search, 0.01 + PROBE_GAP).size == 4096


def test_the_whole_search_on_a_path_that_carries_everything() -> None:
    search = started()
    sizes, _ = climb(search)
    assert sizes == [1472, 4096, 8192, 8952, 16384]
    assert search.size == 16384
    assert search.timer() is None  # the top rung: nothing more to do, ever
    assert search.probes_sent == 5


def test_lost_probes_never_lower_the_size_and_end_the_search_after_max_probes() -> None:
    search = started()
    search.on_probe_acked(probe_at(search, 0.0).seq, 0.0)
    now = PROBE_GAP
    for attempt in range(MAX_PROBES):
        probe = probe_at(search, now)
        assert probe.size == 4096, f"attempt {attempt} retries the same size"
        search.on_probe_lost(probe.seq, now + 0.1)
        assert search.size == 1472
        now += 0.1 + PROBE_GAP
    assert search.timer() == pytest.approx(now - PROBE_GAP + RAISE_INTERVAL)
    assert search.next_probe(now + RAISE_INTERVAL / 2) is None
    # After the raise timer the failed size is tried again (RFC 8899 PMTU_RAISE_TIMER).
    assert probe_at(search, now + RAISE_INTERVAL).size == 4096


def test_the_peer_limit_and_the_configured_maximum_cap_the_ladder() -> None:
    assert climb(started(peer_limit=9000))[0] == [1472, 4096, 8192, 8952, 9000]
    assert climb(started(peer_limit=4000))[0] == [1472, 4000]
    assert climb(started(maximum=8192))[0] == [1472, 4096, 8192]
    assert climb(started(maximum=12000, peer_limit=65527))[0] == [1472, 4096, 8192, 8952, 12000]
    assert climb(started(peer_limit=1200))[0] == []  # a peer smaller than the base: no probing


def test_maximum_equal_to_the_base_disables_the_search() -> None:
    search = started(maximum=BASE)
    assert not search.enabled
    assert search.timer() is None
    assert search.next_probe(1000.0) is None
    with pytest.raises(ValueError, match="below the base"):
        PathMtuSearch(base=BASE, maximum=1400)


def test_an_unreported_probe_times_out_as_lost_and_a_late_ack_is_ignored() -> None:
    search = started()
    probe = probe_at(search, 0.0)
    assert search.timer() == PROBE_TIMEOUT
    search.handle_timer(PROBE_TIMEOUT - 0.001)
    assert search.next_probe(PROBE_TIMEOUT - 0.001) is None  # still in flight
    search.handle_timer(PROBE_TIMEOUT)
    retry = probe_at(search, PROBE_TIMEOUT + PROBE_GAP)
    assert retry.size == probe.size and retry.seq != probe.seq
    search.on_probe_acked(probe.seq, PROBE_TIMEOUT + 1)  # the first one, too late
    assert search.size == BASE
    search.on_probe_acked(retry.seq, PROBE_TIMEOUT + 1)
    assert search.size == 1472


def test_an_unsent_probe_is_retried_without_counting_as_a_loss() -> None:
    search = started()
    for _ in range(MAX_PROBES + 2):
        search.on_probe_unsent(probe_at(search, 0.0).seq, 0.0 - PROBE_GAP)
    probe = probe_at(search, 0.0)
    search.on_probe_acked(probe.seq, 0.0)
    assert search.size == 1472


def reach(size_limit: int) -> tuple[PathMtuSearch, float]:
    """A search that completed at ``size_limit`` because larger probes were lost."""
    search = started()
    now = 0.0
    while (at := search.timer()) is not None and at < 100:
        now = max(now, at)
        probe = probe_at(search, now)
        if probe.size <= size_limit:
            search.on_probe_acked(probe.seq, now)
        else:
            search.on_probe_lost(probe.seq, now)
    assert search.size == size_limit
    return search, now


def test_large_packet_loss_triggers_a_confirmation_that_keeps_the_size_if_acked() -> None:
    search, now = reach(8952)
    raise_at = search.timer()
    search.on_large_packets_lost(now + 1)
    probe = probe_at(search, now + 1)
    assert probe.size == 8952  # a probe of the current size
    search.on_probe_acked(probe.seq, now + 1.01)
    assert search.size == 8952
    assert search.timer() == raise_at  # back to waiting for the raise timer
    search.on_large_packets_lost(now + 1 + CONFIRM_INTERVAL / 2)
    assert search.timer() == raise_at  # rate limited: no second check so soon


def test_lost_confirmations_fall_back_to_the_base_and_search_again_later() -> None:
    search, now = reach(8952)
    search.on_large_packets_lost(now)
    for _ in range(MAX_PROBES):
        probe = probe_at(search, now)
        assert probe.size == 8952
        search.on_probe_lost(probe.seq, now)
        now += PROBE_GAP
    assert search.size == BASE
    assert search.next_probe(now + BLACK_HOLE_HOLDOFF / 2) is None
    assert probe_at(search, now + BLACK_HOLE_HOLDOFF).size == 1472


def test_a_black_hole_report_falls_back_and_forgets_the_probe_in_flight() -> None:
    search, now = reach(4096)
    search.on_large_packets_lost(now)
    probe = probe_at(search, now)
    search.on_black_hole(now + 0.5)
    assert search.size == BASE
    search.on_probe_acked(probe.seq, now + 0.6)  # stale: it was sent before the fall-back
    assert search.size == BASE
    search.on_black_hole(now + 1)  # at the base already: nothing changes
    assert search.timer() == now + 0.5 + BLACK_HOLE_HOLDOFF


def test_loss_at_the_base_size_or_while_searching_starts_no_confirmation() -> None:
    search = started()
    search.on_large_packets_lost(0.0)  # still at the base
    probe = probe_at(search, 0.0)
    assert probe.size == 1472
    search.on_probe_acked(probe.seq, 0.0)
    search.on_large_packets_lost(0.01)  # searching: the next probe is the next rung
    assert probe_at(search, PROBE_GAP).size == 4096
