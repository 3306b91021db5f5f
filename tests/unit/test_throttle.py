"""The front door's limits on unauthenticated work (supervisor/throttle.py), with time passed in."""

from __future__ import annotations

from tunnelpy.supervisor.throttle import FrontDoorGuard, KeyedRate


def test_keyed_rate_allows_a_burst_then_refills_at_its_rate() -> None:
    rate = KeyedRate(burst=3, window=3.0)
    assert [rate.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert rate.allow("b", 0.0)  # keys are independent
    assert not rate.allow("a", 0.5)
    assert rate.allow("a", 1.1)  # one token per second
    assert not rate.allow("a", 1.2)
    assert [rate.allow("a", 100.0) for _ in range(4)] == [True, True, True, False]  # capped at the burst


def test_keyed_rate_memory_is_bounded() -> None:
    rate = KeyedRate(burst=1, window=1.0, max_keys=100)
    for n in range(10_000):
        rate.allow(f"identity-{n}", float(n))
    assert len(rate) == 100


def test_guard_caps_handshakes_in_flight_and_frees_them() -> None:
    guard = FrontDoorGuard(max_startups=2)
    assert guard.incoming("10.0.0.1", 0.0) is None
    assert guard.incoming("10.0.0.2", 0.0) is None
    assert guard.incoming("10.0.0.3", 0.0) == "2 handshakes already in progress (max_startups 2)"
    guard.finished()
    assert guard.incoming("10.0.0.3", 0.0) is None
    for _ in range(5):
        guard.finished()
    assert guard.in_flight == 0


def test_an_address_whose_handshakes_keep_failing_is_refused_for_a_while() -> None:
    guard = FrontDoorGuard(max_startups=1000, failures_per_address=KeyedRate(burst=5, window=10.0))
    outcomes = []
    for _ in range(8):
        outcomes.append(guard.incoming("192.0.2.9", 0.0))
        guard.failed("192.0.2.9", 0.0)
        guard.finished()
    assert outcomes[:5] == [None] * 5
    assert all(o == "too many failed handshakes from 192.0.2.9; refused for a while" for o in outcomes[5:])
    assert guard.incoming("192.0.2.10", 0.0) is None  # another peer still gets in
    assert guard.incoming("192.0.2.9", 2.1) is None  # one failure forgiven every 2 s


def test_successful_handshakes_cost_an_address_nothing() -> None:
    guard = FrontDoorGuard(max_startups=1000, failures_per_address=KeyedRate(burst=1, window=60.0))
    for _ in range(50):
        assert guard.incoming("127.0.0.1", 0.0) is None
        guard.finished()


def test_one_identity_is_rate_limited() -> None:
    guard = FrontDoorGuard(per_identity=KeyedRate(burst=2, window=10.0))
    assert guard.identified("r", 0.0) is None and guard.identified("r", 0.0) is None
    assert guard.identified("r", 0.0) == "too many requests from this identity"
    assert guard.identified("other", 0.0) is None
