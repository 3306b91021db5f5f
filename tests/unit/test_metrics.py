"""Metrics in memory: the counters, the collector's families and labels, the status line text."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tunnelpy.cli.status import render
from tunnelpy.supervisor import control_wire as cw
from tunnelpy.supervisor import metrics
from tunnelpy.supervisor.admission import Refusal
from tunnelpy.supervisor.counters import Counters, exit_labels
from tunnelpy.supervisor.metrics import StatusCollector
from tunnelpy.worker.forwarding import udp
from tunnelpy.worker.forwarding.tcp import Traffic
from tunnelpy.worker.forwarding.udp import UdpLink
from tunnelpy.worker.receiver.status_line import Sample, describe
from tunnelpy.worker.transport.interface import TransportStats

VIEW = cw.SessionView(
    session_id="0123456789abcdef",
    receiver_id="ab" * 32,
    source="tcp://127.0.0.1:22",
    state="connected",
    age_s=12.5,
    bytes_up=1000,
    bytes_down=2000,
    streams_open=1,
    streams_total=3,
    rtt_ms=2.0,
    pid=4242,
    path="direct",
    lost_packets=5,
    datagrams_dropped=7,
)


def reply(counters: Counters, *views: cw.SessionView) -> cw.StatusReply:
    return cw.StatusReply(
        mode="iroh",
        endpoint_id="f" * 64,
        ticket="t",
        draining=False,
        max_sessions=10,
        sessions=tuple(dataclasses.asdict(v) for v in views),
        totals=counters.totals(views),
    )


def scrape(status: cw.StatusReply) -> dict[str, list]:  # type: ignore[type-arg]
    """sample name -> [(labels, value)] of one scrape of a collector over ``status``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(lambda: status, read_memory=lambda pid: (pid * 1000, pid * 500)))
    samples: dict[str, list] = {}  # type: ignore[type-arg]
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_counters_fold_events_and_live_sessions() -> None:
    counters = Counters()
    counters.session_refused(Refusal.AT_CAPACITY)
    counters.session_refused(Refusal.AT_CAPACITY)
    counters.session_admitted()
    counters.session_ready(0.3)
    totals = counters.totals([VIEW])
    assert totals["sessions_admitted"] == 1
    assert totals["sessions_refused"]["at_capacity"] == 2
    assert set(totals["sessions_refused"]) == {r.value for r in Refusal}  # every series exists from the start
    assert (totals["bytes_up"], totals["bytes_down"], totals["streams_total"]) == (1000, 2000, 3)
    assert totals["setup_seconds"]["count"] == 1
    assert totals["setup_seconds"]["buckets"][2] == [0.25, 0]  # 0.3 s is above the 0.25 bucket
    assert totals["setup_seconds"]["buckets"][3] == [0.5, 1]


def test_totals_keep_growing_when_a_session_ends() -> None:
    counters = Counters()
    live = counters.totals([VIEW])
    counters.session_ended(VIEW, -9)
    ended = counters.totals([])
    assert ended["bytes_up"] == live["bytes_up"] and ended["datagrams_dropped"] == 7
    assert ended["streams_open"] == 0
    assert ended["worker_exits"] == [{"reason": "killed", "signal": "SIGKILL", "count": 1}]


def test_exit_labels() -> None:
    assert exit_labels(0) == ("ok", "")
    assert exit_labels(11) == ("connection_lost", "")
    assert exit_labels(-15) == ("killed", "SIGTERM")
    assert exit_labels(None) == ("unknown", "")
    assert exit_labels(99) == ("exit 99", "")


def test_collector_names_labels_and_units() -> None:
    counters = Counters()
    counters.session_admitted()
    counters.session_ready(0.2)
    samples = scrape(reply(counters, VIEW))
    ids = {"session_id": VIEW.session_id}
    assert samples["tunnelpy_sessions_active"] == [({}, 1.0)]
    assert samples["tunnelpy_sessions_limit"] == [({}, 10.0)]
    assert samples["tunnelpy_sessions_admitted_total"] == [({}, 1.0)]
    assert ({"state": "connected"}, 1.0) in samples["tunnelpy_sessions"]
    assert ({"state": "waiting"}, 0.0) in samples["tunnelpy_sessions"]
    assert ({"reason": "draining"}, 0.0) in samples["tunnelpy_sessions_rejected_total"]
    assert samples["tunnelpy_session_setup_seconds_count"] == [({}, 1.0)]
    assert ({"le": "+Inf"}, 1.0) in samples["tunnelpy_session_setup_seconds_bucket"]
    assert ({"direction": "down"}, 2000.0) in samples["tunnelpy_bytes_total"]
    assert samples["tunnelpy_session_rtt_seconds"] == [(ids, 0.002)]
    assert samples["tunnelpy_session_lost_packets_total"] == [(ids, 5.0)]
    assert samples["tunnelpy_session_uptime_seconds"] == [(ids, 12.5)]
    assert ({**ids, "direction": "up"}, 1000.0) in samples["tunnelpy_session_bytes_total"]
    assert samples["tunnelpy_udp_datagrams_dropped_total"] == [({}, 7.0)]
    info_labels = samples["tunnelpy_session_info"][0][0]
    assert (info_labels["path"], info_labels["state"], info_labels["source"]) == ("direct", "connected", VIEW.source)
    assert info_labels["receiver_id"] == VIEW.receiver_id
    assert samples["tunnelpy_worker_resident_memory_bytes"] == [(ids, 4242 * 1000.0)]
    assert samples["tunnelpy_worker_proportional_memory_bytes"] == [(ids, 4242 * 500.0)]


