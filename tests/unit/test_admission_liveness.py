"""Admission (capacity, draining, per-receiver burst cap) and heartbeat liveness, with ``now`` passed in."""

from __future__ import annotations

import pytest

from tunnelpy.common.allowlist import AllowLists, parse_networks, parse_source
from tunnelpy.supervisor.admission import Admission, Admitted, Refused
from tunnelpy.supervisor.admission import Refusal as RejectReason
from tunnelpy.supervisor.liveness import Liveness

# -- admission -----------------------------------------------------------------------------


def test_admits_up_to_max_sessions_then_refuses_at_capacity() -> None:
    admission = Admission(max_sessions=3)
    for n in range(3):
        assert admission.admit(f"s{n}", f"r{n}", now=0.0) == Admitted(f"s{n}")
    assert admission.active == 3
    decision = admission.admit("s3", "r3", now=0.0)
    assert decision == Refused(RejectReason.AT_CAPACITY, "sender at capacity (3/3 sessions); try again later")
    assert admission.active == 3


def test_release_frees_a_slot() -> None:
    admission = Admission(max_sessions=1)
    assert admission.admit("a", "r", now=0.0) == Admitted("a")
    assert isinstance(admission.admit("b", "r", now=1.0), Refused)
    assert admission.release("a") is True
    assert admission.active == 0
    assert admission.admit("b", "r", now=2.0) == Admitted("b")
    assert admission.active == 1


def test_release_twice_returns_false() -> None:
    admission = Admission(max_sessions=2)
    admission.admit("a", "r", now=0.0)
    assert admission.release("a") is True
    assert admission.release("a") is False
    assert admission.release("never-admitted") is False
    assert admission.active == 0


def test_draining_refuses_even_with_free_slots() -> None:
    admission = Admission(max_sessions=10)
    admission.admit("a", "r", now=0.0)
    admission.draining = True
    assert admission.admit("b", "r2", now=1.0) == Refused(
        RejectReason.DRAINING, "the sender is shutting down; try again later"
    )
    assert admission.active == 1
    assert admission.release("a") is True


def test_draining_wins_over_capacity() -> None:
    admission = Admission(max_sessions=1, draining=False)
    admission.admit("a", "r", now=0.0)
    admission.draining = True
    decision = admission.admit("b", "r", now=0.0)
    assert isinstance(decision, Refused)
    assert decision.reason is RejectReason.DRAINING


def test_per_receiver_burst_cap_within_the_window() -> None:
    admission = Admission(max_sessions=100, per_receiver_burst=3, window=10.0)
    for n, now in enumerate([0.0, 1.0, 2.0]):
        assert admission.admit(f"s{n}", "loop", now=now) == Admitted(f"s{n}")
        admission.release(f"s{n}")  # releasing does not refund the burst budget
    decision = admission.admit("s3", "loop", now=3.0)
    assert decision == Refused(RejectReason.AT_CAPACITY, "too many sessions from this receiver (3 in 10 s); slow down")
    # another receiver is not affected
    assert admission.admit("other", "someone-else", now=3.0) == Admitted("other")


def test_burst_cap_resets_after_the_window() -> None:
    admission = Admission(max_sessions=100, per_receiver_burst=2, window=10.0)
    assert isinstance(admission.admit("a", "r", now=0.0), Admitted)
    assert isinstance(admission.admit("b", "r", now=5.0), Admitted)
    assert isinstance(admission.admit("c", "r", now=10.0), Refused)  # exactly one window after: still counted
    assert admission.admit("d", "r", now=10.5) == Admitted("d")  # the t=0 admission has aged out
    assert isinstance(admission.admit("e", "r", now=14.0), Refused)  # t=5 and t=10.5 still in the window
    assert admission.admit("f", "r", now=20.6) == Admitted("f")  # both aged out


def test_refusals_do_not_count_towards_the_burst() -> None:
    admission = Admission(max_sessions=1, per_receiver_burst=2, window=60.0)
    assert isinstance(admission.admit("a", "r", now=0.0), Admitted)
    for n in range(5):  # at capacity: refused, not recorded
        decision = admission.admit(f"x{n}", "r", now=1.0)
        assert isinstance(decision, Refused)
        assert decision.message.startswith("sender at capacity")
    admission.release("a")
    assert admission.admit("b", "r", now=2.0) == Admitted("b")


# -- liveness ------------------------------------------------------------------------------


def test_stale_only_after_the_timeout() -> None:
    liveness = Liveness(timeout=10.0)
    liveness.beat("a", now=0.0)
    liveness.beat("b", now=5.0)
    assert liveness.stale(now=10.0) == []  # exactly the timeout: not yet
    assert liveness.stale(now=10.5) == ["a"]
    assert liveness.stale(now=15.5) == ["b"]


def test_each_stale_session_is_reported_once() -> None:
    liveness = Liveness(timeout=1.0)
    liveness.beat("a", now=0.0)
    liveness.beat("b", now=0.0)
    assert sorted(liveness.stale(now=2.0)) == ["a", "b"]
    assert liveness.stale(now=3.0) == []
    assert liveness.stale(now=100.0) == []


