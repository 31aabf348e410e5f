"""Policy audit mode in the agent (sim datapath, SQLite store, pods and policies through the CLI): an
annotated policy or an audited namespace never reaches the datapath, the flow pipeline reports what
it would drop as AUDIT naming it, and ``POST /v1/audit`` switches node / namespace audit live and
persists it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from helpers_agent import SimAgent, running_agent
from helpers_observe import TCP, raw_event

from cilia.datapath.maps.events import F_ALLOWED
from cilia.datapath.sim import policy_lookup
from cilia.observe.agentview import AgentNodeView
from cilia.observe.flow import Verdict
from cilia.observe.pipeline import FlowPipeline
from cilia.policy.repository import ResourceKey
from cilia.policy.types import Direction, DropReason
from tests.conftest import SEED

AUDITED_DENY = {
    "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "audit-deny-a-to-b", "namespace": "default",
                 "annotations": {"cilia.io/audit": "true"}},
    "spec": {"endpointSelector": {"matchLabels": {"app": "app-a"}},
             "egressDeny": [{"toEndpoints": [{"matchLabels": {"app": "app-b"}}]}]},
}  # fmt: skip


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimAgent]:
    with running_agent(tmp_path_factory.mktemp("agent")) as s:
        s.cli("apply", "-f", str(SEED / "app-a.yaml"), "-f", str(SEED / "app-b.yaml"))
        s.apply("audited", AUDITED_DENY)
        yield s


def kernel_allows_a_to_b(sim: SimAgent) -> bool:
    ids = sim.ids()
    rec = sim.agent.reconciler
    ms = rec.applied[ids["app-a"][1]]  # what the datapath holds for app-a's endpoint
    return policy_lookup(ms, ids["app-b"][2], int(Direction.EGRESS), TCP, 80).allowed


def forwarded_a_to_b(sim: SimAgent) -> bytes:
    (a_ip, a_ep, a_id), (b_ip, _, b_id) = sim.ids()["app-a"], sim.ids()["app-b"]
    return raw_event(ts_ns=1, ep_id=a_ep, src_identity=a_id, dst_identity=b_id, src=a_ip, dst=b_ip,
                     sport=40000, dport=80, proto=TCP, direction=1, flags=F_ALLOWED)  # fmt: skip


def test_annotated_policy_is_reported_not_enforced(sim: SimAgent) -> None:
    rec = sim.agent.reconciler
    resource = ResourceKey("CiliumNetworkPolicy", "default", "audit-deny-a-to-b")
    assert (list(rec.policy.audited), list(rec.policy.repo)) == ([resource], [])
    assert kernel_allows_a_to_b(sim)
    flow = FlowPipeline(AgentNodeView(sim.agent), clock_offset_ns=0).ingest(forwarded_a_to_b(sim))
    assert (flow.verdict, flow.drop_reason) == (Verdict.AUDIT, DropReason.POLICY_DENY)
    assert [(r.kind, r.namespace, r.name, r.rule) for r in flow.egress_denied_by] == [
        ("CiliumNetworkPolicy", "default", "audit-deny-a-to-b", "egressDeny[0]")
    ]
    a = next(e for e in sim.client.endpoints() if e["pod"].startswith("default/app-a-"))
    assert (a["policy"]["policies"], a["policy"]["audited"]) == (
        ["CiliumNetworkPolicy/default/audit-deny-a-to-b (audit mode)"],
        ["CiliumNetworkPolicy/default/audit-deny-a-to-b"],
    )


def test_namespace_audit_live_and_persisted(sim: SimAgent) -> None:
    rec = sim.agent.reconciler
    sim.apply("enforced", {**AUDITED_DENY, "metadata": {"name": "deny-a-to-b", "namespace": "default"}})
    try:
        assert not kernel_allows_a_to_b(sim)  # the non-annotated copy is enforced
        assert sim.client.set_audit(False, ["default"]) == {"node": False, "namespaces": ["default"]}
        assert kernel_allows_a_to_b(sim)
        assert sorted(r.name for r in rec.policy.audited) == ["audit-deny-a-to-b", "deny-a-to-b"]
        assert json.loads((sim.cfg.state_dir / "audit.json").read_text()) == {
            "node": False,
            "namespaces": ["default"],
        }
        assert sim.client.audit() == {"node": False, "namespaces": ["default"]}
        assert sim.client.set_audit(True) == {"node": True, "namespaces": []}
        assert not kernel_allows_a_to_b(sim)  # the datapath's node flag lets it through, not the map
    finally:
        sim.client.set_audit(False)
        sim.cli("delete", "-f", str(sim.base / "enforced.yaml"))


def test_namespace_annotation_audits_its_policies(sim: SimAgent) -> None:
    rec = sim.agent.reconciler
    sim.apply("enforced", {**AUDITED_DENY, "metadata": {"name": "deny-a-to-b", "namespace": "default"}})
    ns = {"apiVersion": "v1", "kind": "Namespace",
          "metadata": {"name": "default", "annotations": {"cilia.io/audit": "true"}}}  # fmt: skip
    try:
        assert not kernel_allows_a_to_b(sim)
        sim.apply("ns", ns)
        assert kernel_allows_a_to_b(sim)
        assert rec.annotated_namespaces == {"default"}
        sim.apply("ns", {**ns, "metadata": {"name": "default"}})
        assert not kernel_allows_a_to_b(sim)
    finally:
        sim.cli("delete", "-f", str(sim.base / "enforced.yaml"))
