"""Services as a trace/verify destination: ``svc:NAMESPACE/NAME`` or a ClusterIP, with the Service's
port, is translated to each backend on its target port before policy (as the datapath's load
balancer does), one flow per backend; the verdict is denied if any backend's is, or if there is no
backend. Golden text and JSON."""

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
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: w, image: nginx, ports: [{containerPort: 8080, name: http}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-canary, namespace: default, labels: {app: web, track: canary}}
spec: {containers: [{name: w, image: nginx, ports: [{containerPort: 9090, name: http}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 198.18.255.20
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  selector: {app: nothing}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: external-db, namespace: default}
spec:
  ports: [{port: 5432, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: external-db, namespace: default}
subsets:
- addresses: [{ip: 198.19.7.7}]
  ports: [{port: 5432, protocol: TCP}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-in, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-out, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}, {port: "9090", protocol: TCP}]}]
  - toCIDR: [198.19.7.7/32]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
"""


@pytest.fixture
def manifests(tmp_path: Path) -> str:
    path = tmp_path / "services.yaml"
    path.write_text(MANIFESTS)
    return str(path)


def trace(manifests: str, to: str, port: str, *more: str) -> tuple[int, str]:
    code, out, err = run_cli(["trace", "-f", manifests, "--from", "deployment:default/client",
                              "--to", to, "--port", port, *more])
    assert not err, err
    return code, out


def test_each_backend_on_its_target_port(manifests: str) -> None:
    """The canary's named port is 9090, the Deployment's 8080; web-in allows 8080 only."""
    code, text = trace(manifests, "svc:default/web", "80/TCP")
    check_golden("trace", "service-named-target-port.txt", text)
    assert code == 1
    code, out = trace(manifests, "svc:default/web", "80/TCP", "-o", "json")
    check_golden("trace", "service-named-target-port.json", out)
    data = json.loads(out)
    backends = data["service"]["backends"]
    assert sorted((b["name"] == "default/web-canary", b["port"]) for b in backends) == [
        (False, 8080), (False, 8080), (True, 9090)]
    verdicts = {(f["to"]["name"], f["port"]): f["allowed"] for f in data["flows"]}
    assert sorted(verdicts.values()) == [False, True, True]
    assert verdicts[("default/web-canary", 9090)] is False
    assert data["allowed"] is False


def test_the_cluster_ip_is_the_service(manifests: str) -> None:
    code, by_ip = trace(manifests, "198.18.255.20", "80/TCP", "-o", "json")
    _, by_name = trace(manifests, "svc:default/web", "80/TCP", "-o", "json")
    assert code == 1 and by_ip == by_name


def test_a_selectorless_service_goes_to_its_endpoints(manifests: str) -> None:
    code, text = trace(manifests, "svc:default/external-db", "5432/TCP")
    check_golden("trace", "service-endpoints.txt", text)
    assert code == 0
    assert "backend 198.19.7.7 198.19.7.7:5432" in text


def test_no_backend_is_a_drop(manifests: str) -> None:
    code, text = trace(manifests, "svc:default/empty", "80/TCP")
    check_golden("trace", "service-no-backend.txt", text)
    assert code == 1
    code, out = trace(manifests, "svc:default/empty", "80/TCP", "-o", "json")
    assert json.loads(out)["allowed"] is False and json.loads(out)["flows"] == []


@pytest.mark.parametrize(
    ("to", "port", "message"),
    [
        ("svc:default/web", "8080/TCP", "Service default/web has no port 8080/TCP (its ports: 80/TCP)"),
        ("svc:default/nope", "80/TCP", "no Service default/nope in the manifests"),
        ("198.18.255.7", "80/TCP",
         "198.18.255.7 is in the lab's Service range (198.18.255.0/24) but no Service in the manifests has"),
    ],
)
def test_bad_service_destinations_exit_2(manifests: str, to: str, port: str, message: str) -> None:
    code, _, err = run_cli(["trace", "-f", manifests, "--from", "deployment:default/client",
                            "--to", to, "--port", port])
    assert code == 2 and message in err


def test_a_service_is_no_source(manifests: str) -> None:
    code, _, err = run_cli(["trace", "-f", manifests, "--from", "svc:default/web",
                            "--to", "deployment:default/client", "--port", "80/TCP"])
    assert code == 2 and "a Service is a destination only" in err


def test_verify_expectations_on_a_service(manifests: str, tmp_path: Path) -> None:
    expect = tmp_path / "expect.yaml"
    expect.write_text(
        "expectations:\n"
        "- {from: deployment:default/client, to: svc:default/external-db, port: 5432, expect: allow}\n"
        "- {from: deployment:default/client, to: svc:default/web, port: 80, expect: deny}\n"
        "- {from: deployment:default/client, to: svc:default/empty, port: 80, expect: deny}\n"
    )
    code, out, _ = run_cli(["verify", "-f", manifests, "--expect", str(expect), "-o", "json"])
    results = json.loads(out)["results"]
    assert [(r["to"], r["actual"]) for r in results] == [
        ("svc:default/external-db", "allow"), ("svc:default/web", "mixed"), ("svc:default/empty", "deny")]
    assert code == 1  # web is mixed (one backend denied), not the expected deny


def test_a_headless_service_reaches_its_pods_directly(tmp_path: Path) -> None:
    path = tmp_path / "headless.yaml"
    path.write_text(MANIFESTS + """---
apiVersion: v1
kind: Service
metadata: {name: web-headless, namespace: default}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 8080, targetPort: 9999}]
""")
    code, out = trace(str(path), "svc:default/web-headless", "8080/TCP", "-o", "json")
    data = json.loads(out)
    assert data["service"]["headless"] and data["service"]["target_port"] == "8080"
    assert sorted(f["port"] for f in data["flows"]) == [8080, 8080, 8080]  # no translation
    # web-in allows 8080 on every web pod (the canary included): direct, all allowed
    assert [f["allowed"] for f in data["flows"]] == [True, True, True] and code == 0


DUAL_STACK = """\
---
apiVersion: v1
kind: Service
metadata: {name: web6, namespace: default}
spec:
  ipFamilyPolicy: RequireDualStack
  clusterIPs: [198.18.255.21, "2001:2:0:ff::21"]
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: db6, namespace: default}
spec:
  ipFamilies: [IPv6]
  clusterIPs: ["2001:2:0:ff::22"]
  ports: [{port: 5432, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: db6, namespace: default}
subsets:
- addresses: [{ip: 198.19.7.7}, {ip: "2001:2::c613:707"}]
  ports: [{port: 5432, protocol: TCP}]
"""


def test_an_ipv6_cluster_ip_goes_to_the_backends_ipv6_addresses(tmp_path: Path) -> None:
    """A dual-stack Service's IPv6 ClusterIP: its pods' IPv6 addresses, each decided as its IPv4
    twin is (identities); an IPv6 single-stack Service's Endpoints: only the IPv6 address, which
    the client's IPv4 toCIDR does not allow; an unknown address of the IPv6 Service range is refused."""
    path = tmp_path / "dual.yaml"
    path.write_text(MANIFESTS + DUAL_STACK)
    code, out = trace(str(path), "2001:2:0:ff::21", "80/TCP", "-o", "json")
    data = json.loads(out)
    assert code == 1 and data["service"]["cluster_ip"] == "2001:2:0:ff::21"
    v4 = json.loads(trace(str(path), "198.18.255.21", "80/TCP", "-o", "json")[1])
    assert v4["service"]["cluster_ip"] == "198.18.255.21"
    assert [(f["to"]["name"], f["allowed"]) for f in data["flows"]] == [
        (f["to"]["name"], f["allowed"]) for f in v4["flows"]]
    code, out = trace(str(path), "svc:default/db6", "5432/TCP", "-o", "json")
    data = json.loads(out)
    assert code == 1 and [b["ip"] for b in data["service"]["backends"]] == ["2001:2::c613:707"]
    assert [f["allowed"] for f in data["flows"]] == [False]  # toCIDR 198.19.7.7/32 is IPv4 only
    code, _, err = run_cli(["trace", "-f", str(path), "--from", "deployment:default/client",
                            "--to", "2001:2:0:ff::99", "--port", "80/TCP"])
    assert code == 2 and "in the lab's Service range (2001:2:0:ff::/120)" in err
