"""Pods resolve names as Kubernetes pods do, on a live node (root): ordinary tools in a pod use the
pod's resolv.conf, so ``curl http://NAME/`` goes through the lab's DNS server (and the agent's DNS
proxy under a DNS rule): a toFQDNs name resolves and connects, a name the policy does not allow
resolves and does not connect, a Service resolves by its short name through the search path."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cilia.agent.endpoints import EndpointTable
from cilia.lab import guard
from tests.helpers_world import LiveNode, cnp, live_node, pod

pytestmark = pytest.mark.root

NODE_INDEX = 10  # its own pod range, gateway and world (198.19.10.0/24): beside every other live test
DNS_SERVER = f"198.19.{NODE_INDEX}.53"
CLIENT, PLAIN = "lsafe-client", "lsafe-plain"
# One `cilia exec` per pod runs every curl (a CLI process costs ~1 s on a busy machine): a line
# "URL HTTP-CODE CURL-EXIT" each. URL#S: at most S seconds (default 12: time for the resolver's one
# retry after its 5 s timeout, should a datagram be lost on a busy machine).
CURLS = ('for a in "$@"; do u=${a%#*}; t=12; [ "$u" != "$a" ] && t=${a##*#}; '
         'c=$(curl -s -o /dev/null -w %{http_code} --max-time "$t" "$u"); echo "$u $c $?"; done')


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    base: Path = tmp_path_factory.mktemp("lab-safety-live")
    n = LiveNode(base, NODE_INDEX)
    n.world_hosts.append("dns")
    yield from live_node(base, n)
    assert not guard.installed(n.cfg.lab_run_dir), "cilia down left the lab's nftables guard"


def curls(node: LiveNode, pod_name: str, *urls: str) -> dict[str, tuple[str, int]]:
    """``url -> (HTTP code, curl's exit code)`` of each URL from the pod, by ``cilia exec``."""
    out = node.cilia("exec", pod_name, "--", "sh", "-c", CURLS, "sh", *urls, timeout=60).stdout
    rows = [line.rsplit(" ", 2) for line in out.splitlines()]
    return {u: (code, int(rc)) for u, code, rc in rows}


def wait_ready(node: LiveNode, *pods: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.cfg.endpoints_path.exists():
            ready = {e.pod.name for e in EndpointTable(node.cfg.endpoints_path) if e.state == "ready"}
            if ready >= set(pods):
                return
        time.sleep(0.1)
    raise AssertionError(f"pods {pods} not ready within {timeout}s")


def test_curl_by_name_under_to_fqdns_and_services_by_short_name(node: LiveNode) -> None:
    web = node.world_add("w-web", 60, "80/TCP")
    evil = node.world_add("w-evil", 61, "80/TCP")
    node.cilia("dns", "add", "web.example.test", web)
    node.cilia("dns", "add", "evil.example.test", evil)
    node.apply(
        # pod names of their own: pods' network namespaces are named by pod, and other live tests
        # run beside this one
        pod(CLIENT, {"app": "client"}), pod(PLAIN, {"app": "plain"}),
        pod("lsafe-backend", {"app": "backend"}),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-svc", "namespace": "default"},
         "spec": {"selector": {"app": "backend"}, "ports": [{"port": 80, "protocol": "TCP"}]}},
        cnp("fqdn", {"endpointSelector": {"matchLabels": {"app": "client"}}, "egress": [
            # as with kube-dns: every name through the proxy (the search path asks for cluster.local
            # names first, answered NXDOMAIN)
            {"toCIDR": [f"{DNS_SERVER}/32"],
             "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}],
                          "rules": {"dns": [{"matchPattern": "*"}]}}]},
            {"toFQDNs": [{"matchName": "web.example.test"}],
             "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}),
    )
    wait_ready(node, CLIENT, PLAIN, "lsafe-backend")
    assert 'iifname "lxc*" ip daddr != 198.18.0.0/15' in guard.listing(node.cfg.lab_run_dir)
    assert curls(node, CLIENT, "http://web.example.test/", "http://evil.example.test/#5",
                 "http://nowhere.example.test/") == {
        "http://web.example.test/": ("200", 0),
        "http://evil.example.test/": ("000", 28),  # resolves; the policy drops the connection: timeout
        "http://nowhere.example.test/": ("000", 6),  # NXDOMAIN: could not resolve host
    }
    # a pod without policy: a Service by its short name (search path) and its full name, an outside name
    assert curls(node, PLAIN, "http://web-svc/", "http://web-svc.default.svc.cluster.local/",
                 "http://web.example.test/") == {
        "http://web-svc/": ("200", 0), "http://web-svc.default.svc.cluster.local/": ("200", 0),
        "http://web.example.test/": ("200", 0)}
