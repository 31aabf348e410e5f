"""Services on a live node (root): ClusterIPs from 198.18.255.0/24, DNAT to ready pods and to world
hosts behind a selector-less Service, policy on the backends (toServices by name and by selector)
while the backends change; backend verdicts compared with ``cilia trace``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers_world import LiveNode, cnp, live_node, pod

pytestmark = pytest.mark.root

CLIENT = {"matchLabels": {"app": "client"}}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LiveNode]:
    yield from live_node(tmp_path)


def service(name: str, port: int, target: int, selector: dict[str, str] | None,
            labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"port": port, "targetPort": target, "protocol": "TCP"}]}
    if selector is not None:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "labels": labels or {}}, "spec": spec}


def endpoints(name: str, ips: list[str], port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": "default"},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips], "ports": [{"port": port}]}]}


def cluster_ip(node: LiveNode, name: str) -> str:
    for _ in range(100):
        items = json.loads(node.cilia("get", "svc", name, "-o", "json").stdout)["items"]
        ip = (items[0].get("spec") or {}).get("clusterIP") if items else None
        if ip:
            return str(ip)
        time.sleep(0.1)
    raise AssertionError(f"service {name} got no ClusterIP")


def backends(node: LiveNode, name: str) -> list[str]:
    rows = json.loads(node.cilia("svc", "list", "-o", "json").stdout)["items"]
    return [b for r in rows if r["name"] == name for b in r["ports"][0]["backends"]]


def servers(node: LiveNode, ip: str, port: int, tries: int = 12, max_time: int = 2) -> tuple[set[str], int]:
    """Which pods/hosts answered ``tries`` fresh connections from the client, and how many failed
    (one ``cilia exec`` running every curl, each a new connection; an expected drop waits out
    ``max_time``: 1 s is plenty in the lab)."""
    loop = (f"for i in $(seq {tries}); do curl -s --max-time {max_time} http://{ip}:{port}/ "
            "| grep '^Server name: ' "
            "|| echo FAILED; done")
    out = node.cilia("exec", "client", "--", "sh", "-c", loop, check=False).stdout.splitlines()
    assert len(out) == tries, out
    return {x.removeprefix("Server name: ") for x in out if x != "FAILED"}, out.count("FAILED")


def test_services_balance_to_pods_and_world_hosts_under_to_services(node: LiveNode) -> None:
    ext = node.world_add("ext", 50, "80/TCP")
    node.apply(pod("client", {"app": "client"}), pod("b1", {"app": "web"}), pod("b2", {"app": "web"}),
               pod("other", {"app": "other"}))
    node.apply(service("web", 8080, 80, {"app": "web"}),
               service("ext", 80, 80, None, labels={"tier": "external"}), endpoints("ext", [ext], 80))
    web_ip, ext_ip = cluster_ip(node, "web"), cluster_ip(node, "ext")
    assert {web_ip, ext_ip} <= {f"198.18.255.{i}" for i in range(1, 255)} and web_ip != ext_ip
    table = json.loads(node.cilia("svc", "list", "-o", "json").stdout)["items"]
    ips = node.ips()
    assert sorted((r["name"], r["clusterIP"], r["ports"][0]["backends"]) for r in table) == [
        ("ext", ext_ip, [f"{ext}:80"]),
        ("web", web_ip, sorted([f"{ips['b1']}:80", f"{ips['b2']}:80"])),
    ]
    # no policy: both backends answer through the ClusterIP, and the world host through its Service
    assert servers(node, web_ip, 8080) == ({"b1", "b2"}, 0)
    assert servers(node, ext_ip, 80, tries=2) == ({"ext"}, 0)

    # toServices by name: the client may reach web's backends (post-translation), nothing else
    node.apply(cnp("to-web", {"endpointSelector": CLIENT, "egress": [
        {"toServices": [{"k8sService": {"serviceName": "web", "namespace": "default"}}]}]}))
    assert servers(node, web_ip, 8080) == ({"b1", "b2"}, 0)
    assert servers(node, ext_ip, 80, tries=2, max_time=1) == (set(), 2)
    assert not node.curl_from_pod("client", ips["other"], max_time="1")
    assert (node.trace("default/client", "default/b1"), node.trace("default/client", "default/other"),
            node.trace("default/client", ext)) == (True, False, False)

    # toServices by selector: the selector-less Service's world backend becomes a CIDR peer
    node.apply(cnp("to-external", {"endpointSelector": CLIENT, "egress": [
        {"toServices": [{"k8sServiceSelector": {"selector": {"matchLabels": {"tier": "external"}}}}]}]}))
    assert servers(node, ext_ip, 80, tries=2) == ({"ext"}, 0)
    assert node.trace("default/client", ext)

    # the backends change while the policy holds: a new backend is balanced to and allowed
    node.apply(pod("b3", {"app": "web"}))
    for _ in range(50):
        if len(backends(node, "web")) == 3:
            break
        time.sleep(0.1)
    seen, failed = servers(node, web_ip, 8080, tries=20)
    assert (seen, failed) == ({"b1", "b2", "b3"}, 0)
    assert node.trace("default/client", "default/b3")
    node.cilia("delete", "pod", "b1", "b2")
    assert servers(node, web_ip, 8080, tries=6) == ({"b3"}, 0)
