"""IPv6 without a kernel: the lab's address twins, status.podIPs read and validated, and the offline
trace deciding a pod's IPv6 address as that pod (ICMPv6 rules, toCIDR with an IPv6 prefix, HTTP rules)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cilia.datapath.dualstack import host_prefixes, ipv4_of, ipv6_of, prefix6_of
from cilia.datapath.guard import in_lab
from tests.helpers_analyze import run_cli

POD_B = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "b", "namespace": "default", "labels": {"app": "b"}},
         "spec": {"containers": [{"name": "web", "image": "x", "ports": [{"containerPort": 80}]}]},
         "status": {"podIP": "198.18.0.3", "podIPs": [{"ip": "198.18.0.3"}, {"ip": "2001:2::c612:3"}]}}
POD_A = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "a", "namespace": "default", "labels": {"app": "a"}},
         "spec": {"containers": [{"name": "web", "image": "x"}]}}
POLICY = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
          "metadata": {"name": "p", "namespace": "default"},
          "spec": {"endpointSelector": {"matchLabels": {"app": "a"}}, "egress": [
              {"toEndpoints": [{"matchLabels": {"app": "b"}}],
               "icmps": [{"fields": [{"family": "IPv6", "type": "EchoRequest"}]}]},
              {"toCIDR": ["2001:2::c613:d00/120"]}]}}


def test_twins() -> None:
    assert ipv6_of("198.18.16.5") == "2001:2::c612:1005" and ipv4_of("2001:2::c612:1005") == "198.18.16.5"
    assert ipv6_of("10.0.0.1") == "" and ipv4_of("2001:2:1::1") == "" and ipv4_of("2001:2::1") == ""
    assert prefix6_of("198.18.16.0/20") == "2001:2::c612:1000/116"
    assert host_prefixes("198.18.0.1") == ["198.18.0.1/32", "2001:2::c612:1/128"]
    assert all(in_lab(ipv6_of(a)) for a in ("198.18.0.0", "198.19.255.255"))


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("v6") / "m.yaml"
    path.write_text(yaml.safe_dump_all([POD_A, POD_B, POLICY]))
    return path


def test_trace_takes_a_pods_ipv6_address_as_the_pod(manifests: Path) -> None:
    def trace(to: str, port: str) -> tuple[int, str]:
        code, out, err = run_cli(["trace", "-f", str(manifests), "--from", "default/a", "--to", to,
                                  "--port", port, "--no-state"])
        return code, out.splitlines()[0] if out else err

    assert trace("2001:2::c612:3", "128/ICMPv6") == (
        0, "flow default/a (identity 256) -> default/b (identity 257) 128/ICMPv6")
    assert trace("2001:2::c612:3", "8/ICMP")[0] == 1  # the rule is for ICMPv6, not ICMP
    assert trace("2001:2::c613:d05", "80/TCP")[0] == 0  # inside the IPv6 toCIDR prefix
    assert trace("2001:2::c613:e05", "80/TCP")[0] == 1  # outside it


def test_trace_decides_http_rules_for_a_pods_ipv6_address_as_for_its_ipv4(tmp_path: Path) -> None:
    """An HTTP rule on b's ingress: a request to b's IPv6 address is decided by the same L7 rule as
    to its IPv4 one (the proxies take both families)."""
    http = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "b-http", "namespace": "default"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "b"}}, "ingress": [
                {"fromEndpoints": [{"matchLabels": {"app": "a"}}],
                 "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}],
                              "rules": {"http": [{"method": "GET", "path": "/public"}]}}]}]}}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump_all([POD_A, POD_B, http]))

    def trace(to: str, http_path: str) -> tuple[int, str]:
        code, out, _ = run_cli(["trace", "-f", str(path), "--from", "default/a", "--to", to,
                                "--port", "80/TCP", "--http-path", http_path, "--no-state"])
        return code, next(line.strip() for line in out.splitlines() if "L7: http proxy" in line)

    for http_path, code in (("/public", 0), ("/private", 1)):
        assert trace("2001:2::c612:3", http_path) == trace("198.18.0.3", http_path)
        assert trace("2001:2::c612:3", http_path)[0] == code


def test_pod_ips_are_validated(tmp_path: Path) -> None:
    bad = {**POD_B, "status": {"podIP": "198.18.0.3", "podIPs": [{"ip": "198.18.0.3"}, {"ip": "2001:2::zz"}]}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad, sort_keys=False))
    code, out, _ = run_cli(["validate", "-f", str(path)])
    assert code == 1 and 'status.podIPs[1].ip: Invalid value: "2001:2::zz"' in out, out


def test_get_pods_shows_both_addresses_of_a_dual_stack_pod() -> None:
    """``get pods -o wide`` shows both (kubectl's custom column of .status.podIPs[*].ip), the plain
    table podIP only; ``-o json|yaml`` lists both in status.podIPs; an IPv4-only pod is unchanged."""
    from cilia.agent.desired import PodKey
    from cilia.agent.endpoints import Endpoint
    from cilia.agent.views import pod_objects, pods_table
    from cilia.store import Kind, key_for_object, open_store

    store = open_store(backend="memory")
    single = {**POD_A, "metadata": {**POD_A["metadata"], "name": "c"}}
    for obj in (POD_A, single):
        store.put(key_for_object(obj, "default"), obj)
    recs = store.list(Kind.PODS)
    eps = [Endpoint(1, PodKey("default", "a"), "198.18.0.2", 10, "lxc1", "ns1", 256, ip6="2001:2::c612:2"),
           Endpoint(2, PodKey("default", "c"), "198.18.0.4", 11, "lxc2", "ns2", 256)]
    rows = [e.to_json() for e in eps]

    def ip_column(wide: bool) -> dict[str, str]:
        t = pods_table(recs, rows, agent_up=True, node="n0", wide=wide)
        return {r[0]: r[t.headers.index("IP")] for r in t.rows}

    assert ip_column(True) == {"a": "198.18.0.2,2001:2::c612:2", "c": "198.18.0.4"}
    assert ip_column(False) == {"a": "198.18.0.2", "c": "198.18.0.4"}
    objs = {o["metadata"]["name"]: o["status"] for o in pod_objects(recs, rows, agent_up=True, node="n0")}
    assert objs["a"]["podIPs"] == [{"ip": "198.18.0.2"}, {"ip": "2001:2::c612:2"}]
    assert objs["c"]["podIPs"] == [{"ip": "198.18.0.4"}] and "ip6" not in rows[1]
    assert Endpoint.from_json(rows[0]) == eps[0]  # the table file keeps the IPv6 address
