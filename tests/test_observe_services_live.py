"""Live (root, kernel datapath): a connection to a ClusterIP is translated before policy, and its
flows still name the Service the client addressed (``destination_service``, from the datapath's
reverse NAT entry), so ``cilia observe --to-service`` finds them; the agent's metrics endpoint
exposes the policy implementation delay of the policy applied (issue 14 item 7)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers_world import LiveNode, cnp, live_node, pod

pytestmark = pytest.mark.root

NODE_INDEX = 7  # pods 198.18.112.0/20: an index the other live modules do not use


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    base = tmp_path_factory.mktemp("obsvc-live")
    n = LiveNode(base, NODE_INDEX)
    n.cfg.state_dir.mkdir(parents=True, exist_ok=True)
    # only the metrics address: `cilia up` takes it as the node's saved setting
    n.cfg.settings_path.write_text(json.dumps({"metrics_addr": f"127.0.0.1:{_free_port()}"}))
    yield from live_node(base, n)


def service(name: str, port: int, target: int, selector: dict[str, str]) -> dict[str, Any]:
    ports = [{"port": port, "targetPort": target, "protocol": "TCP"}]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": selector, "ports": ports}}


def test_translated_connection_names_its_service(node: LiveNode) -> None:
    rule = {"fromEndpoints": [{"matchLabels": {"app": "obsvc-client"}}],
            "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}
    node.apply(pod("obsvc-client", {"app": "obsvc-client"}), pod("obsvc-web", {"app": "obsvc-web"}),
               service("obsvc-web", 8080, 80, {"app": "obsvc-web"}),
               cnp("obsvc-web-in", {"endpointSelector": {"matchLabels": {"app": "obsvc-web"}},
                                    "ingress": [rule]}))
    ip = ""
    for _ in range(100):
        items = json.loads(node.cilia("get", "svc", "obsvc-web", "-o", "json").stdout)["items"]
        ip = (items[0].get("spec") or {}).get("clusterIP", "") if items else ""
        if ip:
            break
        time.sleep(0.1)
    assert ip
    for _ in range(30):  # until the server in the pod listens
        if node.curl_from_pod("obsvc-client", ip, 8080):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no answer through {ip}:8080")
    web_ip = node.ips()["obsvc-web"]
    flows: list[dict[str, Any]] = []
    for _ in range(50):  # the flow reaches the agent's ring through the event reader
        out = node.cilia("observe", "--to-service", "default/obsvc-web", "-o", "json").stdout
        flows = [json.loads(x) for x in out.splitlines()]
        if any(f["traffic_direction"] == "INGRESS" for f in flows):  # the backend's policy decided
            break
        time.sleep(0.1)
    assert any(f["traffic_direction"] == "INGRESS" for f in flows), flows
    for f in flows:  # translated: the backend's address, and the Service it was addressed to
        assert f["IP"]["destination"] == web_ip and f["l4"]["TCP"]["destination_port"] == 80
        assert f["destination_service"] == {"name": "obsvc-web", "namespace": "default"}

    addr = json.loads(node.cfg.settings_path.read_text())["metrics_addr"]
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
    count = next(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith('cilium_policy_implementation_delay_count{source="custom-resource"}'))
    assert count >= 1
