"""Hubble's ``source_service`` / ``destination_service`` on flows and ``--service`` /
``--from-service`` / ``--to-service`` (issue 14 item 7), and ``cilium_policy_implementation_delay``
measured by a real agent (sim datapath) from the policy's store event to the end of its datapath sync."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers_agent import SimAgent, running_agent
from helpers_observe import CLIENT, EPOCH_OFFSET_NS, TCP, A, B, check_golden, seed_node
from typer.testing import CliRunner

from cilia.cli.main import app
from cilia.observe import render
from cilia.observe.agentview import AgentNodeView, pipeline_for
from cilia.observe.enrich import NodeView
from cilia.observe.filters import FilterError, FlowFilter
from cilia.observe.flow import Flow, Service, flow_from_json
from cilia.observe.log import FlowLog
from cilia.observe.metrics import NodeMetrics
from cilia.observe.pipeline import FlowPipeline
from cilia.policy.types import Direction
from tests.conftest import SEED

CLUSTER_IP = "198.18.255.7"
APP_B = Service("app-b", "default")


def service_flows() -> list[Flow]:
    """Flows of the seed node whose view knows Service default/app-b (ClusterIP:80 → app-b:80) and a
    reverse NAT entry of one translated connection (client:43210 → app-b:80)."""
    node = seed_node()
    rev = {(CLIENT, B, 43210, 80, TCP): (CLUSTER_IP, 80)}

    def view() -> NodeView:
        return replace(node.view(), services={(CLUSTER_IP, 80, TCP): APP_B},
                       frontend_of=lambda *t: rev.get(t))  # fmt: skip

    p = FlowPipeline(view, node.cookies.rules_for, clock_offset_ns=EPOCH_OFFSET_NS)
    eg, ing = Direction.EGRESS, Direction.INGRESS
    events = [
        node.event(CLIENT, B, TCP, 80, eg),  # translated: the client addressed the ClusterIP
        node.event(CLIENT, B, TCP, 80, ing),  # the same connection at the backend
        node.event(CLIENT, B, TCP, 80, eg, sport=43999),  # straight to the pod: no Service
        node.event(A, B, TCP, 80, eg),  # a → b, denied, not through the Service
        node.event(CLIENT, CLUSTER_IP, TCP, 80, eg, sport=44000),  # an untranslated ClusterIP destination
    ]
    return [p.ingest(e) for e in events]


FLOWS = service_flows()


def test_flows_carry_the_service_they_were_addressed_to() -> None:
    got = [(f.seq, f.source_service, f.destination_service) for f in FLOWS]
    assert got == [(1, None, APP_B), (2, None, APP_B), (3, None, None), (4, None, None), (5, None, APP_B)]
    j = FLOWS[0].to_json()
    assert j["destination_service"] == {"name": "app-b", "namespace": "default"}
    assert "source_service" not in j
    assert [flow_from_json(f.to_json()) for f in FLOWS] == FLOWS


def test_a_frontend_address_names_its_side_as_hubble_prints_it() -> None:
    view = replace(seed_node().view(), services={(CLUSTER_IP, 80, TCP): APP_B})
    node = seed_node()
    p = FlowPipeline(lambda: view, node.cookies.rules_for, clock_offset_ns=EPOCH_OFFSET_NS)
    f = p.ingest(node.event(CLIENT, CLUSTER_IP, TCP, 80, Direction.EGRESS))
    assert (f.source_service, f.destination_service) == (None, APP_B)
    # a side that is no pod is printed by its Service, as hubble's hostname does
    assert " -> default/app-b:80 " in render.compact(f)
    udp = p.ingest(node.event(CLIENT, CLUSTER_IP, 17, 80, Direction.EGRESS))
    assert udp.destination_service is None  # the frontend is 80/TCP only


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("observe-services")
    log = FlowLog(base / "state")
    for f in FLOWS:
        log.append(f)
    log.close()
    return base


def observe(base: Path, *args: str, code: int = 0) -> str:
    res = CliRunner().invoke(app, ["observe", *args, "--state-dir", str(base / "state"),
                                   "--run-dir", str(base / "run"), "--from-log"])
    assert res.exit_code == code, res.output
    return res.stdout if code == 0 else res.stderr


@pytest.mark.parametrize("args, want", [
    (("--to-service", "default/app-b"), [1, 2, 5]),
    (("--to-service", "app-b"), [1, 2, 5]),  # the namespace defaults to default, as in hubble
    (("--to-service", "default/app"), [1, 2, 5]),  # a name prefix
    (("--to-service", "default/"), [1, 2, 5]),  # a whole namespace
    (("--to-service", "other/app-b"), []),
    (("--from-service", "default/app-b"), []),
    (("--service", "app-b", "--traffic-direction", "ingress"), [2]),
    (("--verdict", "FORWARDED", "--not", "--to-service", "app-b"), [3]),
])
def test_service_filters(logged: Path, args: tuple[str, ...], want: list[int]) -> None:
    assert [json.loads(x)["seq"] for x in observe(logged, *args, "-o", "json").splitlines()] == want


def test_service_outputs_golden(logged: Path) -> None:
    check_golden("services.compact.txt", observe(logged))
    check_golden("services.jsonl", observe(logged, "-o", "json"))
    pb = json.loads(observe(logged, "-o", "jsonpb", "--to-service", "app-b").splitlines()[0])
    assert pb["flow"]["destination_service"] == {"name": "app-b", "namespace": "default"}
    # pods are named by their pod; the ClusterIP side by its Service, as hubble's table and dict
    table = observe(logged, "-o", "table").splitlines()
    assert ["default/app-b:80" in row for row in table[1:]] == [False] * 4 + [True]
    assert "DESTINATION: default/app-b:80 (world" in observe(logged, "-o", "dict")


def test_bad_service_filter() -> None:
    with pytest.raises(FilterError, match="--to-service '/app-b'"):
        FlowFilter.build(to_services=["/app-b"])


SERVICE = """apiVersion: v1
kind: Service
metadata: {name: obsvc-b, namespace: default}
spec:
  selector: {app: app-b}
  ports: [{port: 8080, targetPort: 80, protocol: TCP}]
