"""CIDR policy on a live node (root): world hosts in 198.19.11.0/24 against toCIDR/toCIDRSet with
except, fromCIDR, egressDeny and the world/cluster entities; every live verdict is compared with the
offline engine (``cilia trace`` on the same manifests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers_world import LiveNode, cnp, live_node, pod

pytestmark = pytest.mark.root

CLIENT = {"matchLabels": {"app": "client"}}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LiveNode]:
    yield from live_node(tmp_path)


def _egress_matrix(node: LiveNode, targets: dict[str, str]) -> dict[str, tuple[bool, bool]]:
    """target -> (live, offline) for client -> target:80."""
    out = {}
    for name, ip in targets.items():
        peer = f"default/{name}" if not name.startswith("w-") else ip
        out[name] = (node.curl_from_pod("client", ip), node.trace("default/client", peer))
    return out


def test_to_cidr_set_with_an_except_hole(node: LiveNode) -> None:
    node.apply(pod("client", {"app": "client"}))
    allowed = node.world_add("w-in", 10, "80/TCP")
    excepted = node.world_add("w-hole", 200, "80/TCP")
    node.apply(cnp("cidr-except", {"endpointSelector": CLIENT, "egress": [{"toCIDRSet": [
        {"cidr": "198.19.11.0/24", "except": ["198.19.11.128/25"]}]}]}))
    assert _egress_matrix(node, {"w-in": allowed, "w-hole": excepted}) == {
        "w-in": (True, True), "w-hole": (False, False)}
    # toCIDR of the exact host opens the hole for that host only
    node.apply(cnp("cidr-host", {"endpointSelector": CLIENT, "egress": [{"toCIDR": [f"{excepted}/32"]}]}))
    assert _egress_matrix(node, {"w-in": allowed, "w-hole": excepted}) == {
        "w-in": (True, True), "w-hole": (True, True)}


def test_from_cidr_ingress_from_a_world_host(node: LiveNode) -> None:
    node.apply(pod("server", {"app": "server"}))
    trusted = node.world_add("trusted", 20)
    stranger = node.world_add("stranger", 21)
    ip = node.ips()["server"]
    node.apply(cnp("from-cidr", {"endpointSelector": {"matchLabels": {"app": "server"}},
                                 "ingress": [{"fromCIDR": [f"{trusted}/32"],
                                              "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}))
    live = {h: node.curl_from_world(h, ip) for h in ("trusted", "stranger")}
    offline = {h: node.trace(a, "default/server") for h, a in (("trusted", trusted), ("stranger", stranger))}
    assert live == offline == {"trusted": True, "stranger": False}


def test_egress_deny_to_a_cidr(node: LiveNode) -> None:
    node.apply(pod("client", {"app": "client"}))
    banned = node.world_add("w-banned", 30, "80/TCP")
    fine = node.world_add("w-fine", 31, "80/TCP")
    node.apply(cnp("world-ok", {"endpointSelector": CLIENT, "egress": [{"toEntities": ["world"]}]}))
    assert _egress_matrix(node, {"w-banned": banned, "w-fine": fine}) == {
        "w-banned": (True, True), "w-fine": (True, True)}
    node.apply(cnp("deny-one", {"endpointSelector": CLIENT, "egressDeny": [{"toCIDR": [f"{banned}/32"]}]}))
    assert _egress_matrix(node, {"w-banned": banned, "w-fine": fine}) == {
        "w-banned": (False, False), "w-fine": (True, True)}


def test_entity_world_versus_cluster(node: LiveNode) -> None:
    node.apply(pod("client", {"app": "client"}), pod("server", {"app": "server"}))
    ext = node.world_add("w-ext", 40, "80/TCP")
    server = node.ips()["server"]
    policy = node.apply(cnp("cluster", {"endpointSelector": CLIENT, "egress": [{"toEntities": ["cluster"]}]}))
    assert _egress_matrix(node, {"server": server, "w-ext": ext}) == {
        "server": (True, True), "w-ext": (False, False)}
    node.delete(policy)
    node.apply(cnp("world", {"endpointSelector": CLIENT, "egress": [{"toEntities": ["world"]}]}))
    assert _egress_matrix(node, {"server": server, "w-ext": ext}) == {
        "server": (False, False), "w-ext": (True, True)}