def test_beat_refreshes() -> None:
    liveness = Liveness(timeout=10.0)
    liveness.beat("a", now=0.0)
    liveness.beat("a", now=9.0)
    assert liveness.stale(now=15.0) == []
    assert liveness.stale(now=19.5) == ["a"]


def test_beat_after_being_reported_registers_again() -> None:
    liveness = Liveness(timeout=1.0)
    liveness.beat("a", now=0.0)
    assert liveness.stale(now=2.0) == ["a"]
    liveness.beat("a", now=3.0)
    assert liveness.stale(now=3.5) == []
    assert liveness.stale(now=4.5) == ["a"]


def test_forget() -> None:
    liveness = Liveness(timeout=1.0)
    liveness.beat("a", now=0.0)
    liveness.beat("b", now=0.0)
    liveness.forget("a")
    liveness.forget("never-seen")  # no error
    assert liveness.stale(now=5.0) == ["b"]


@pytest.mark.parametrize("timeout", [0.5, 30.0])
def test_timeout_scales(timeout: float) -> None:
    liveness = Liveness(timeout=timeout)
    liveness.beat("a", now=100.0)
    assert liveness.stale(now=100.0 + timeout) == []
    assert liveness.stale(now=100.0 + timeout * 1.01) == ["a"]


# -- identity and source: the same core decides ----------------------------------------------


def _allow_loopback_tcp() -> AllowLists:
    return AllowLists(tcp=parse_networks(["127.0.0.0/8"], what="--allowed-tcp"))


def test_unknown_identity_is_refused_before_anything_else() -> None:
    admission = Admission(max_sessions=1, authorized=frozenset({"known"}), allowed=_allow_loopback_tcp())
    admission.draining = True  # identity is decided first: an unknown peer learns nothing more
    decision = admission.admit("a", "stranger", now=0.0)
    assert decision == Refused(RejectReason.UNAUTHORIZED, "receiver stranger is not in the sender's --authorized-keys")
    assert admission.authorize("known") is None
    assert admission.active == 0


def test_no_authorized_set_admits_any_identity() -> None:
    assert Admission(max_sessions=1).authorize("anyone") is None


def test_source_outside_the_allow_list_is_refused_without_taking_a_slot() -> None:
    admission = Admission(max_sessions=1, allowed=_allow_loopback_tcp())
    source = parse_source("tcp://10.0.0.1:22")
    decision = admission.admit("a", "r", now=0.0, source=(source, ["10.0.0.1"]))
    assert isinstance(decision, Refused) and decision.reason is RejectReason.NOT_ALLOWED
    assert "outside the sender's --allowed-tcp list" in decision.message
    assert admission.active == 0


def test_source_that_resolved_to_nothing_is_unreachable() -> None:
    admission = Admission(max_sessions=1, allowed=_allow_loopback_tcp())
    decision = admission.admit("a", "r", now=0.0, source=(parse_source("tcp://nowhere:22"), []))
    assert isinstance(decision, Refused) and decision.reason is RejectReason.SOURCE_UNREACHABLE


def test_admitted_source_carries_the_checked_addresses() -> None:
    admission = Admission(max_sessions=1, allowed=_allow_loopback_tcp())
    decision = admission.admit("a", "r", now=0.0, source=(parse_source("tcp://localhost:22"), ["127.0.0.1"]))
    assert decision == Admitted("a", ("127.0.0.1",))
    assert admission.active == 1


def test_pending_sessions_are_capped_until_their_receivers_connect() -> None:
    admission = Admission(max_sessions=100, max_pending=2, per_receiver_burst=100)
    assert isinstance(admission.admit("a", "id-a", now=0.0), Admitted)
    assert isinstance(admission.admit("b", "id-b", now=0.0), Admitted)
    refused = admission.admit("c", "id-c", now=0.0)
    assert refused == Refused(
        RejectReason.AT_CAPACITY, "2 sessions are waiting for their receivers to connect; try again shortly"
    )
    admission.connected("a")
    assert isinstance(admission.admit("c", "id-c", now=0.0), Admitted)
    admission.release("b")  # a pending session that ends frees its pending place too
    assert isinstance(admission.admit("d", "id-d", now=0.0), Admitted)
    assert admission.active == 3


def test_workers_failing_at_start_pause_admissions_then_one_success_resets() -> None:
    admission = Admission(max_sessions=100, per_receiver_burst=100)
    boots = admission.boots
    assert [boots.failed("exit code 1", now=float(n)) for n in range(5)] == [False] * 4 + [True]
    refused = admission.admit("a", "r", now=5.0)
    assert isinstance(refused, Refused) and refused.reason is RejectReason.INTERNAL
    assert "keep failing at start (5 in a row, last: exit code 1)" in refused.message
    assert not boots.failed("again", now=6.0)  # already paused: not logged again
    assert isinstance(admission.admit("a", "r", now=33.9), Refused)  # paused from t=4 for 30 s
    assert isinstance(admission.admit("a", "r", now=34.1), Admitted)  # the pause is over: try again
    boots.succeeded()
    assert boots.failures == 0 and boots.check(now=35.2) is None