"""
KNP = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: obsvc-knp, namespace: default}
spec:
  podSelector: {matchLabels: {app: app-a}}
  policyTypes: [Ingress]
"""


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimAgent, NodeMetrics]]:
    base = tmp_path_factory.mktemp("agent-svc")
    with running_agent(base) as s:
        metrics = NodeMetrics()
        pipeline_for(s.agent, metrics)  # wires the agent's policy delays into the metrics
        s.cli("apply", "-f", str(SEED / "app-a.yaml"), "-f", str(SEED / "app-b.yaml"))
        (base / "svc.yaml").write_text(SERVICE)
        s.cli("apply", "-f", str(base / "svc.yaml"))
        yield s, metrics


def test_the_agent_view_knows_its_services(sim: tuple[SimAgent, NodeMetrics]) -> None:
    s, _ = sim
    svc = next(v for v in s.agent.reconciler.services.views if v.name == "obsvc-b")
    view = AgentNodeView(s.agent)()
    assert view.services[(svc.cluster_ip, 8080, TCP)] == Service("obsvc-b", "default")
    assert view.frontend_of is None  # the simulated datapath translates nothing


def test_policy_implementation_delay_is_measured(sim: tuple[SimAgent, NodeMetrics],
                                                 tmp_path: Path) -> None:
    s, metrics = sim
    before = list(s.agent.reconciler.policy_delay.recent)
    s.cli("apply", "--fix", "-f", str(SEED / "deny-a-to-b.yaml"))
    (tmp_path / "knp.yaml").write_text(KNP)
    s.cli("apply", "-f", str(tmp_path / "knp.yaml"))
    new = list(s.agent.reconciler.policy_delay.recent)[len(before):]
    assert {src for src, _ in new} == {"custom-resource", "k8s"}
    assert all(0 <= sec < 30 for _, sec in new)
    cr = {"source": "custom-resource"}
    assert metrics.value("cilium_policy_implementation_delay_count", cr) >= 1
    assert metrics.value("cilium_policy_implementation_delay_count", {"source": "k8s"}) == 1
    assert metrics.value("cilium_policy_implementation_delay_sum", cr) > 0
    assert 'cilium_policy_implementation_delay_bucket{le="0.005",source="k8s"}' in metrics.render()


def test_the_reverse_nat_table_is_asked_about_backends_only() -> None:
    from cilia.observe.agentview import _backend_lookup

    asked: list[tuple[str, str, int, int, int]] = []

    def rev_nat(*t: object) -> tuple[str, int] | None:
        asked.append(t)  # type: ignore[arg-type]
        return (CLUSTER_IP, 80)

    lookup = _backend_lookup(rev_nat, {(B, 80)})
    assert lookup is not None and _backend_lookup(rev_nat, set()) is None
    assert lookup(CLIENT, B, 43210, 80, TCP) == (CLUSTER_IP, 80)
    assert lookup(CLIENT, A, 43210, 80, TCP) is None and lookup(CLIENT, B, 43210, 81, TCP) is None
    assert asked == [(CLIENT, B, 43210, 80, TCP)]
