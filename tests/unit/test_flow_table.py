"""The UDP flow table: ids per client address, the cap, idle expiry with ``now`` passed in."""

from __future__ import annotations

from tunnelpy.worker.forwarding.udp import FlowTable

A, B, C = ("127.0.0.1", 40001), ("127.0.0.1", 40002), ("::1", 40003, 0, 0)


def test_id_per_key_is_stable() -> None:
    flows = FlowTable()
    first = flows.flow_for(A, now=0.0)
    assert first is not None
    assert flows.flow_for(A, now=1.0) == first
    assert flows.flow_for(A, now=2.0) == first
    assert flows.key_of(first) == A
    assert len(flows) == 1


def test_distinct_keys_get_distinct_ids() -> None:
    flows = FlowTable()
    ids = [flows.flow_for(key, now=0.0) for key in (A, B, C)]
    assert None not in ids
    assert len(set(ids)) == 3
    assert [flows.key_of(flow_id) for flow_id in ids] == [A, B, C]
    assert len(flows) == 3


def test_ids_are_never_zero() -> None:
    flows = FlowTable()
    assert all(flows.flow_for(("10.0.0.1", port), now=0.0) != 0 for port in range(1, 50))


def test_max_flows_cap_returns_none_for_new_keys_only() -> None:
    flows = FlowTable(max_flows=2)
    a, b = flows.flow_for(A, now=0.0), flows.flow_for(B, now=0.0)
    assert flows.flow_for(C, now=0.0) is None
    assert len(flows) == 2
    assert flows.flow_for(A, now=1.0) == a  # known keys still map
    assert flows.flow_for(B, now=1.0) == b


def test_cap_frees_up_after_expiry() -> None:
    flows = FlowTable(idle_timeout=10.0, max_flows=1)
    flows.flow_for(A, now=0.0)
    assert flows.flow_for(B, now=5.0) is None
    assert [key for _, key in flows.expire(now=10.5)] == [A]
    assert flows.flow_for(B, now=11.0) is not None


def test_expire_removes_only_idle_flows() -> None:
    flows = FlowTable(idle_timeout=10.0)
    a = flows.flow_for(A, now=0.0)
    b = flows.flow_for(B, now=5.0)
    assert flows.expire(now=10.0) == []  # exactly the timeout: not idle yet
    assert flows.expire(now=12.0) == [(a, A)]
    assert flows.key_of(a) is None
    assert flows.key_of(b) == B
    assert len(flows) == 1
    assert flows.expire(now=12.0) == []
    assert flows.expire(now=15.5) == [(b, B)]
    assert len(flows) == 0


def test_flow_for_refreshes() -> None:
    flows = FlowTable(idle_timeout=10.0)
    a = flows.flow_for(A, now=0.0)
    flows.flow_for(A, now=8.0)
    assert flows.expire(now=15.0) == []
    assert flows.expire(now=18.5) == [(a, A)]


def test_key_of_with_now_refreshes_and_without_does_not() -> None:
    flows = FlowTable(idle_timeout=10.0)
    a = flows.flow_for(A, now=0.0)
    b = flows.flow_for(B, now=0.0)
    assert flows.key_of(a, now=9.0) == A  # traffic towards A keeps it alive
    assert flows.key_of(b) == B  # a lookup without now is not activity
    assert flows.expire(now=12.0) == [(b, B)]
    assert flows.expire(now=19.5) == [(a, A)]


def test_key_of_unknown_flow() -> None:
    flows = FlowTable()
    assert flows.key_of(12345) is None
    assert flows.key_of(12345, now=1.0) is None
    assert flows.expire(now=1e9) == []  # looking up an unknown id did not create it


def test_expired_key_gets_a_new_flow() -> None:
    flows = FlowTable(idle_timeout=1.0)
    old = flows.flow_for(A, now=0.0)
    flows.expire(now=5.0)
    new = flows.flow_for(A, now=6.0)
    assert new is not None
    assert new != old
    assert flows.key_of(old) is None
    assert flows.key_of(new) == A


def test_add_records_a_peer_chosen_id() -> None:
    flows = FlowTable(idle_timeout=10.0)
    flows.add(77, 77, now=0.0)
    flows.add(4_000_000_000, "socket-b", now=5.0)
    assert flows.key_of(77) == 77
    assert flows.key_of(4_000_000_000) == "socket-b"
    assert flows.flow_for(77, now=1.0) == 77  # the key maps back to the peer's id
    assert len(flows) == 2
    assert flows.expire(now=12.0) == [(77, 77)]
    assert flows.expire(now=15.5) == [(4_000_000_000, "socket-b")]
