"""toFQDNs on a live node (root): the lab's DNS server in the world, the agent's DNS proxy between a
pod and it; an address learned from an allowed answer is reachable under toFQDNs, another address is
not, and a name the DNS rules do not allow is refused. Learned addresses expire after their TTL
(raised to the node's minimum) once no connection uses them, survive an agent SIGKILL and restart,
and lookups (over UDP and TCP) show up in ``cilia observe --protocol dns``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cilia.datapath.dualstack import ipv6_of
from cilia.proxy.dns.msg import TYPE_AAAA
from tests.helpers_world import LiveNode, cnp, live_node, pod

pytestmark = pytest.mark.root

NODE_INDEX = 12  # not the world tests' 11: these tests can run beside them (one proxy per gateway)
DNS_SERVER = f"198.19.{NODE_INDEX}.53"
CLIENT = "dns-client"  # a name of its own: pods' namespaces are named by pod, not by node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LiveNode]:
    node = LiveNode(tmp_path, NODE_INDEX)
    node.world_hosts.append("dns")
    yield from live_node(tmp_path, node)


def dig(node: LiveNode, name: str, tcp: bool = False) -> tuple[int, list[str]]:
    """(rcode, addresses) of an A query from the client pod to the lab's DNS server."""
    code = ("import json; from cilia.lab.dns import resolve; "
            f"print(json.dumps(resolve({DNS_SERVER!r}, {name!r}, timeout=8, tcp={tcp!r})))")
    out = node.cilia("exec", CLIENT, "--", sys.executable, "-c", code, check=False)
    rcode, addrs = json.loads(out.stdout)
    return int(rcode), list(addrs)


