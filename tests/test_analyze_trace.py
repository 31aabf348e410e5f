"""Trace over the seed story and peer resolution (pods, Deployments, IPs, entities), asserting whole
side verdicts."""

from __future__ import annotations

import pytest

from cilia.analyze.cluster import AllowLocalhost, Analysis, EnforcementMode, Options
from cilia.analyze.flow import EndKind, SideState, SideVerdict
from cilia.analyze.manifests import cluster_from_result
from cilia.analyze.peers import PeerError, PortSpec
from cilia.analyze.trace import trace, trace_flow
from cilia.identity.cidr import cidr_identity_labels
from cilia.k8s.loader import load_text
from cilia.policy.types import Direction, DropReason, Key, MatchType, Proto, RuleRef
from tests.helpers_analyze import analysis_of

TCP80 = PortSpec(Proto.TCP, 80)
CNP = "CiliumNetworkPolicy"
DENY = RuleRef(CNP, "default", "deny-app-a-to-app-b", "egressDeny", 0)
ALLOW_FRONTEND = RuleRef(CNP, "default", "allow-frontend-to-app-b", "ingress", 0)
FRONTEND_POLICY = RuleRef(CNP, "default", "allow-frontend-to-app-b", "", -1)  # default deny names the policy


def _ids(a: Analysis) -> dict[str, int]:
    return {
        ep.name.split("/")[1].rsplit("-", 2)[0] if ep.deployment else ep.pod.name: ep.identity
        for ep in a.endpoints
    }


def test_story_deny_side() -> None:
    a = analysis_of("story")
    (flow, *rest) = trace(a, "deployment:default/app-a", "deployment:default/app-b", TCP80).flows
    assert len(rest) == 3 and not flow.allowed
    ids = _ids(a)
    assert flow.egress == SideVerdict(
        Direction.EGRESS,
        flow.src.name,
        SideState.ENFORCED,
        False,
        DropReason.POLICY_DENY,
        MatchType.L3_ONLY,
        Key(ids["app-b"], Direction.EGRESS, 0, 0, 0),
        (DENY,),
        (),
        "denied by CiliumNetworkPolicy default/deny-app-a-to-app-b egressDeny[0] "
        "(a deny always wins over allows)",
    )
    assert flow.ingress.state is SideState.UNENFORCED and flow.ingress.allowed
    assert flow.decided_by is flow.egress


def test_story_frontend_ingress_allow_and_default_deny() -> None:
    a = analysis_of("story")
    ids = _ids(a)
    allowed = trace(a, "deployment:default/app-b", "default/app-a-frontend", TCP80).flows[0]
    assert allowed.allowed
    assert allowed.ingress == SideVerdict(
        Direction.INGRESS,
        "default/app-a-frontend",
        SideState.ENFORCED,
        True,
        DropReason.NONE,
        MatchType.L3_L4,
        Key(ids["app-b"], Direction.INGRESS, Proto.TCP, 80, 16),
        (ALLOW_FRONTEND,),
        (FRONTEND_POLICY,),
        "allowed by CiliumNetworkPolicy default/allow-frontend-to-app-b ingress[0]",
    )
    denied = trace(a, "deployment:default/app-b", "default/app-a-frontend", PortSpec(Proto.TCP, 81)).flows[0]
    assert denied.ingress == SideVerdict(
        Direction.INGRESS,
        "default/app-a-frontend",
        SideState.ENFORCED,
        False,
        DropReason.POLICY_DENIED,
        MatchType.NONE,
        None,
        (),
        (FRONTEND_POLICY,),
        "default deny: no allow rule matches; default deny is on because of CiliumNetworkPolicy "
        "default/allow-frontend-to-app-b",
    )


def test_enforcement_and_localhost_options() -> None:
    never = analysis_of("story", Options(EnforcementMode.NEVER))
    flow = trace(never, "deployment:default/app-a", "deployment:default/app-b", TCP80).flows[0]
    assert flow.allowed and flow.egress.state is SideState.UNENFORCED
    always = analysis_of("no-policy", Options(EnforcementMode.ALWAYS))
    flow = trace(always, "deployment:default/app-a", "deployment:default/app-b", TCP80).flows[0]
    assert (flow.egress.allowed, flow.egress.reason, flow.egress.default_deny_by) == (
        False,
        DropReason.POLICY_DENIED,
        (),
    )
    assert "the enforcement mode (always)" in flow.egress.note
    host_in = trace(always, "entity:host", "deployment:default/app-b", TCP80).flows[0]
    assert host_in.allowed and host_in.ingress.rules == (
        RuleRef("reserved", "", "allow-localhost-ingress", "", -1),
    )
    policy = analysis_of("no-policy", Options(EnforcementMode.ALWAYS, AllowLocalhost.POLICY))
    assert not trace(policy, "entity:host", "deployment:default/app-b", TCP80).allowed


