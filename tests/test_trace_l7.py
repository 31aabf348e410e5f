"""``cilia trace`` with L7 rules: a side whose entry redirects to a proxy decides the request given
with --http-*/--tls-sni as the proxy would, naming the rule (text and JSON goldens; a refused request
exits 1); without a request the verdict is the L4 one and the output names the L7 rules that apply.
Kafka rules have no proxy in cilia: a note says they are enforced at L4 only."""

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
        http:
        - {method: GET, path: /public}
        - {method: POST, path: /submit, headers: ["X-Token: s3cret"]}
    - ports: [{port: "8080", protocol: TCP}, {port: "443", protocol: TCP}]
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
    toPorts: [{ports: [{port: "80", protocol: TCP}, {port: "8080", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-tls, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: web}}]
    toPorts:
    - ports: [{port: "443", protocol: TCP}]
      serverNames: ["*.example.com"]
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


def test_without_a_request_the_l7_rules_that_apply_are_named(policy: str) -> None:
    code, text = trace(policy, "80/TCP")
    assert code == 0
    check_golden("trace", "l7-http.txt", text)
    code, out = trace(policy, "80/TCP", "-o", "json")
    check_golden("trace", "l7-http.json", out)
    [flow] = json.loads(out)["flows"]
    assert flow["allowed"] and "notes" not in flow
    assert flow["ingress"]["l7"] == {
        "parser": "http",
        "proxy_port": 15001,
        "decided": False,
        "allowed": True,
        "rules": [
            {"kind": "CiliumNetworkPolicy", "namespace": "default", "name": "web-http", "section": "ingress",
             "index": 0, "spec_index": 0}
        ],
    }
    assert "l7" not in flow["egress"]  # the client's egress to web on 80 is an L3 allow: no proxy


def test_a_request_the_rules_allow(policy: str) -> None:
    code, text = trace(policy, "80/TCP", "--http-method", "GET", "--http-path", "/public")
    assert code == 0
    check_golden("trace", "l7-http-allowed.txt", text)
    assert "GET /public host '': ALLOWED, matches http rule method='GET' path='/public'" in text
    code, out = trace(policy, "80/TCP", "--http-path", "/public", "-o", "json")  # method defaults to GET
    check_golden("trace", "l7-http-allowed.json", out)
    [flow] = json.loads(out)["flows"]
    assert flow["allowed"] and flow["ingress"]["l7"]["decided"] and flow["ingress"]["l7"]["allowed"]


def test_a_request_the_proxy_refuses_exits_1(policy: str) -> None:
    code, text = trace(policy, "80/TCP", "--http-method", "POST", "--http-path", "/public")
    assert code == 1
    check_golden("trace", "l7-http-denied.txt", text)
    assert "DENIED at L7 (HTTP 403 Access denied)" in text
    assert "verdict: DENIED at ingress of default/web" in text and "by its L7 proxy" in text
    code, out = trace(policy, "80/TCP", "--http-method", "POST", "--http-path", "/public", "-o", "json")
    assert code == 1
    check_golden("trace", "l7-http-denied.json", out)
    [flow] = json.loads(out)["flows"]
    ing = flow["ingress"]
    assert not flow["allowed"] and not ing["allowed"] and ing["drop_reason"] is None
    assert ing["l7"]["reason"] == "no http rule matches" and ing["l7"]["rules"][0]["name"] == "web-http"


def test_header_rules(policy: str) -> None:
    args = ("--http-method", "POST", "--http-path", "/submit")
    code, _ = trace(policy, "80/TCP", *args)
    assert code == 1
    code, text = trace(policy, "80/TCP", *args, "--http-header", "x-token: s3cret")
    assert code == 0 and "POST /submit host '' headers x-token: s3cret: ALLOWED" in text
    code, _ = trace(policy, "80/TCP", *args, "--http-header", "X-Token:wrong")
    assert code == 1
    code, _, err = run_cli(["trace", "-f", policy, "--from", "deployment:default/client",
                            "--to", "deployment:default/web", "--port", "80/TCP", "--http-header", "novalue"])
    assert code == 2 and "expected NAME:VALUE" in err


def test_tls_server_names(policy: str) -> None:
    code, text = trace(policy, "443/TCP")
    assert code == 0
    assert "L7: tls proxy (port 15004): L7 rules apply: CiliumNetworkPolicy default/client-tls" in text
    code, text = trace(policy, "443/TCP", "--tls-sni", "api.example.com")
    assert code == 0
    check_golden("trace", "l7-tls-allowed.txt", text)
    code, text = trace(policy, "443/TCP", "--tls-sni", "api.example.org")
    assert code == 1 and "DENIED at L7 (TLS connection closed)" in text
    check_golden("trace", "l7-tls-denied.txt", text)
    # an HTTP request on the TLS port is not decided by the TLS proxy (it reads only the ClientHello)
    code, text = trace(policy, "443/TCP", "--http-path", "/")
    assert code == 0 and "decided at L4 only" in text


def test_kafka_rules_are_noted_as_l4_only_and_a_plain_port_has_no_l7(policy: str) -> None:
    """Egress to 9050 is allowed by the kafka rule's range: named; 8080 is
    allowed on both sides by rules without L7 on that port: no note, no proxy."""
    _, text = trace(policy, "9050/TCP")
    assert ("egress is allowed by rules whose L7 parts cilia has no proxy for and enforces at L4 only: "
            "CiliumNetworkPolicy default/client-kafka egress[0] (kafka)") in text
    code, text = trace(policy, "8080/TCP", "--http-method", "DELETE")
    assert code == 0 and "note:" not in text and "L7:" not in text


DNS_MANIFESTS = """\
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
spec: {containers: [{name: c, image: curl}]}
---
apiVersion: v1
kind: Pod
metadata: {name: dns, namespace: default, labels: {app: dns}}
spec: {containers: [{name: d, image: coredns, ports: [{containerPort: 53, protocol: UDP}]}]}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-dns, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: dns}}]
    toPorts:
    - ports: [{port: "53", protocol: UDP}]
      rules:
        dns: [{matchPattern: "*.example.com"}]
"""


def test_dns_queries_are_decided_by_the_dns_rules(tmp_path: Path) -> None:
    f = tmp_path / "dns.yaml"
    f.write_text(DNS_MANIFESTS)
    args = ["trace", "-f", str(f), "--from", "default/client", "--to", "default/dns", "--port", "53/UDP"]
    code, text, _ = run_cli(args)
    assert code == 0
    assert "L7: dns proxy (port 15053): L7 rules apply: CiliumNetworkPolicy default/client-dns" in text
    code, text, _ = run_cli([*args, "--dns-query", "api.example.com"])
    assert code == 0 and "DNS query 'api.example.com': ALLOWED" in text
    code, text, _ = run_cli([*args, "--dns-query", "api.example.org"])
    assert code == 1 and "DENIED at L7 (DNS REFUSED)" in text