def test_to_fqdns_through_the_dns_proxy(node: LiveNode) -> None:
    api = node.world_add("w-api", 60, "80/TCP")
    other = node.world_add("w-other", 61, "80/TCP")
    node.cilia("dns", "add", "api.example.com", api)
    node.cilia("dns", "add", "other.example.org", other)
    assert json.loads(node.cilia("dns", "list", "-o", "json").stdout) == {
        "server": DNS_SERVER, "records": {"api.example.com": [api], "other.example.org": [other]},
        "ttl": {"api.example.com": 60, "other.example.org": 60}}
    node.apply(pod(CLIENT, {"app": "client"}))
    assert dig(node, "api.example.com") == (0, [api])  # no policy: straight to the server

    node.apply(cnp("fqdn", {"endpointSelector": {"matchLabels": {"app": "client"}}, "egress": [
        {"toCIDR": [f"{DNS_SERVER}/32", f"{ipv6_of(DNS_SERVER)}/128"],
         "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}],
                      "rules": {"dns": [{"matchPattern": "*.example.com"}]}}]},
        {"toFQDNs": [{"matchName": "api.example.com"}],
         "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}))
    assert not node.curl_from_pod(CLIENT, api, max_time="1")  # not learned yet: a plain world address
    assert dig(node, "api.example.com") == (0, [api])  # answered through the proxy, which learns it
    assert node.curl_from_pod(CLIENT, api)
    assert not node.curl_from_pod(CLIENT, other, max_time="1")
    assert dig(node, "other.example.org") == (5, [])  # REFUSED: the DNS rules allow *.example.com only
    # over IPv6 to the server's twin, through the proxy's IPv6 listeners (one exec, in order): api's
    # IPv6 address is refused until its AAAA answer (UDP) is learned; other.example.org is REFUSED
    # (TCP: the proxy answers it, the server would say NXDOMAIN)
    api6, dns6 = ipv6_of(api), ipv6_of(DNS_SERVER)
    code = ("import json, socket; from cilia.lab.dns import resolve\n"
            "def get():\n"
            "    try:\n"
            f"        with socket.create_connection(({api6!r}, 80), timeout=1) as s:\n"
            "            s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); return s.recv(12).decode()\n"
            "    except OSError: return ''\n"
            f"print(json.dumps([get(), resolve({dns6!r}, 'api.example.com', timeout=8, qtype={TYPE_AAAA}),"
            f" get(), resolve({dns6!r}, 'other.example.org', timeout=8, tcp=True)]))")
    before, learned, after, refused = json.loads(
        node.cilia("exec", CLIENT, "--", sys.executable, "-c", code, check=False).stdout)
    assert (before, learned, after.split()[1:], refused) == ("", [0, [api6]], ["200"], [5, []])
    # the IPv6 lookups are DNS flows with the pod's and the server's IPv6 addresses
    dns6_flows = [(f["verdict"], f["l7"]["type"], f["l7"]["dns"]["query"], f["l7"]["dns"].get("ips"),
                   f["source"].get("pod_name"), f["IP"]["source"], f["IP"]["destination"])
                  for f in observe(node, "--protocol", "dns") if f["IP"]["ipVersion"] == "IPv6"]
    client6 = ipv6_of(node.ips()[CLIENT])
    assert dns6_flows == [
        ("FORWARDED", "REQUEST", "api.example.com.", None, CLIENT, client6, dns6),
        ("FORWARDED", "RESPONSE", "api.example.com.", [api6], CLIENT, client6, dns6),
        ("DROPPED", "RESPONSE", "other.example.org.", None, CLIENT, client6, dns6)], dns6_flows
    ids = json.loads(node.cilia("get", "identities", "-o", "json").stdout)["items"]
    assert sorted(i["labels"] for i in ids if "fqdn:api.example.com=" in i["labels"]) == [
        [f"cidr:{api}/32=", "fqdn:api.example.com=", "reserved:world="],
        [f"cidr:{api6.replace(':', '-')}/128=", "fqdn:api.example.com=", "reserved:world="]], ids


MIN_TTL = 12  # the node's tofqdns-min-ttl in these tests: the record's TTL of 1 s is raised to it
# (longer than a closed connection's 10 s in conntrack, CT_CLOSE_TIMEOUT_S: a connection made right
# after the lookup is gone by the time the name expires, so the address leaves at the first expiry
# check instead of waiting for conntrack to be read again 10 s later, fqdn.IN_USE_RECHECK_S)


def fqdn_policy(*names: str) -> dict[str, Any]:
    """DNS over UDP and TCP to the lab's server (names under example.com), port 80 to ``names``."""
    return cnp("fqdn", {"endpointSelector": {"matchLabels": {"app": "client"}}, "egress": [
        {"toCIDR": [f"{DNS_SERVER}/32", f"{ipv6_of(DNS_SERVER)}/128"],
         "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}],
                      "rules": {"dns": [{"matchPattern": "*.example.com"}]}}]},
        {"toFQDNs": [{"matchName": n} for n in names],
         "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]})


def fqdn_identities(node: LiveNode) -> list[list[str]]:
    ids = json.loads(node.cilia("get", "identities", "-o", "json").stdout)["items"]
    return [i["labels"] for i in ids if any(lb.startswith("fqdn:") for lb in i["labels"])]


def observe(node: LiveNode, *args: str) -> list[dict[str, Any]]:
    out = node.cilia("observe", *args, "-o", "json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def short_ttl_node(tmp_path: Path) -> Iterator[LiveNode]:
    node = LiveNode(tmp_path, NODE_INDEX)
    node.env["CILIA_TOFQDNS_MIN_TTL"] = str(MIN_TTL)
    node.world_hosts.append("dns")
    yield from live_node(tmp_path, node)


def test_learned_address_expires_after_its_ttl_and_dns_flows(short_ttl_node: LiveNode) -> None:
    node = short_ttl_node
    api = node.world_add("w-api", 60, "80/TCP")
    node.cilia("dns", "add", "api.example.com", api, "--ttl", "1")
    node.apply(pod(CLIENT, {"app": "client"}), fqdn_policy("api.example.com"))
    assert dig(node, "api.example.com") == (0, [api])
    assert node.curl_from_pod(CLIENT, api)
    assert fqdn_identities(node) == [[f"cidr:{api}/32=", "fqdn:api.example.com=", "reserved:world="]]
    assert dig(node, "evil.example.org") == (5, [])

    # the lookups as `cilia observe --protocol dns` shows them: query, answer, refusal
    dns = [(f["verdict"], f["l7"]["type"], f["l7"]["dns"]["query"], f["l7"]["dns"].get("ips"),
            f["l7"]["dns"].get("rcode", 0), f["source"].get("pod_name"), f["IP"]["destination"],
            f["l4"]["UDP"]["destination_port"]) for f in observe(node, "--protocol", "dns")]
    assert dns == [
        ("FORWARDED", "REQUEST", "api.example.com.", None, 0, CLIENT, DNS_SERVER, 53),
        ("FORWARDED", "RESPONSE", "api.example.com.", [api], 0, CLIENT, DNS_SERVER, 53),
        ("DROPPED", "RESPONSE", "evil.example.org.", None, 5, CLIENT, DNS_SERVER, 53),
    ], dns
    assert [f["l7"]["dns"]["query"] for f in observe(node, "--protocol", "dns", "--verdict", "DROPPED")] == [
        "evil.example.org."]

    # past the (raised) TTL and once curl's connection has left conntrack, the identity goes
    deadline = time.monotonic() + 60
    while fqdn_identities(node) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert fqdn_identities(node) == []
    assert not node.curl_from_pod(CLIENT, api, max_time="1")
    drops = [f for f in observe(node, "--verdict", "DROPPED", "--protocol", "tcp")
             if f["IP"]["destination"] == api]
    assert drops and drops[-1]["destination"]["labels"] == ["reserved:world"], drops
    assert [p["name"] for p in drops[-1].get("default_deny_by", [])] == ["fqdn"], drops[-1]

    # a new lookup, this time over TCP through the proxy, allows it again
    assert dig(node, "api.example.com", tcp=True) == (0, [api])
    assert node.curl_from_pod(CLIENT, api)
    tcp_answers = [f for f in observe(node, "--protocol", "dns", "--protocol", "tcp")
                   if f.get("l7", {}).get("type") == "RESPONSE" and "TCP" in f["l4"]]
    assert [f["l7"]["dns"]["ips"] for f in tcp_answers] == [[api]], tcp_answers

    # offline `cilia trace` on the same YAML and the node's saved DNS cache agrees with the node:
    # right after a lookup (well within the 12 s) both allow; once the node let the address expire,
    # both deny it, and the name has no address left to trace to
    def offline(dst: str, *extra: str) -> subprocess.CompletedProcess[str]:
        files = [a for f in sorted(node.manifests.glob("*.yaml")) for a in ("-f", str(f))]
        return node.cilia("trace", *files, "--state-dir", str(node.cfg.state_dir), "--from", CLIENT,
                          "--to", dst, "--port", "80/TCP", *extra, check=False)

    assert dig(node, "api.example.com") == (0, [api])
    assert node.curl_from_pod(CLIENT, api)  # first, so that its conntrack entry is gone before the TTL
    traced = offline("fqdn:api.example.com", "-o", "json")
    assert traced.returncode == 0, traced.stdout + traced.stderr
    (flow,) = json.loads(traced.stdout)["flows"]
    assert (flow["to"]["ip"], flow["to"]["fqdn"], flow["egress"]["rules"][0]["name"]) == (
        api, {"names": ["api.example.com"], "selectors": ["api.example.com"]}, "fqdn")
    deadline = time.monotonic() + 60
    while fqdn_identities(node) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert fqdn_identities(node) == [] and not node.curl_from_pod(CLIENT, api, max_time="1")
    by_ip, by_name = offline(api), offline("fqdn:api.example.com")
    assert by_ip.returncode == 1 and "toFQDNs rules (api.example.com) were not applied" in by_ip.stdout, (
        by_ip.stdout + by_ip.stderr)
    assert by_name.returncode == 2 and "no address learned for api.example.com" in by_name.stderr, (
        by_name.stdout + by_name.stderr)


def test_learned_addresses_survive_an_agent_sigkill(node: LiveNode) -> None:
    api = node.world_add("w-api", 60, "80/TCP")
    node.cilia("dns", "add", "api.example.com", api, "--ttl", "300")
    node.apply(pod(CLIENT, {"app": "client"}), fqdn_policy("api.example.com"))
    assert dig(node, "api.example.com") == (0, [api])
    before = fqdn_identities(node)
    assert node.curl_from_pod(CLIENT, api)
    pid = int(node.cfg.pid_path.read_text())
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes():
            break
        time.sleep(0.05)
    assert node.curl_from_pod(CLIENT, api)  # the kernel enforces on without the agent
    node.cilia("up", "--node-index", str(NODE_INDEX))
    assert int(node.cfg.pid_path.read_text()) != pid
    assert fqdn_identities(node) == before and node.curl_from_pod(CLIENT, api)
    cache = json.loads(node.cilia("dns", "cache", "-o", "json").stdout)
    assert [(e["ip"], e["name"], e["selected_by"]) for e in cache["entries"]] == [
        (api, "api.example.com", ["api.example.com"])], cache
