"""The lab's DNS server comes with the node (root): on a fresh node, without any ``cilia dns add``,
a pod resolves a Service name to its ClusterIP (``getent hosts``, through the pod's resolv.conf)
and reaches it by its short name; ``world list`` and ``dns list`` show the server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cilia.agent.endpoints import EndpointTable
from tests.helpers_world import LiveNode, live_node, pod

pytestmark = pytest.mark.root

NODE_INDEX = 8  # its own pod range (198.18.128.0/20), gateway and world (198.19.8.0/24)
DNS_SERVER = f"198.19.{NODE_INDEX}.53"
CLIENT, BACKEND = "ldns-client", "ldns-backend"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    base: Path = tmp_path_factory.mktemp("lab-dns-live")
    n = LiveNode(base, NODE_INDEX)
    n.world_hosts.append("dns")  # checked for leftovers after `cilia down`
    yield from live_node(base, n)


def test_fresh_node_resolves_services_without_dns_add(node: LiveNode) -> None:
    hosts = json.loads(node.cilia("world", "list", "-o", "json").stdout)["items"]
    assert [(h["name"], h["ip"]) for h in hosts] == [("dns", DNS_SERVER)]  # with the node, before any pod
    assert json.loads(node.cilia("dns", "list", "-o", "json").stdout) == {
        "server": DNS_SERVER, "records": {}, "ttl": {}}
    node.apply(
        pod(CLIENT, {"app": "ldns-client"}), pod(BACKEND, {"app": "ldns-backend"}),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ldns-svc", "namespace": "default"},
         "spec": {"selector": {"app": "ldns-backend"}, "ports": [{"port": 80, "protocol": "TCP"}],
                  "ipFamilyPolicy": "PreferDualStack"}},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = {e.pod.name for e in EndpointTable(node.cfg.endpoints_path) if e.state == "ready"}
        if {CLIENT, BACKEND} <= ready:
            break
        time.sleep(0.1)
    svc = json.loads(node.cilia("get", "svc", "-o", "json").stdout)["items"]
    cluster_ip, cluster_ip6 = next(s["spec"]["clusterIPs"] for s in svc
                                   if s["metadata"]["name"] == "ldns-svc")
    name = "ldns-svc.default.svc.cluster.local"
    out = node.cilia("exec", CLIENT, "--", "getent", "hosts", name, check=False)  # AAAA first, as glibc asks
    assert out.returncode == 0 and out.stdout.split()[:2] == [cluster_ip6, name], out.stdout + out.stderr
    code = node.cilia("exec", CLIENT, "--", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                      "--max-time", "10", "http://ldns-svc/", check=False)
    assert code.stdout == "200", code.stdout + code.stderr
    # A: the IPv4 ClusterIP; curl -6 by name reaches the backend through the IPv6 ClusterIP
    script = (f"getent ahostsv4 {name} | head -n 1; "
              "curl -6 -s -o /dev/null -w ' %{http_code}' --max-time 10 http://ldns-svc/")
    out = node.cilia("exec", CLIENT, "--", "sh", "-c", script, check=False)
    assert out.stdout.split()[0] == cluster_ip and out.stdout.split()[-1] == "200", out.stdout + out.stderr


def test_the_dns_host_and_a_new_world_host_carry_the_datapath_guard(node: LiveNode) -> None:
    """Issue 13 item 1: world hosts' node-side veths are guard-only devices of the node's datapath
    (drops to outside addresses with reason 250; crafted-packet checks in test_world_guard.py)."""
    from cilia.agent.endpoints import GUARD_ENDPOINT_IDS

    def guarded() -> dict[str, list[str]]:
        rows = json.loads(node.cilia("bpf", "endpoint", "list", "-o", "json").stdout)
        return {r["ifname"]: r["flags"] for r in rows if r["endpoint_id"] in GUARD_ENDPOINT_IDS}

    def host_ifname(name: str) -> str:
        hosts = json.loads(node.cilia("world", "list", "-o", "json").stdout)["items"]
        return next(h["link"] for h in hosts if h["name"] == name)

    assert guarded().get(host_ifname("dns")) == ["policy_ready"]  # no enforce flags: the guard only
    node.cilia("world", "add", "ldns-far", "--ip", f"198.19.{NODE_INDEX}.77")
    node.world_hosts.append("ldns-far")
    want = host_ifname("ldns-far")
    deadline = time.monotonic() + 15  # the agent's runtime check runs every 10 s
    while want not in guarded() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert guarded().get(want) == ["policy_ready"]
