"""Renderers: golden compact / json / table output of the seed flows; JSON reads back unchanged."""

from __future__ import annotations

import json

from helpers_observe import check_golden, seed_flows

from cilia.observe import render
from cilia.observe.flow import flow_from_json
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
