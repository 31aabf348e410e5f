"""toFQDNs on a live node (root): the lab's DNS server in the world, the agent's DNS proxy between a
pod and it; an address learned from an allowed answer is reachable under toFQDNs, another address is
not, and a name the DNS rules do not allow is refused."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers_world import NODE_INDEX, LiveNode, cnp, live_node, pod

pytestmark = pytest.mark.root

DNS_SERVER = f"198.19.{NODE_INDEX}.53"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LiveNode]:
    node = LiveNode(tmp_path)
    node.world_hosts.append("dns")
    yield from live_node(tmp_path, node)


def dig(node: LiveNode, name: str) -> tuple[int, list[str]]:
    """(rcode, addresses) of an A query from the client pod to the lab's DNS server."""
    code = ("import json; from cilia.lab.dns import resolve; "
            f"print(json.dumps(resolve({DNS_SERVER!r}, {name!r}, timeout=8)))")
    out = node.cilia("exec", "client", "--", sys.executable, "-c", code, check=False)
    rcode, addrs = json.loads(out.stdout)
    return int(rcode), list(addrs)


def test_to_fqdns_through_the_dns_proxy(node: LiveNode) -> None:
    api = node.world_add("w-api", 60, "80/TCP")
    other = node.world_add("w-other", 61, "80/TCP")
    node.cilia("dns", "add", "api.example.com", api)
    node.cilia("dns", "add", "other.example.org", other)
    assert json.loads(node.cilia("dns", "list", "-o", "json").stdout) == {
        "server": DNS_SERVER, "records": {"api.example.com": [api], "other.example.org": [other]}}
    node.apply(pod("client", {"app": "client"}))
    assert dig(node, "api.example.com") == (0, [api])  # no policy: straight to the server

    node.apply(cnp("fqdn", {"endpointSelector": {"matchLabels": {"app": "client"}}, "egress": [
        {"toCIDR": [f"{DNS_SERVER}/32"],
         "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}],
                      "rules": {"dns": [{"matchPattern": "*.example.com"}]}}]},
        {"toFQDNs": [{"matchName": "api.example.com"}],
         "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}))
    assert not node.curl_from_pod("client", api)  # not learned yet: a plain world address
    assert dig(node, "api.example.com") == (0, [api])  # answered through the proxy, which learns it
    assert node.curl_from_pod("client", api)
    assert not node.curl_from_pod("client", other)
    assert dig(node, "other.example.org") == (5, [])  # REFUSED: the DNS rules allow *.example.com only
    ids = json.loads(node.cilia("get", "identities", "-o", "json").stdout)["items"]
    assert [i["labels"] for i in ids if "fqdn:api.example.com=" in i["labels"]] == [
        ["cidr:198.19.11.60/32=", "fqdn:api.example.com=", "reserved:world="]], ids
