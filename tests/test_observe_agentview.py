"""The flow pipeline on a real agent in this process (sim datapath, SQLite store, the seed story
applied through the CLI): the agent's state names the flows, and the pipeline the agent's flow sink
would be logs them where ``cilia observe`` finds them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from helpers_agent import SimAgent, running_agent
from helpers_observe import TCP, raw_event

from cilia.datapath.bpf.cookies import CookieTable
from cilia.datapath.sim import policy_lookup
from cilia.observe.agentview import AgentNodeView, pipeline_for
from cilia.observe.flow import Verdict
from cilia.observe.pipeline import FlowPipeline
from cilia.policy.types import Direction, DropReason
from tests.conftest import SEED


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimAgent]:
    with running_agent(tmp_path_factory.mktemp("agent")) as s:
        s.cli("apply", "-f", str(SEED / "app-a.yaml"), "-f", str(SEED / "app-b.yaml"))
        s.cli("apply", "--fix", "-f", str(SEED / "deny-a-to-b.yaml"))
        yield s


def pods(sim: SimAgent) -> dict[str, tuple[str, int, int]]:
    """app label -> (ip, endpoint id, identity) of one pod each."""
    out = {}
    for e in sim.agent.reconciler.endpoints:
        out[e.pod.name.split("-")[0] + "-" + e.pod.name.split("-")[1]] = (e.ip, e.id, e.identity)
    return out


def deny_event(sim: SimAgent, cookies: CookieTable) -> bytes:
    p = pods(sim)
    (a_ip, a_ep, a_id), (b_ip, _, b_id) = p["app-a"], p["app-b"]
    v = policy_lookup(sim.agent.reconciler.policy.mapstate(a_id), b_id, int(Direction.EGRESS), TCP, 80)
    assert not v.allowed and v.entry is not None
    return raw_event(ts_ns=1, ep_id=a_ep, src_identity=a_id, dst_identity=b_id, src=a_ip, dst=b_ip,
                     sport=40000, dport=80, reason=int(v.reason), proto=TCP, direction=1,
                     match_type=int(v.match_type), cookie=cookies.cookie_for(v.entry.rules))  # fmt: skip


def test_agent_state_names_the_flow(sim: SimAgent) -> None:
    view = AgentNodeView(sim.agent)
    v = view()
    assert v is view()  # unchanged state: the cached view
    a_ip = pods(sim)["app-a"][0]
    assert (v.endpoints[a_ip].namespace, v.endpoints[a_ip].pod_name.startswith("app-a-"), v.node_name) == (
        "default",
        True,
        "cilia-node-0",
    )
    cookies = CookieTable(None)
    flow = FlowPipeline(view, cookies.rules_for, clock_offset_ns=0).ingest(deny_event(sim, cookies))
    assert (flow.verdict, flow.drop_reason, flow.source.pod_name[:6], flow.destination.pod_name[:6]) == (
        Verdict.DROPPED,
        DropReason.POLICY_DENY,
        "app-a-",
        "app-b-",
    )
    ((ref),) = flow.egress_denied_by
    assert (ref.kind, ref.namespace, ref.name, ref.rule, ref.revision) == (
        "CiliumNetworkPolicy",
        "default",
        "deny-app-a-to-app-b",
        "egressDeny[0]",
        v.revision,
    )
    assert "k8s:app=app-a" in flow.source.labels


def test_a_cluster_node_names_its_flows_as_node_list_does(sim: SimAgent) -> None:
    """A node of ``cilia up --nodes N`` runs with ``node_name`` node-<i>: its flows carry that name
    (``cilia node list``, ``get pods -o wide``), not the single node's ``cilia-node-<i>``."""
    member = type("Member", (), {"cfg": replace(sim.agent.cfg, node_name="node-2", node_index=2),
                                 "reconciler": sim.agent.reconciler, "_lock": sim.agent._lock})()
    names = (AgentNodeView(member)().node_name, AgentNodeView(sim.agent)().node_name)
    assert names == ("node-2", "cilia-node-0")
    cookies = CookieTable(None)
    flow = FlowPipeline(AgentNodeView(member), cookies.rules_for, clock_offset_ns=0).ingest(
        deny_event(sim, cookies))
    assert flow.node_name == "node-2"


def test_pipeline_for_logs_where_observe_reads(sim: SimAgent) -> None:
    cookies = CookieTable(None)
    pipe = pipeline_for(sim.agent)
    pipe.rules_for = cookies.rules_for  # the sim datapath has no cookie table of its own
    flow = pipe.ingest(deny_event(sim, cookies))
    pipe.close()
    out = sim.cli("observe", "--from-log", "--verdict", "DROPPED")
    assert out.splitlines()[-1].endswith(
        "Policy denied by denylist: denied by CiliumNetworkPolicy default/deny-app-a-to-app-b egressDeny[0]"
    )
    assert f"{flow.source.pod}:40000 (ID:{flow.source.identity})" in out


def test_metrics_from_the_agent(sim: SimAgent) -> None:
    import urllib.request

    from cilia.observe.agentview import refresh_metrics, serve_metrics
    from cilia.observe.metrics import NodeMetrics

    m = NodeMetrics()
    refresh_metrics(sim.agent, m)
    n_eps = len(sim.agent.reconciler.endpoints)
    # app-a pods: egress enforced by the deny policy; app-b pods: nothing enforced
    assert (
        m.value("cilium_policy"),
        m.value("cilium_policy_endpoint_enforcement_status", {"enforcement": "egress"}),
        m.value("cilium_policy_endpoint_enforcement_status", {"enforcement": "none"}),
        m.value("cilia_policy_map_capacity"),
    ) == (1, 2, n_eps - 2, 16384)
    assert m.value("cilium_policy_max_revision") == sim.agent.reconciler.policy.repo.revision > 0
    assert m.value("cilium_fqdn_active_ips") == 0  # no toFQDNs lookups on this node
    server, stop = serve_metrics(sim.agent, m, "127.0.0.1:0", interval_s=0.05)
    try:
        port = server.server_address[1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        stop.set()
    assert "cilium_policy 1.0" in body


def test_local_pods_carry_their_deployment_as_workload(sim: SimAgent) -> None:
    from cilia.observe.agentview import AgentNodeView

    view = AgentNodeView(sim.agent)()
    owners = {ep.pod_name.rsplit("-", 2)[0]: ep.workloads for ep in view.endpoints.values()}
    assert owners["app-a"] == (("Deployment", "app-a"),) and owners["app-b"] == (("Deployment", "app-b"),)
