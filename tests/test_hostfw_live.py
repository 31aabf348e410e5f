"""The host firewall live (root): ``cilia up --host-firewall`` on one node (index 12: pods
198.18.192.0/20, gateway 198.18.192.1, world hosts 198.19.12.0/24), with Cilium's demo host policy
(the corpus' ``examples/policies/host/demo-host-policy.yaml``) as its docs run it: the node labelled
``node-access=ssh``, from the cluster everything, from the world only TCP 22 and ICMP echo.

On one node the node is the machine's root namespace: the host firewall is only on the lab's
devices (pod veths, world hosts' veths), so only what pods and world hosts send to the node's lab
address, and what the node sends to them, is filtered (docs/differences.md). A test listener of
the node is bound to the gateway address only (never a wildcard) with IP_FREEBIND.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers_world import LiveNode, live_node, pod

from cilia.agent.client import AgentClient
from cilia.agent.health import IP_FREEBIND
from cilia.agent.hostendpoint import HOST_ENDPOINT_ID
from cilia.lab import netns
from cilia.lab.world import world_netns_name

NODE_INDEX = 12
GATEWAY = "198.18.192.1"
NODE = f"cilia-node-{NODE_INDEX}"
DEMO = "cilium__cilium/examples__policies__host__demo-host-policy.yaml"
TEST_PORT = 4242  # the test's own listener on the node's address


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    n = LiveNode(tmp_path_factory.mktemp("hostfw"), NODE_INDEX)
    # the node's saved settings say host firewall: live_node's `up` starts it "as it was"
    replace(n.cfg, node_index=NODE_INDEX, host_firewall=True, pin_root=str(n.pin_root)).save()
    yield from live_node(n.base, n)


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """A TCP listener of the node (the root namespace) on its lab address only; accepts in the
    background so connects complete."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
    s.bind((GATEWAY, TEST_PORT))
    s.listen(64)
    try:
        yield s
    finally:
        s.close()


def _endpoints(n: LiveNode) -> list[dict[str, Any]]:
    return AgentClient(n.cfg.socket_path).endpoints()  # what `cilia get endpoints -o json` lists


def _host_ep(n: LiveNode) -> dict[str, Any]:
    return next(e for e in _endpoints(n) if e.get("host"))


def _connects(namespace: str | None, ip: str, port: int) -> bool:
    """A TCP connection from ``namespace`` (None: the node, this test's namespace) is made."""
    def connect() -> bool:
        try:
            socket.create_connection((ip, port), timeout=0.5).close()
            return True
        except OSError:
            return False

    if namespace is None:
        return connect()
    with netns.entered(namespace):
        return connect()


def _ok(namespace: str | None, ip: str, port: int) -> bool:
    """Connects within a few tries (an allowed connection on a loaded machine may miss one)."""
    return _wait(lambda: _connects(namespace, ip, port), 5)


def _health(namespace: str) -> str:
    """What the node's health port answers a client in ``namespace`` ("" when nothing came)."""
    return _get(namespace, 4240)


def _get(namespace: str, port: int) -> str:
    """What the node's HTTP server on ``port`` answers a client in ``namespace`` ("" when nothing came)."""
    with netns.entered(namespace):
        try:
            with socket.create_connection((GATEWAY, port), timeout=0.5) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return c.recv(4096).decode(errors="replace")
        except OSError:
            return ""


