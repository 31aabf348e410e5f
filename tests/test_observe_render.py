"""Renderers: golden compact / json / table output of the seed flows; JSON reads back unchanged."""

from __future__ import annotations

import json

from helpers_observe import check_golden, seed_flows

from cilia.observe import render
from cilia.observe.flow import L4, DnsInfo, Endpoint, Flow, L7Type, TrafficDirection, Verdict, flow_from_json
from cilia.observe.source import flow_from_record

FLOWS = seed_flows()


def test_golden_compact() -> None:
    check_golden("seed.compact.txt", render.render(FLOWS, "compact"))


def test_golden_json() -> None:
    check_golden("seed.jsonl", render.render(FLOWS, "json"))


def test_golden_table() -> None:
    check_golden("seed.table.txt", render.render(FLOWS, "table"))


def test_json_round_trip() -> None:
    lines = render.render(FLOWS, "json").splitlines()
    assert [flow_from_json(json.loads(line)) for line in lines] == FLOWS
    assert [flow_from_record(json.loads(line)) for line in lines] == FLOWS


def test_agent_ring_record_is_read() -> None:
    """The agent's own flow-ring record (cilia.agent.flows.Flow.to_json) becomes a flow."""
    rec = {
        "seq": 4, "time": 1795000001.5, "verdict": "DROPPED", "drop_reason": 181,
        "drop_reason_desc": "POLICY_DENY", "direction": "egress", "proto": "TCP",
        "source": {"ip": "198.18.0.10", "port": 43210, "identity": 256, "pod": "default/app-a-7d4b9"},
        "destination": {"ip": "198.18.0.20", "port": 80, "identity": 257, "pod": "default/app-b-5c8f2"},
        "match_type": "L3-Only", "endpoint_id": 1,
        "rules": ["CiliumNetworkPolicy default/deny-app-a-to-app-b egressDeny[0]"],
    }  # fmt: skip
    f = flow_from_record(rec)
    assert render.compact(f) == (
        "Nov 18 11:06:41.500: default/app-a-7d4b9:43210 (ID:256) -> default/app-b-5c8f2:80 (ID:257) "
        "policy-verdict:L3-Only EGRESS DENIED (TCP) Policy denied by denylist: "
        "denied by CiliumNetworkPolicy default/deny-app-a-to-app-b egressDeny[0]"
    )


def _dns_flows() -> list[Flow]:
    client = Endpoint(3, 1234, "default", "client-5b8f7-x2k9q", ("k8s:app=client",))
    server = Endpoint(0, 16777217, labels=("cidr:198.19.0.53/32", "reserved:world"))
    base = {
        "time_ns": 1_795_000_001_500_000_000, "verdict": Verdict.FORWARDED,
        "traffic_direction": TrafficDirection.EGRESS, "source": client, "destination": server,
        "ip_source": "198.18.0.10", "ip_destination": "198.19.0.53", "l4": L4(17, 40001, 53),
        "node_name": "node-1",
    }  # fmt: skip
    req = DnsInfo(L7Type.REQUEST, "web.example.test.")
    resp = DnsInfo(L7Type.RESPONSE, "web.example.test.", ips=("198.19.0.5",), ttl=30, rrtypes=("A",),
                   latency_ns=1_200_000)
    refused = DnsInfo(L7Type.RESPONSE, "evil.test.", rcode=5)
    return [
        Flow(seq=1, l7=req, **base),
        Flow(seq=2, l7=resp, **base),
        Flow(seq=3, l7=refused, **{**base, "verdict": Verdict.DROPPED}),
    ]


def test_dns_flows_golden_and_round_trip() -> None:
    """DNS flows of the proxy: hubble's L7 JSON shape, read back unchanged, and its compact words."""
    flows = _dns_flows()
    text = render.render(flows, "json")
    assert [flow_from_json(json.loads(line)) for line in text.splitlines()] == flows
    first = json.loads(text.splitlines()[1])
    assert (first["Type"], first["event_type"], first["l7"]) == ("L7", {"type": 129}, {
        "type": "RESPONSE", "latency_ns": 1_200_000,
        "dns": {"query": "web.example.test.", "ips": ["198.19.0.5"], "ttl": 30, "qtypes": ["A"],
                "rrtypes": ["A"], "observation_source": "proxy"},
    })  # fmt: skip
    check_golden("dns.compact.txt", render.render(flows, "compact"))
    check_golden("dns.jsonl", text)


def test_node_names_are_printed_when_asked() -> None:
    flows = _dns_flows()
    assert "[node-1]" not in render.render(flows, "compact")
    check_golden("dns.nodes.compact.txt", render.render(flows, "compact", node_names=True))
    check_golden("dns.nodes.table.txt", render.render(flows, "table", node_names=True))
