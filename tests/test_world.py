"""World hosts on a live node (root): pods reach them through the node and back, they are removed
by ``cilia down``; the node itself (host identity) reaches pods under allow-localhost unless a
policy denies ``host``, and pods reach the node at the gateway address."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers_world import CURL, GATEWAY, LiveNode, cnp, live_node, pod

pytestmark = pytest.mark.root


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LiveNode]:
    n = LiveNode(tmp_path)
    n.world_hosts.append("dns")  # started with the node: checked for leftovers too
    yield from live_node(tmp_path, n)


def test_world_hosts_reach_pods_through_the_node_and_go_with_down(node: LiveNode) -> None:
    node.apply(pod("client", {"app": "client"}))
    web = node.world_add("web", 10, "80/TCP", "5353/UDP")
    node.world_add("peer", 11)
    rows = json.loads(node.cilia("world", "list", "-o", "json").stdout)["items"]
    assert [(r["name"], r["ip"], r["ports"]) for r in rows] == [  # dns: the node's DNS server, with the node
        ("dns", "198.19.11.53", []), ("peer", "198.19.11.11", []), ("web", web, ["80/TCP", "5353/UDP"])]
    body = node.cilia("exec", "client", "--", "curl", "-s", "--max-time", "2", f"http://{web}/").stdout
    assert "Server name: web" in body and f"Server address: {web}:80" in body
    client_ip = node.ips()["client"]
    assert node.curl_from_world("peer", client_ip)
    assert node.curl_from_world("peer", web)  # world to world, also through the node
    dup = node.cilia("world", "add", "again", "--ip", web, check=False)
    assert dup.returncode == 1 and "taken by world host web" in dup.stderr
    outside = node.cilia("world", "add", "far", "--ip", "192.0.2.1", check=False)
    assert outside.returncode == 1 and "outside 198.19.0.0/16" in outside.stderr
    node.cilia("world", "delete", "peer")
    left = json.loads(node.cilia("world", "list", "-o", "json").stdout)["items"]
    assert [r["name"] for r in left] == ["dns", "web"]


def _node_curl(ip: str) -> bool:
    out = subprocess.run([*CURL, f"http://{ip}/"], capture_output=True, text=True, check=False)
    return out.returncode == 0 and out.stdout == "200"


def test_host_reaches_pods_unless_a_policy_denies_host(node: LiveNode) -> None:
    node.apply(pod("server", {"app": "server"}), pod("other", {"app": "other"}))
    ip = node.ips()["server"]
    assert _node_curl(ip)
    # ingress default deny for the server (only app=client may come in): the node still may
    node.apply(cnp("only-client", {"endpointSelector": {"matchLabels": {"app": "server"}},
                                   "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}]}))
    assert _node_curl(ip)
    assert not node.curl_from_pod("other", ip)
    assert node.trace("entity:host", "default/server")
    deny = node.apply(cnp("deny-host", {"endpointSelector": {"matchLabels": {"app": "server"}},
                                        "ingressDeny": [{"fromEntities": ["host"]}]}))
    assert not _node_curl(ip)
    assert not node.trace("entity:host", "default/server")
    node.delete(deny)
    assert _node_curl(ip)


def test_pods_reach_the_node_at_the_gateway(node: LiveNode, tmp_path: Path) -> None:
    node.apply(pod("client", {"app": "client"}))
    server = subprocess.Popen(  # a server on the node itself, bound to the pods' gateway address
        [sys.executable, "-m", "http.server", "--bind", GATEWAY, "8081", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if _node_curl(f"{GATEWAY}:8081"):
                break
            subprocess.run(["sleep", "0.1"], check=True)
        assert node.curl_from_pod("client", GATEWAY, 8081)
        node.apply(cnp("egress-cluster-only", {"endpointSelector": {"matchLabels": {"app": "client"}},
                                               "egress": [{"toEndpoints": [{}]}]}))
        assert not node.curl_from_pod("client", GATEWAY, 8081)
        assert not node.trace("default/client", "entity:host", "8081/TCP")
        node.apply(cnp("egress-host", {"endpointSelector": {"matchLabels": {"app": "client"}},
                                       "egress": [{"toEntities": ["host"]}]}))
        assert node.curl_from_pod("client", GATEWAY, 8081)
        assert node.trace("default/client", "entity:host", "8081/TCP")
    finally:
        server.kill()
        server.wait()