def _wait(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.root
def test_demo_host_policy_on_a_labelled_node(node: LiveNode, listener: socket.socket, corpus: Path) -> None:
    # the demo policy selects no node yet (none has the label): nothing is enforced
    hostnet = pod("hf-hostnet", {"app": "hf-hostnet"}, (8080,))
    hostnet["spec"]["hostNetwork"] = True  # runs as the node, serves on the node's address
    demo = node.apply(pod("hf-client", {"app": "hf-client"}), hostnet,
                      yaml.safe_load((corpus / DEMO).read_text()))
    world = node.world_add("hf-w", 7, "80")
    host = _host_ep(node)
    client = next(e for e in _endpoints(node) if e["pod"] == "default/hf-client")
    pod_ns, client_ip, world_ns = client["netns"], client["ip"], world_netns_name(NODE_INDEX, "hf-w")

    assert (host["id"], host["identity"], host["labels"]) == (HOST_ENDPOINT_ID, 1, ["reserved:host="])
    assert host["enforcement"] == {"ingress": False, "egress": False}
    assert _wait(lambda: NODE in _health(pod_ns), 5), "the health port answers pods"
    assert _wait(lambda: "Server name: hf-hostnet" in _get(pod_ns, 8080), 5), \
        "the hostNetwork pod serves on the node's address"
    assert all(e["pod"] != "default/hf-hostnet" for e in _endpoints(node) if not e.get("host_network")), \
        "a hostNetwork pod has no endpoint of its own"
    assert _ok(world_ns, GATEWAY, TEST_PORT), "no host policy selects the node: the world reaches it"

    node.cilia("label", "node", NODE, "node-access=ssh")
    host = _host_ep(node)
    assert host["labels"] == ["k8s:node-access=ssh", "reserved:host="]
    assert host["enforcement"] == {"ingress": True, "egress": False}
    rows = [line.split()[:3] for line in node.cilia("get", "endpoints").stdout.splitlines()]
    assert [str(HOST_ENDPOINT_ID), "Enabled", "Disabled"] in rows

    assert _wait(lambda: NODE in _health(pod_ns), 5), "fromEntities cluster: pods reach any port of the node"
    assert _ok(pod_ns, GATEWAY, TEST_PORT)
    assert not _connects(world_ns, GATEWAY, TEST_PORT), "the world only on 22/TCP and ICMP echo"
    assert _health(world_ns) == "" and _get(world_ns, 8080) == "", "the hostNetwork pod is the host"
    assert _wait(lambda: "hf-hostnet" in _get(pod_ns, 8080), 5)
    ping = ["nsenter", f"--net={netns.path_of(world_ns)}", "--", "ping", "-c", "1", "-W", "1", GATEWAY]
    assert subprocess.run(ping, capture_output=True, check=False, timeout=10).returncode == 0, \
        "ICMP echo from the world is allowed"
    assert _ok(None, client_ip, 80) and _ok(None, world, 80), "egress is not enforced"
    entries = json.loads(node.cilia("bpf", "policy", "get", str(HOST_ENDPOINT_ID), "-o", "json").stdout)
    assert {"22/TCP", "8/ICMP"} <= {e["port_proto"] for e in entries if e["direction"] == "Ingress"}

    # Audit mode for the host endpoint alone (Cilium's first step): its drops are only reported.
    node.cilia("audit", "on", "--host")
    assert _wait(lambda: _connects(world_ns, GATEWAY, TEST_PORT)), "audited: let through"
    pods_audited = [e["pod"] for e in _endpoints(node) if e.get("audit") and not e.get("host")]
    assert _host_ep(node)["audit"] and not pods_audited, "the host endpoint alone ('Disabled (Audit)')"
    flows = [json.loads(f) for f in node.cilia("observe", "--last", "200", "-o", "json").stdout.splitlines()]
    to_test_port = [f for f in flows if f["l4"].get("TCP", {}).get("destination_port") == TEST_PORT
                    and f["destination"].get("identity") == 1 and f["source"].get("identity") == 2]
    drops = [f for f in to_test_port if f["verdict"] == "DROPPED"]
    assert drops and all("demo-host-policy" in json.dumps(f) for f in drops), "host drops name their policy"
    assert any(f["verdict"] == "AUDIT" for f in to_test_port), "audited host flows"
    node.cilia("audit", "off", "--host")
    assert _wait(lambda: not _connects(world_ns, GATEWAY, TEST_PORT))

    # Egress: the node may reach the world only; a pod (cluster) is denied, the world host is not.
    egress = node.apply({
        "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": "hf-egress-world"},
        "spec": {"nodeSelector": {"matchLabels": {"node-access": "ssh"}},
                 "egress": [{"toEntities": ["world"]}]}})
    assert _host_ep(node)["enforcement"] == {"ingress": True, "egress": True}
    assert not _connects(None, client_ip, 80)
    assert _ok(None, world, 80)

    # Without the label no host policy selects the node: nothing is enforced.
    node.cilia("label", "node", NODE, "node-access-")
    assert _host_ep(node)["enforcement"] == {"ingress": False, "egress": False}
    assert _ok(world_ns, GATEWAY, TEST_PORT) and _ok(None, client_ip, 80)

    # A crashed agent leaves no host filtering behind (its links go with it): the node stays reachable.
    node.cilia("label", "node", NODE, "node-access=ssh")
    assert not _connects(world_ns, GATEWAY, TEST_PORT)
    pid = int(node.cfg.pid_path.read_text())
    os.kill(pid, signal.SIGKILL)
    assert _wait(lambda: not Path(f"/proc/{pid}").exists())
    assert _ok(world_ns, GATEWAY, TEST_PORT), "host firewall off while no agent runs"
    assert _ok(None, client_ip, 80)
    assert egress.exists() and demo.exists()  # still stored: `cilia up` would enforce them again
