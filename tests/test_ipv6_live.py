"""IPv6 pods on a live node (root): every pod and world host has an IPv6 address in 2001:2::/48 beside
its IPv4 one, and the eBPF datapath enforces IPv6 as it does IPv4 — ``ping -6`` and ``curl -6``
between pods allowed and denied by the same policy, ICMPv6 rules, toCIDR with an IPv6 prefix to a
world host; ``get pods -o json`` lists both addresses (``-o wide``: test_ipv6_offline), drop flows
name the pods, and the offline ``verify`` decides the IPv6 addresses the same. Node index 4 (pods
198.18.64.0/20, world 198.19.4.0/24). Few CLI calls: the probes of one source run in one
``cilia exec``, at the same time (the denied ones wait out their timeouts together)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cilia.datapath.dualstack import ipv6_of
from tests.helpers_world import LiveNode, cnp, live_node, pod

pytestmark = pytest.mark.root

NODE_INDEX = 4  # no other live test module uses node 4
WORLD_HOST = "v6-w"
NOBODY6 = "2001:2:0:99::1"  # a lab address nothing holds (v6-a's egress drops the packet to it)


def _probes(node: LiveNode, src: str, probes: dict[str, str], world: bool = False) -> dict[str, bool]:
    """Run shell probes (name -> command, success = exit 0) at once in ``src``; name -> passed.
    One try each: the first packets to a pod that just started must arrive (the node's side of a
    pod's veth once held its neighbour solicitations for a second, cilia.lab.veth.add_pair)."""
    script = " ".join(
        f"( {cmd} >/dev/null 2>&1 && echo 'ok {name}' || echo 'no {name}' ) &"
        for name, cmd in probes.items()
    ) + " wait"
    out = node.cilia(*(("world", "exec") if world else ("exec",)), src, "--", "sh", "-c", script).stdout
    seen = dict(reversed(line.split(" ", 1)) for line in out.splitlines() if line[:3] in ("ok ", "no "))
    assert set(seen) == set(probes), out
    return {name: seen[name] == "ok" for name in probes}


def _balanced(node: LiveNode, src: str, url: str, backends: set[str]) -> tuple[set[str], int]:
    """Connect to ``url`` (a ClusterIP) from ``src`` in batches of 6 at once until connections
    went to every one of ``backends`` (a denied one shows as a failure: ``backends`` must hold
    exactly one that is denied) or 5 batches passed: the names of the pods that answered, and how
    many connections failed. The backend is picked at random per connection."""
    served: set[str] = set()
    failed = 0
    for _ in range(5):
        script = " ".join(f"(curl -s --max-time 1 {url} | sed -n 's/^Server name: //p'; echo done) &"
                          for _ in range(6)) + " wait"
        out = node.cilia("exec", src, "--", "sh", "-c", script).stdout.split()
        names = [w for w in out if w != "done"]
        served |= set(names)
        failed += 6 - len(names)
        if failed and len(served) == len(backends) - 1:
            break
    return served, failed


def _ping6(ip: str) -> str:
    return f"ping -6 -c 1 -W 1 {ip}"


def _curl(ip: str, port: int = 80) -> str:
    url = f"http://[{ip}]:{port}/" if ":" in ip else f"http://{ip}:{port}/"
    return f"curl -sf -o /dev/null --max-time 1 {url}"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LiveNode]:
    yield from live_node(tmp_path, LiveNode(tmp_path, NODE_INDEX))


