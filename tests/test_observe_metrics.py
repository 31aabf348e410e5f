"""Metrics: counters match the flows fed; kernel counters replace the flow-based packet counts;
the registry is served over HTTP."""

from __future__ import annotations

import urllib.request

from helpers_observe import seed_flows

from cilia.datapath.maps.metrics import MetricRow
from cilia.observe.metrics import NodeMetrics

FLOWS = seed_flows()


def test_counters_match_the_flows_fed() -> None:
    m = NodeMetrics()
    for f in FLOWS:
        m.observe(f)
    drops = {
        ("Policy denied by denylist", "egress"): 2,
        ("Policy denied", "ingress"): 1,
        ("Policy denied", "egress"): 1,
    }
    got = {k: m.value("cilium_drop_count_total", {"reason": k[0], "direction": k[1]}) for k in drops}
    assert got == drops
    assert m.value("cilium_forward_count_total", {"direction": "egress"}) == 3
    assert m.value("cilium_forward_count_total", {"direction": "ingress"}) == 1
    assert m.value("hubble_policy_verdicts_total", {"direction": "egress", "match": "L3-Only",
                                                    "action": "dropped"}) == 2  # fmt: skip
    assert m.value("hubble_policy_verdicts_total", {"direction": "ingress", "match": "none",
                                                    "action": "dropped"}) == 1  # fmt: skip
    assert m.value("hubble_drop_total", {"reason": "POLICY_DENY", "protocol": "TCP"}) == 2
    assert sum(m.value("hubble_flows_processed_total", {"verdict": v, "type": t})
               for v, t in (("FORWARDED", "PolicyVerdict"), ("DROPPED", "Drop"))) == len(FLOWS)  # fmt: skip


def test_kernel_counters_and_node_state() -> None:
    m = NodeMetrics()
    m.observe(FLOWS[0])
    m.set_datapath_counters([
        MetricRow("egress", "dropped", "Policy denied", 40, 2400),
        MetricRow("egress", "forwarded", "", 1000, 90000),
        MetricRow("egress", "forwarded", "reply", 500, 30000),
        MetricRow("ingress", "audited", "", 3, 180),
        MetricRow("", "events lost", "", 2, 0),
        MetricRow("", "events suppressed", "", 17, 0),
    ])  # fmt: skip
    assert m.value("cilium_drop_count_total", {"reason": "Policy denied", "direction": "egress"}) == 40
    assert (
        m.value("cilium_drop_count_total", {"reason": "Policy denied by denylist", "direction": "egress"})
        == 0
    )
    assert m.value("cilium_forward_count_total", {"direction": "egress"}) == 1500
    assert m.value("cilium_forward_count_total", {"direction": "ingress"}) == 3
    assert (m.value("cilia_events_lost"), m.value("cilia_events_suppressed")) == (2, 17)
    m.set_policy_count(3)
    m.set_enforcement({"both": 2, "egress": 1})
    m.observe_regeneration(0.004)
    m.observe_regeneration(0.2, ok=False)
    m.set_map_fill({1: 100, 2: 4096}, 16384)
    assert (
        m.value("cilium_policy"),
        m.value("cilium_policy_endpoint_enforcement_status", {"enforcement": "both"}),
        m.value("cilium_policy_endpoint_enforcement_status", {"enforcement": "none"}),
        m.value(
            "cilium_endpoint_regeneration_time_stats_seconds_count", {"scope": "total", "status": "success"}
        ),
        m.value(
            "cilium_endpoint_regeneration_time_stats_seconds_count", {"scope": "total", "status": "failure"}
        ),
        m.value("cilia_policy_map_entries", {"endpoint": "2"}),
        m.value("cilia_bpf_map_pressure", {"map_name": "cilia_policy"}),
    ) == (3, 2, 0, 1, 1, 4096, 0.25)


def test_serve() -> None:
    m = NodeMetrics()
    m.observe(FLOWS[0])
    server = m.serve("127.0.0.1:0")
    try:
        port = server.server_address[1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    assert 'cilium_drop_count_total{direction="egress",reason="Policy denied by denylist"} 1.0' in body
    assert 'hubble_policy_verdicts_total{action="dropped",direction="egress",match="L3-Only"} 1.0' in body
