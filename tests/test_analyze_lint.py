"""Cluster-aware lint rules (CL003, CL004, CL005, CL007, CL008) and the validator's findings
(CL001, CL002), each on a small manifest."""

from __future__ import annotations

from cilia.analyze.findings import RULES, Finding, Severity
from cilia.analyze.lint import lint_result
from cilia.k8s.loader import load_text

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 80, name: http}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]}
---
"""


def _lint(policies: str) -> list[Finding]:
    return list(lint_result(load_text(PODS + policies, "m.yaml")).findings)


def _rules(findings: list[Finding]) -> list[tuple[str, int, str]]:
    return [(f.rule, f.line, f.path) for f in findings]


def test_rule_table_is_stable() -> None:
    assert list(RULES) == [f"CL{i:03d}" for i in range(1, 19)]
    assert RULES["CL001"][0] is Severity.ERROR and RULES["CL005"][0] is Severity.WARNING


def test_selects_no_pod_and_peer_matches_nothing() -> None:
    findings = _lint("""apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: nope}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}, {matchLabels: {app: ghost}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: q, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web, k8s:io.kubernetes.pod.namespace: other}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
""")
    assert _rules(findings) == [
        ("CL003", 16, "spec.endpointSelector"),
        ("CL004", 18, "spec.ingress[0].fromEndpoints[1]"),
        ("CL004", 26, "spec.ingress[0].fromEndpoints[0]"),
    ]
    assert "(any:app=ghost, k8s:io.kubernetes.pod.namespace=shop)" in findings[1].message
    assert findings[0].policy == "CiliumNetworkPolicy/shop/p"


def test_networkpolicy_peer_matches_nothing() -> None:
    findings = _lint("""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}, {podSelector: {matchLabels: {app: nobody}}}]
""")
    assert _rules(findings) == [("CL004", 18, "spec.ingress[0].from[1]")]


def test_allow_shadowed_by_deny() -> None:
    findings = _lint("""apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: allow, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  - fromEndpoints: [{matchLabels: {app: api}}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-web}
spec:
  endpointSelector: {}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: web, k8s:io.kubernetes.pod.namespace: shop}}]
""")
    assert [f for f in findings if f.rule == "CL005"] == [
        Finding(
            "CL005",
            "m.yaml",
            18,
            5,
            "CiliumNetworkPolicy/shop/allow",
            "spec.ingress[0]",
            "this allow is fully shadowed: every flow it allows is denied by CiliumClusterwideNetworkPolicy "
            "no-web ingressDeny[0] (a deny always wins, whatever the order or policy kind)",
            "narrow the deny (e.g. exclude these peers or ports from it) or remove this allow",
        )
    ]
    # The CCNP's deny-only ingress also switches every pod into ingress default deny.
    assert [(f.rule, f.policy) for f in findings if f.rule == "CL006"] == [
        ("CL006", "CiliumClusterwideNetworkPolicy/no-web")
    ]


def test_egress_default_deny_without_dns() -> None:
    base = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: out, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: api}}]
"""
    (f,) = _lint(base)
    assert (f.rule, f.line, f.path) == ("CL007", 17, "spec.egress")
    assert f.message.startswith("this policy puts shop/web into egress default deny")
    assert _lint(base + '  - toPorts: [{ports: [{port: "53", protocol: UDP}]}]\n') == []
    assert _lint(base + "  - toEntities: [all]\n") == []
    assert [f.rule for f in _lint(base + "  - toEntities: [cluster]\n")] == ["CL007"]  # no DNS pod known


def test_named_port_with_different_numbers() -> None:
    findings = _lint("""apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: named, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: http, protocol: TCP}]}]
  - toEntities: [all]
    toPorts: [{ports: [{port: "53", protocol: UDP}]}]
""")
    assert _rules(findings) == [("CL008", 19, "spec.egress[0].toPorts[0].ports[0].port")]
    assert "'http' (TCP) maps to different numbers across pods (80 on shop/web; 8080 on shop/api)" in (
        findings[0].message
    )


def test_validator_findings_become_cl001_and_cl002() -> None:
    findings = _lint("""apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  deny:
  - toEndpoints: [{matchLabels: {app: api}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: worse, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts: [{ports: [{port: "99999", protocol: TCP}]}]
""")
    assert [(f.rule, f.line, f.path) for f in findings] == [
        ("CL001", 17, "spec.deny"),
        ("CL002", 26, "spec.ingress[0].toPorts[0].ports[0].port"),
    ]
    assert findings[0].severity is Severity.ERROR
    assert "egressDeny" in findings[0].fix and "cilia validate --fix" in findings[0].fix


def test_networkpolicy_egress_deny_all_without_dns() -> None:
    (f,) = _lint("""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
""")
    assert (f.rule, f.line, f.path, f.policy) == (
        "CL007",
        17,
        "spec.policyTypes",
        "NetworkPolicy/shop/deny-egress",
    )
    assert f.message.startswith("this policy puts shop/api, shop/web into egress default deny")
