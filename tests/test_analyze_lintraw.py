"""Lint rules over policy objects alone (CL006, CL009, CL010, CL011)."""

from __future__ import annotations

from cilia.analyze.findings import Finding
from cilia.analyze.lintraw import (
    deny_only_default_deny,
    deprecated_requires,
    direction_wording,
    endpoint_selector_namespace,
    icmp_type_zero,
    l7_rules,
)
from cilia.analyze.policydocs import parse_policies
from cilia.k8s.loader import load_paths, load_text
from tests.conftest import SEED


def _pol(text: str):
    result = load_text(text, "p.yaml")
    assert not result.errors
    (pol,) = parse_policies(result.documents)
    return pol


CNP_HEAD = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: {name}
  namespace: prod
spec:
  endpointSelector:
    matchLabels:
      role: backend
"""


def test_deny_only_turns_on_default_deny() -> None:
    pol = _pol(
        CNP_HEAD.format(name="cut-db")
        + "  egressDeny:\n  - toEndpoints:\n    - matchLabels:\n        role: db\n"
    )
    assert list(deny_only_default_deny(pol)) == [
        Finding(
            "CL006",
            "p.yaml",
            10,
            3,
            "CiliumNetworkPolicy/prod/cut-db",
            "spec.egressDeny",
            "this egressDeny-only rule also switches the pods it selects (role=backend) into egress default "
            "deny: every egress flow that no other policy allows is dropped, not just the denied peers",
            "if only the named peers should be cut, add `enableDefaultDeny: {egress: false}` to the rule; "
            "otherwise add egress allows for the traffic these pods need",
        )
    ]


def test_deny_only_with_default_deny_off_or_allow_is_fine() -> None:
    off = CNP_HEAD.format(name="a") + (
        "  enableDefaultDeny:\n    egress: false\n  egressDeny:\n  - toEndpoints:\n    - {}\n"
    )
    with_allow = (
        CNP_HEAD.format(name="b")
        + "  egress:\n  - toEndpoints:\n    - {}\n  egressDeny:\n  - toCIDR:\n    - 198.19.0.0/16\n"
    )
    assert list(deny_only_default_deny(_pol(off))) == []
    assert list(deny_only_default_deny(_pol(with_allow))) == []


def test_deprecated_requires() -> None:
    pol = _pol(
        CNP_HEAD.format(name="req")
        + "  ingress:\n  - fromEndpoints:\n    - {}\n"
        + "  - fromRequires:\n    - matchLabels:\n        env: prod\n"
    )
    (f,) = deprecated_requires(pol)
    assert (f.rule, f.line, f.column, f.path) == ("CL009", 13, 5, "spec.ingress[1].fromRequires")
    assert "deprecated since Cilium 1.17" in f.message


def test_endpoint_selector_namespace() -> None:
    text = (
        CNP_HEAD.format(name="ns").replace(
            "      role: backend\n",
            "      role: backend\n      k8s:io.kubernetes.pod.namespace: dev\n"
            "      io.kubernetes.pod.namespace: prod\n",
        )
        + "  ingress:\n  - {}\n"
    )
    (f,) = endpoint_selector_namespace(_pol(text))
    assert (f.rule, f.line, f.path) == (
        "CL010",
        10,
        "spec.endpointSelector.matchLabels.k8s:io.kubernetes.pod.namespace",
    )
    assert "Cilium overwrites it with the policy's namespace (prod)" in f.message
    other = (
        CNP_HEAD.format(name="ns").replace(
            "      role: backend\n", "      role: backend\n      io.kubernetes.pod.namespace: dev\n"
        )
        + "  ingress:\n  - {}\n"
    )
    (g,) = endpoint_selector_namespace(_pol(other))
    assert "the policy selects nothing" in g.message


def test_seed_allow_frontend_reads_the_other_way() -> None:
    result = load_paths([str(SEED / "allow-frontend-to-b.yaml")])
    (pol,) = parse_policies(result.documents)
    (f,) = direction_wording(pol)
    assert (f.rule, f.file, f.line, f.path) == (
        "CL011",
        str(SEED / "allow-frontend-to-b.yaml"),
        11,
        "spec.ingress",
    )
    assert f.message == (
        "'allow-frontend-to-app-b' reads as traffic from frontend to app-b, but this is an ingress rule: it "
        "allows traffic *from* app-b *into* app-a pods (subject app=app-a, access=frontend) on 80/TCP, "
        "not from app-a to app-b"
    )
    assert "toEndpoints: [{matchLabels: {app: app-b}}]" in f.fix


def test_direction_wording_accepts_matching_names() -> None:
    ingress = CNP_HEAD.format(name="allow-frontend-to-backend") + (
        "  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        role: frontend\n"
    )
    egress = CNP_HEAD.format(name="allow-backend-to-db") + (
        "  egress:\n  - toEndpoints:\n    - matchLabels:\n        role: db\n"
    )
    reversed_egress = CNP_HEAD.format(name="allow-db-to-backend") + (
        "  egress:\n  - toEndpoints:\n    - matchLabels:\n        role: db\n"
    )
    assert list(direction_wording(_pol(ingress))) == []
    assert list(direction_wording(_pol(egress))) == []
    (f,) = direction_wording(_pol(reversed_egress))
    assert (
        "it allows traffic *from* backend pods (subject role=backend) *to* db, not from db to backend"
        in f.message
    )


def test_icmp_type_zero_is_every_type() -> None:
    pol = _pol(
        CNP_HEAD.format(name="ping")
        + "  ingress:\n  - icmps:\n    - fields:\n      - type: 8\n      - {family: IPv4, type: EchoReply}\n"
    )
    (f,) = icmp_type_zero(pol)
    assert (f.rule, f.line, f.path) == ("CL012", 14, "spec.ingress[0].icmps[0].fields[1].type")
    assert "this rule allows all IPv4 ICMP, not only echo replies" in f.message



def test_l7_rules_are_reported_as_not_enforced() -> None:
    pol = _pol(
        """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l7, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts:
    - ports: [{port: "9092", protocol: TCP}]
      rules:
        kafka: [{topic: orders}]
  - toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: /}]
  egress:
  - toPorts:
    - ports: [{port: "53", protocol: UDP}]
      rules:
        dns: [{matchPattern: "*"}]
"""
    )
    found = list(l7_rules(pol))  # HTTP and DNS rules are enforced (the proxies): not reported
    assert [(f.rule, f.line, f.path) for f in found] == [
        ("CL013", 10, "spec.ingress[0].toPorts[0].rules.kafka")
    ]
    assert "cilia has no proxy for kafka rules" in found[0].message
