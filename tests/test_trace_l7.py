"""``cilia trace`` says when the rule that allowed a flow has HTTP/Kafka/L7 rules on that port:
cilia enforces them at L4 only, so the answer is "the port is open to this peer", not "every
request is" (golden text and JSON; no note on a port of the same rule without L7 rules)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers_analyze import check_golden, run_cli

MANIFESTS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec: {containers: [{name: c, image: curl}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: w, image: nginx, ports: [{containerPort: 80}, {containerPort: 8080}]}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-http, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: /public}]
    - ports: [{port: "8080", protocol: TCP}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-kafka, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: web}}]
    toPorts:
    - ports: [{port: "9000", endPort: 9100, protocol: TCP}]
      rules:
        kafka: [{topic: orders}]
  - toEndpoints: [{matchLabels: {app: web}}]
"""


@pytest.fixture
def policy(tmp_path: Path) -> str:
    path = tmp_path / "l7.yaml"
    path.write_text(MANIFESTS)
    return str(path)


def trace(policy: str, port: str, *more: str) -> tuple[int, str]:
    code, out, err = run_cli(["trace", "-f", policy, "--from", "deployment:default/client",
                              "--to", "deployment:default/web", "--port", port, *more])
    assert not err
    return code, out


def test_http_rules_on_the_traced_port_are_named(policy: str) -> None:
    code, text = trace(policy, "80/TCP")
    assert code == 0
    check_golden("trace", "l7-http.txt", text)
    code, out = trace(policy, "80/TCP", "-o", "json")
    check_golden("trace", "l7-http.json", out)
    [flow] = json.loads(out)["flows"]
    assert flow["notes"] == [
        "ingress is allowed by L7 rules that cilia enforces at L4 only: CiliumNetworkPolicy "
        "default/web-http ingress[0] (http); Cilium would pass each request through its proxy and "
        "allow only the listed ones (lint CL013)"
    ]


def test_a_port_range_with_kafka_rules_and_a_plain_port(policy: str) -> None:
    """Egress to 9050 is allowed by the kafka rule's range (and the L3 rule): named; 8080 is
    allowed on both sides by rules without L7 on that port: no note."""
    _, text = trace(policy, "9050/TCP")
    assert "egress is allowed by L7 rules that cilia enforces at L4 only: CiliumNetworkPolicy " \
           "default/client-kafka egress[0] (kafka)" in text
    code, text = trace(policy, "8080/TCP")
    assert code == 0 and "note:" not in text