def test_ipv6_pods_enforced_live_and_offline(node: LiveNode, tmp_path: Path) -> None:
    w4 = node.world_add(WORLD_HOST, 10, "80/TCP")
    w6 = ipv6_of(w4)
    policies = [
        cnp("v6-b-in", {"endpointSelector": {"matchLabels": {"app": "v6-b"}}, "ingress": [
            {"fromEndpoints": [{"matchLabels": {"app": "v6-a"}}],
             "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]},
            {"fromEndpoints": [{"matchLabels": {"app": "v6-a"}}],
             "icmps": [{"fields": [{"family": "IPv6", "type": "EchoRequest"}]}]}]}),
        cnp("v6-a-out", {"endpointSelector": {"matchLabels": {"app": "v6-a"}}, "egress": [
            {"toEndpoints": [{"matchLabels": {"app": "v6-b"}}]},
            {"toCIDR": [f"{w6}/128"], "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]}),
    ]
    # v6-web: a dual-stack Service over v6-b (v6-a's egress allows it) and v6-d (it does not)
    web = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "v6-web", "namespace": "default"},
           "spec": {"ipFamilyPolicy": "RequireDualStack", "selector": {"tier": "v6-web"},
                    "ports": [{"port": 8080, "targetPort": 80}]}}
    node.apply(pod("v6-a", {"app": "v6-a"}), pod("v6-b", {"app": "v6-b", "tier": "v6-web"}),
               pod("v6-c", {"app": "v6-c"}), pod("v6-d", {"app": "v6-d", "tier": "v6-web"}), web, *policies)
    items = json.loads(node.cilia("get", "pods", "-o", "json").stdout)["items"]
    ips = {i["metadata"]["name"]: [p["ip"] for p in i["status"]["podIPs"]] for i in items}
    assert all(len(v) == 2 and v[1] == ipv6_of(v[0]) for v in ips.values()), ips
    b6, a6 = ips["v6-b"][1], ips["v6-a"][1]

    from_a = _probes(node, "v6-a", {"ping6 b": _ping6(b6), "curl6 b": _curl(b6), "curl6 b:81": _curl(b6, 81),
                                    "curl6 world": _curl(w6), "curl4 world": _curl(w4),
                                    "curl6 nobody": _curl(NOBODY6)})
    # toCIDR of the world host's IPv6 /128 selects that address, not the host's IPv4 one
    assert from_a == {"ping6 b": True, "curl6 b": True, "curl6 b:81": False, "curl6 world": True,
                      "curl4 world": False, "curl6 nobody": False}
    from_c = _probes(node, "v6-c", {"ping6 b": _ping6(b6), "curl6 b": _curl(b6),
                                    "curl4 b": _curl(ips["v6-b"][0])})
    assert from_c == {"ping6 b": False, "curl6 b": False, "curl4 b": False}
    # the IPv6 drops are flows that name both pods; an IPv6 address outside every prefix is
    # reserved:world-ipv6 (identity 10), as in a dual-stack Cilium
    out = node.cilia("observe", "--verdict", "DROPPED", "--last", "50", "-o", "json").stdout
    flows = list(map(json.loads, out.splitlines()))
    drops = {(f["source"].get("pod_name"), f["destination"].get("pod_name"), f["IP"]["ipVersion"])
             for f in flows if f["IP"]["destination"] == b6}
    assert ("v6-c", "v6-b", "IPv6") in drops, out
    assert {(f["destination"]["identity"], tuple(f["destination"]["labels"])) for f in flows
            if f["IP"]["destination"] == NOBODY6} == {(10, ("reserved:world-ipv6",))}, out
    # a dual-stack world host reaches v6-a (no ingress policy) over IPv6
    assert _probes(node, WORLD_HOST, {"curl6 a": _curl(a6)}, world=True) == {"curl6 a": True}

    # the IPv6 ClusterIP: translated before policy, so v6-a reaches v6-b through it and is denied v6-d
    wide = node.cilia("get", "svc", "v6-web", "-o", "wide").stdout
    vip4, vip6 = wide.splitlines()[1].split()[3].split(",")
    assert vip4 == wide.splitlines()[1].split()[2] and vip6.startswith("2001:2:0:ff::"), wide
    d6 = ips["v6-d"][1]
    served, failed = _balanced(node, "v6-a", f"http://[{vip6}]:8080/", {"v6-b", "v6-d"})
    assert served == {"v6-b"} and failed, served  # each v6-d connection was dropped at v6-a's egress ...
    out = node.cilia("observe", "--verdict", "DROPPED", "--from-pod", "default/v6-a", "--last", "100",
                     "-o", "json").stdout
    drops = {(f["destination"].get("pod_name"), f["IP"]["destination"], f["l4"]["TCP"]["destination_port"],
              f.get("destination_service", {}).get("name"))
             for f in map(json.loads, out.splitlines()) if "TCP" in f.get("l4", {})}
    # ... as a flow to its IPv6 address on the target port, naming the Service (the IPv6 reverse NAT)
    assert ("v6-d", d6, 80, "v6-web") in drops, out

    # offline, on the live pods (their podIPs) and the policies: the same verdicts for the IPv6 peers
    pods_file, policies_file = tmp_path / "pods.yaml", tmp_path / "policies.yaml"
    pods_file.write_text(yaml.safe_dump_all(items))
    policies_file.write_text(yaml.safe_dump_all(policies))
    expect = tmp_path / "expect.yaml"
    expect.write_text(yaml.safe_dump({"expectations": [
        {"from": "v6-a", "to": b6, "port": 80, "protocol": "TCP", "expect": "allow"},
        {"from": "v6-a", "to": b6, "port": 128, "protocol": "ICMPv6", "expect": "allow"},
        {"from": "v6-a", "to": b6, "port": 81, "protocol": "TCP", "expect": "deny"},
        {"from": "v6-c", "to": b6, "port": 80, "protocol": "TCP", "expect": "deny"},
        {"from": "v6-a", "to": w6, "port": 80, "protocol": "TCP", "expect": "allow"},
        {"from": "v6-a", "to": w4, "port": 80, "protocol": "TCP", "expect": "deny"},
    ]}))
    out = node.cilia("verify", "-f", str(pods_file), "-f", str(policies_file), "--expect", str(expect),
                     check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    # trace on the IPv6 ClusterIP decides per backend, on the backends' IPv6 addresses, as the kernel did
    svc_file = tmp_path / "svc.yaml"
    svc_file.write_text(yaml.safe_dump({**web, "spec": {**web["spec"], "clusterIPs": [vip4, vip6]}}))
    out = node.cilia("trace", "-f", str(pods_file), "-f", str(policies_file), "-f", str(svc_file),
                     "--from", "default/v6-a", "--to", vip6, "--port", "8080/TCP", "-o", "json", check=False)
    flows = {(f["to"]["name"], f["to"].get("ip"), f["port"], f["allowed"])
             for f in json.loads(out.stdout)["flows"]}
    assert out.returncode == 1, out.stderr
    assert flows == {("default/v6-b", b6, 80, True), ("default/v6-d", d6, 80, False)}, flows
