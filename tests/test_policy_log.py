"""``spec.log`` (Cilium 1.18, cilium/cilium#39902): validated as the CRD does (32 characters, no
control/format characters), carried on every rule reference of its rule, and shown as Hubble's
``policy_log`` on flows — offline (``cilia trace`` JSON and text) and from the datapath's events
(the flow pipeline). Cilium 1.18 fills it for allowed flows only (cilium/cilium#42044); cilia also
for drops a deny rule decided; a default-deny drop (no rule decided) has none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cilia.analyze.cluster import analyse_paths
from cilia.analyze.peers import parse_port
from cilia.analyze.trace import render_text, trace
from cilia.identity.cidr import cidr_identity_labels
from cilia.k8s import api
from cilia.k8s.validate import validate_paths
from cilia.observe.flow import flow_from_json
from cilia.observe.pipeline import FlowPipeline
from cilia.policy.translate import translate
from cilia.policy.types import Direction, DropReason
from tests.helpers_observe import EPOCH_OFFSET_NS, TCP, Node

CLIENT_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "client", "namespace": "default", "labels": {"app": "client"}},
    "spec": {"containers": [{"name": "c", "image": "curl"}]},
    "status": {"podIP": "198.18.0.10"},
}
WEB_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "w", "image": "nginx", "ports": [{"containerPort": 80}]}]},
    "status": {"podIP": "198.18.0.11"},
}


def cnp(name: str, spec: dict | None = None, specs: list[dict] | None = None) -> dict:
    doc: dict = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                 "metadata": {"name": name, "namespace": "default"}}
    if spec is not None:
        doc["spec"] = spec
    if specs is not None:
        doc["specs"] = specs
    return doc


CLIENT = {"matchLabels": {"app": "client"}}
WEB = {"matchLabels": {"app": "web"}}
CLIENT_OUT = cnp("client-out", {"endpointSelector": CLIENT, "log": {"value": "client-out"},
                                "egress": [{"toEndpoints": [WEB]}, {"toCIDR": ["198.19.0.0/16"]}],
                                "egressDeny": [{"toCIDR": ["198.19.9.0/24"]}]})
WEB_IN = cnp("web-in", specs=[
    {"endpointSelector": WEB, "log": {"value": "web-in"}, "ingress": [{"fromEndpoints": [CLIENT]}]},
    {"endpointSelector": WEB, "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "other"}}]}]},
])


def write(tmp: Path, *docs: dict) -> Path:
    path = tmp / "m.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ({"value": "audit me, 32 characters at most"}, []),
        ({}, []),
        ({"value": "ünïcödé ✓ is printable"}, []),
        ({"value": "x" * 33}, [("spec.log.value", "Too long: may not be longer than 32")]),
        ({"value": "tab\there"},
         [("spec.log.value",
           "Invalid value: \"tab\\there\": spec.log.value in body should match '^\\PC*$'")]),
        ({"value": 5},
         [("spec.log.value", 'Invalid value: "integer": spec.log.value in body must be of type string: '
           '"integer"')]),
        ({"val": "x"}, [("spec.log.val", 'unknown field "spec.log.val"')]),
    ],
)
def test_log_is_validated_as_the_crd_does(tmp_path: Path, log: dict, expected: list) -> None:
    doc = cnp("p", {"endpointSelector": CLIENT, "egress": [{"toEndpoints": [WEB]}], "log": log})
    report = validate_paths([write(tmp_path, doc)])
    assert [(e.path, e.message) for e in report.errors] == expected


def test_specs_each_have_their_own_log(tmp_path: Path) -> None:
    doc = cnp("p", specs=[
        {"endpointSelector": CLIENT, "egress": [{"toEndpoints": [WEB]}], "log": {"value": "a"}},
        {"endpointSelector": WEB, "ingress": [{}], "log": {"value": "x" * 40}},
    ])
    report = validate_paths([write(tmp_path, doc)])
    assert [(e.path, e.message) for e in report.errors] == [
        ("specs[1].log.value", "Too long: may not be longer than 32")]


# --------------------------------------------------------------------------- translation


def test_every_reference_of_a_rule_carries_its_log() -> None:
    rules = translate(api.CiliumNetworkPolicy.model_validate(WEB_IN))
    assert [(r.ref.spec_index, r.ref.log, [e.ref.log for e in r.entries]) for r in rules] == [
        (0, "web-in", ["web-in"]), (1, "", [""])]


# --------------------------------------------------------------------------- offline trace


def test_trace_shows_the_policy_log_of_the_deciding_rules(tmp_path: Path) -> None:
    analysis = analyse_paths([write(tmp_path, CLIENT_POD, WEB_POD, CLIENT_OUT, WEB_IN)])
    port = parse_port("80/TCP")

    both = trace(analysis, "default/client", "default/web", port)
    assert both.allowed and both.flows[0].policy_log == ("client-out", "web-in")
    out = both.to_dict()["flows"][0]
    assert out["policy_log"] == ["client-out", "web-in"]
    assert out["egress"]["rules"][0]["log"] == "client-out"
    assert "  policy log: client-out, web-in\n" in render_text(both)

    denied = trace(analysis, "default/client", "198.19.9.1", port)  # the egressDeny decides
    assert not denied.allowed and denied.to_dict()["flows"][0]["policy_log"] == ["client-out"]

    default_deny = trace(analysis, "default/client", "198.20.0.1", port)  # no rule decided
    flow = default_deny.to_dict()["flows"][0]
    assert not default_deny.allowed and "policy_log" not in flow
    assert "policy log" not in render_text(default_deny)


# --------------------------------------------------------------------------- flows from the datapath


def test_flows_carry_policy_log_for_allows_and_rule_drops() -> None:
    node = Node()
    node.add_pod("client", {"app": "client"}, "198.18.0.10")
    node.add_pod("web", {"app": "web"}, "198.18.0.11")
    node.apply(yaml.safe_dump(CLIENT_OUT))
    node.apply(yaml.safe_dump(WEB_IN))
    p = FlowPipeline(node.view, node.cookies.rules_for, clock_offset_ns=EPOCH_OFFSET_NS)
    eg, ing = Direction.EGRESS, Direction.INGRESS

    allowed_out = p.ingest(node.event("198.18.0.10", "198.18.0.11", TCP, 80, eg))
    allowed_in = p.ingest(node.event("198.18.0.10", "198.18.0.11", TCP, 80, ing))
    assert (allowed_out.policy_log, allowed_in.policy_log) == (("client-out",), ("web-in",))
    js = allowed_out.to_json()
    assert js["policy_log"] == ["client-out"]
    assert flow_from_json(json.loads(json.dumps(js))) == allowed_out
    # a drop decided by the egressDeny rule: cilia names its log (Cilium 1.18 does not)
    denied_id = node.alloc.allocate(cidr_identity_labels("198.19.9.0/24"))
    node.engine.add_identity(denied_id, node.alloc.lookup(denied_id))
    node.world_id = denied_id  # addresses outside the pods now have the 198.19.9.0/24 identity
    denied = p.ingest(node.event("198.18.0.10", "198.19.9.1", TCP, 80, eg))
    assert (denied.drop_reason, denied.policy_log) == (DropReason.POLICY_DENY, ("client-out",))
    # a default-deny drop: no rule decided, no log
    other = node.add_pod("other", {"app": "nobody"}, "198.18.0.12")
    dropped = p.ingest(node.event(other.ip, "198.18.0.11", TCP, 80, ing))
    assert dropped.dropped and dropped.policy_log == () and "policy_log" not in dropped.to_json()