MANIFEST = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 198.18.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: out, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDR: [198.19.0.0/16]
  - toCIDRSet: [{cidr: 198.19.4.0/24, except: [198.19.4.128/25]}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"""


def _manifest_analysis() -> Analysis:
    return Analysis(cluster_from_result(load_text(MANIFEST, "m.yaml")))


def test_ip_peers_resolve_to_pods_cidr_identities_or_world() -> None:
    a = _manifest_analysis()
    (pod,) = a.resolve("198.18.0.10")
    assert (pod.kind, pod.name, pod.ip) == (EndKind.POD, "shop/web", "198.18.0.10")
    assert a.prefixes == ["198.19.0.0/16", "198.19.4.0/24", "198.19.4.128/25"]
    for ip, prefix in [
        ("198.19.4.200", "198.19.4.128/25"),
        ("198.19.4.7", "198.19.4.0/24"),
        ("198.19.9.9", "198.19.0.0/16"),
    ]:
        (end,) = a.resolve(ip)
        assert (end.kind, end.labels) == (EndKind.EXTERNAL, cidr_identity_labels(prefix))
    (world,) = a.resolve("203.0.113.1")
    assert (world.kind, world.identity) == (EndKind.EXTERNAL, 2)


def test_cidr_flows() -> None:
    a = _manifest_analysis()
    src = a.resolve("shop/web")[0]

    def allowed(ip: str, port: int) -> bool:
        return trace_flow(a, src, a.resolve(ip)[0], PortSpec(Proto.TCP, port)).allowed

    assert allowed("198.19.9.9", 22)  # toCIDR 198.19.0.0/16, L3 only
    assert allowed("198.19.4.7", 443)
    assert allowed("198.19.4.200", 443)  # in the except, but still inside the /16 L3 allow
    assert not allowed("203.0.113.1", 443)  # world: egress default deny


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ("shop/w", "is ambiguous: shop/web, shop/web-2"),
        ("shop/db", "no pod shop/db in the manifests (pods there: shop/web, shop/web-2)"),
        ("deployment:shop/web", "no Deployment shop/web in the manifests"),
    ],
)
def test_resolution_errors(peer: str, message: str) -> None:
    with pytest.raises(PeerError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _manifest_analysis().resolve(peer)


def test_exact_name_wins_over_prefix() -> None:
    assert [e.name for e in _manifest_analysis().resolve("shop/web")] == ["shop/web"]


def test_entities() -> None:
    a = _manifest_analysis()
    ends = {
        name: a.resolve(f"entity:{name}")[0] for name in ("host", "world", "remote-node", "kube-apiserver")
    }
    assert {n: (e.kind, e.identity) for n, e in ends.items()} == {
        "host": (EndKind.NODE, 1),  # the local node: its host endpoint
        "world": (EndKind.ENTITY, 2),
        "remote-node": (EndKind.ENTITY, 6),
        "kube-apiserver": (EndKind.ENTITY, 7),
    }


SERVICES = """
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: shop, labels: {app: shop}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: data, labels: {app: db}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec: {selector: {app: db}, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: shop}
spec: {ports: [{port: 443}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: legacy, namespace: shop}
subsets: [{addresses: [{ip: 198.19.7.7}], ports: [{port: 443}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: to-services, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: shop}}
  egress:
  - toServices: [{k8sService: {serviceName: db, namespace: data}}]
  - toServices: [{k8sService: {serviceName: legacy}}]
"""


def test_to_services_resolve_to_pods_and_backend_addresses() -> None:
    a = Analysis(cluster_from_result(load_text(SERVICES, "s.yaml")))
    assert a.prefixes == ["198.19.7.7/32"]
    (backend,) = a.resolve("198.19.7.7")
    assert backend.labels == cidr_identity_labels("198.19.7.7/32")
    app = a.resolve("shop/app")[0]
    verdicts = {
        peer: trace_flow(a, app, a.resolve(peer)[0], PortSpec(Proto.TCP, 5432)).allowed
        for peer in ("data/db", "198.19.7.7", "198.19.7.8", "entity:world")
    }
    assert verdicts == {"data/db": True, "198.19.7.7": True, "198.19.7.8": False, "entity:world": False}


def test_authentication_required_is_reported() -> None:
    text = """
apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: a}}
spec: {containers: [{name: c}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: mtls}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
  - fromEntities: [world]
    authentication: {mode: required}
"""
    a = Analysis(cluster_from_result(load_text(text, "auth.yaml")))
    flow = trace(a, "entity:world", "default/a", TCP80).flows[0]
    assert (flow.allowed, flow.ingress.reason) == (False, DropReason.AUTH_REQUIRED)
    assert flow.ingress.note == (
        "allowed by CiliumNetworkPolicy default/mtls ingress[0] only after mutual authentication, "
        "which this node does not do"
    )