def test_per_session_series_go_with_the_session() -> None:
    counters = Counters()
    assert any(name.startswith("tunnelpy_session_info") for name in scrape(reply(counters, VIEW)))
    counters.session_ended(VIEW, 0)
    after = scrape(reply(counters))
    assert not [name for name in after if name.startswith(("tunnelpy_session_", "tunnelpy_worker_")) and name not in {
        "tunnelpy_session_setup_seconds_bucket", "tunnelpy_session_setup_seconds_count",
        "tunnelpy_session_setup_seconds_sum", "tunnelpy_worker_exits_total"}]  # fmt: skip
    assert after["tunnelpy_bytes_total"] == [({"direction": "up"}, 1000.0), ({"direction": "down"}, 2000.0)]
    assert after["tunnelpy_worker_exits_total"] == [({"reason": "ok", "signal": ""}, 1.0)]


def test_unmeasured_rtt_has_no_series() -> None:
    samples = scrape(reply(Counters(), dataclasses.replace(VIEW, rtt_ms=None, path=None, pid=None)))
    assert "tunnelpy_session_rtt_seconds" not in samples
    assert "tunnelpy_worker_resident_memory_bytes" not in samples
    assert samples["tunnelpy_session_info"][0][0]["path"] == "unknown"


def test_status_line_text() -> None:
    traffic = Traffic(bytes_up=3_000_000, bytes_down=1_000, streams_open=2)
    stats = TransportStats(rtt_ms=3.4, path="relay")
    line = describe(stats, traffic, Sample(11.0, 3_000_000, 1_000), Sample(10.0, 1_000_000, 0))
    assert line == "connected via relay · RTT 3 ms · ↑ 3.0 MB 2.0 MB/s · ↓ 1.0 KB 1.0 KB/s · 2 streams"


def test_status_line_before_any_rate_and_for_udp() -> None:
    traffic = Traffic(flows_open=4, datagrams_dropped=9)
    line = describe(TransportStats(), traffic, Sample(1.0, 0, 0), None)
    assert line == "connected via unknown path · RTT - · ↑ 0 B 0 B/s · ↓ 0 B 0 B/s · 4 flows · 9 dropped"


def test_worker_memory_is_read_at_most_once_per_age() -> None:
    reads: list[int] = []
    now = [100.0]

    def read(pid: int) -> tuple[int, int]:
        reads.append(pid)
        return (pid, pid)

    status = reply(Counters(), VIEW, dataclasses.replace(VIEW, session_id="1" * 16, pid=77))
    collector = StatusCollector(lambda: status, read_memory=read, clock=lambda: now[0])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    generate_latest(registry)
    generate_latest(registry)
    assert sorted(reads) == [77, 4242]  # the second scrape reused both readings
    now[0] += metrics.MEMORY_MAX_AGE * 1.5 + 0.001
    text = generate_latest(registry).decode()
    assert sorted(reads) == [77, 77, 4242, 4242]  # every reading was due again
    assert 'tunnelpy_worker_resident_memory_bytes{session_id="' in text


def test_view_dict_is_asdict() -> None:
    assert cw.view_dict(VIEW) == dataclasses.asdict(VIEW)


def test_status_command_shows_the_totals() -> None:
    counters = Counters()
    counters.session_admitted()
    counters.session_refused(Refusal.UNAUTHORIZED)
    counters.session_ready(0.25)
    text = render(reply(counters, VIEW))
    assert "admitted 1  refused unauthorized 1  setup mean 0.25s  up 1.0KB  down 2.0KB" in text
    assert " direct " in text.splitlines()[-1]


def test_status_lists_every_path_of_a_multipath_session() -> None:
    paths = ["direct 198.18.0.3:4000 1ms selected", "relay http://198.18.0.10:3340/ 3ms"]
    lines = render(reply(Counters(), dataclasses.replace(VIEW, paths=paths))).splitlines()
    assert lines[-1].split() == ["paths:", "direct", "198.18.0.3:4000", "1ms", "selected,", *paths[1].split()]
    assert "paths:" not in render(reply(Counters(), dataclasses.replace(VIEW, paths=paths[:1])))


def test_full_udp_queue_counts_dropped_datagrams() -> None:
    traffic = Traffic()
    link = UdpLink(None, None, traffic, outbound_is_up=True)  # type: ignore[arg-type]
    for n in range(udp.QUEUE_SIZE + 3):
        link.enqueue(n, b"x")
    assert link.dropped == traffic.datagrams_dropped == 3
