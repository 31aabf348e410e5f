"""One live node against ``cilia verify`` (root): the verdicts measured with curl for CIDR rules
(except hole, egressDeny), fromCIDR, the host rule and pod peers are written as an expectations file,
and ``cilia verify`` on the same manifests must agree with every one; the live matrix is also checked
against the verdicts the policies call for."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.helpers_world import CURL, LiveNode, cnp, live_node, pod

pytestmark = pytest.mark.root


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LiveNode]:
    yield from live_node(tmp_path)


def _node_curl(ip: str) -> bool:
    out = subprocess.run([*CURL, f"http://{ip}/"], capture_output=True, text=True, check=False)
    return out.returncode == 0 and out.stdout == "200"


def test_live_verdicts_match_cilia_verify(node: LiveNode, tmp_path: Path) -> None:
    hosts = {name: node.world_add(name, octet, "80/TCP")
             for name, octet in (("w-in", 10), ("w-hole", 200), ("w-banned", 30), ("w-trusted", 20),
                                 ("w-stranger", 21))}
    node.apply(pod("client", {"app": "client"}), pod("server", {"app": "server"}))
    node.apply(
        cnp("client-out", {"endpointSelector": {"matchLabels": {"app": "client"}},
                           "egress": [{"toCIDRSet": [{"cidr": "198.19.11.0/24",
                                                      "except": ["198.19.11.128/25"]}],
                                       "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]},
                                      {"toEndpoints": [{"matchLabels": {"app": "server"}}]}],
                           "egressDeny": [{"toCIDR": [f"{hosts['w-banned']}/32"]}]}),
        cnp("client-in", {"endpointSelector": {"matchLabels": {"app": "client"}},
                          "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "server"}}]}]}),
        cnp("server-in", {"endpointSelector": {"matchLabels": {"app": "server"}},
                          "ingress": [{"fromCIDR": [f"{hosts['w-trusted']}/32"]},
                                      {"fromEndpoints": [{"matchLabels": {"app": "client"}}]}],
                          "ingressDeny": [{"fromEntities": ["host"]}]}),
    )
    ips = node.ips()
    probes = {  # (from PEER, to PEER) -> the probe of its live verdict on 80/TCP
        ("default/client", hosts["w-in"]): lambda: node.curl_from_pod("client", hosts["w-in"]),
        ("default/client", hosts["w-hole"]): lambda: node.curl_from_pod("client", hosts["w-hole"]),
        ("default/client", hosts["w-banned"]): lambda: node.curl_from_pod("client", hosts["w-banned"]),
        ("default/client", "default/server"): lambda: node.curl_from_pod("client", ips["server"]),
        ("default/server", "default/client"): lambda: node.curl_from_pod("server", ips["client"]),
        (hosts["w-trusted"], "default/server"): lambda: node.curl_from_world("w-trusted", ips["server"]),
        (hosts["w-stranger"], "default/server"): lambda: node.curl_from_world("w-stranger", ips["server"]),
        (hosts["w-in"], "default/client"): lambda: node.curl_from_world("w-in", ips["client"]),
        ("entity:host", "default/server"): lambda: _node_curl(ips["server"]),
        ("entity:host", "default/client"): lambda: _node_curl(ips["client"]),
    }
    # independent connections between different peers: run at once, so that the expected drops
    # wait out curl's timeout together rather than one after the other
    with ThreadPoolExecutor(len(probes)) as pool:
        futures = {pair: pool.submit(probe) for pair, probe in probes.items()}
        cases = {pair: f.result() for pair, f in futures.items()}
    assert list(cases.values()) == [True, False, False, True, True, True, False, False, False, True]
    expect = tmp_path / "expect.yaml"
    rows = [{"from": src, "to": dst, "port": 80, "protocol": "TCP", "expect": "allow" if ok else "deny"}
            for (src, dst), ok in cases.items()]
    expect.write_text(yaml.safe_dump({"apiVersion": "cilia.io/v1alpha1", "kind": "Expectations",
                                      "expectations": rows}))
    files = [a for p in sorted(node.manifests.glob("*.yaml")) for a in ("-f", str(p))]
    verify = node.cilia("verify", *files, "--expect", str(expect), check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
