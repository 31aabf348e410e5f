"""The host firewall on two nodes (root): ``cilia up --nodes 2 --host-firewall`` with Cilium's demo host
policy on the labelled node (the machine, on the bridge, is the world there) and the corpus'
``host-firewall-ingress`` policy (cilium-cli's connectivity test: every node admits health,
kube-apiserver, remote nodes and the world, and every pod but those named ``client``).

A pod on node-0 reaches node-1's own address (its underlay address, where node-1's hostNetwork pod
serves) across the underlay, where node-1's host firewall decides with the pod's identity (from the
cluster's ipcache); node-0 itself is a remote node there. A host policy that would cut the agents
from the lab's etcd is refused at apply, naming --force-host-policy.

Then every corpus host policy that test_analyze_host_corpus decides is applied in turn on the same lab
and its live TCP verdicts are compared with ``cilia trace`` on the same manifests plus the lab's Nodes
(a differential test). One cluster for the module; run it under the machine-wide lab lock:
``flock /tmp/cilia-cluster.lock python -m pytest -q tests/test_hostfw_cluster.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cilia.agent.client import AgentClient
from cilia.analyze.cluster import Analysis
from cilia.analyze.manifests import cluster_from_result
from cilia.analyze.peers import parse_port
from cilia.analyze.trace import trace
from cilia.k8s.loader import load_text
from cilia.lab import etcd_keeper, netns, nodes_lab
from tests.test_analyze_host_corpus import CASES, NODEPORT

DEMO = "cilium__cilium/examples__policies__host__demo-host-policy.yaml"
INGRESS = "cilium__cilium/cilium-cli__connectivity__builder__manifests__host-firewall-ingress.yaml"
NODE1 = nodes_lab.underlay_address(1)


class TwoNodes:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.pin_root = Path(f"/sys/fs/bpf/cilia/test-{uuid.uuid4().hex[:8]}")
        self.env = {**os.environ, "CILIA_STATE_DIR": str(base / "state"),
                    "CILIA_RUN_DIR": str(base / "run"), "CILIA_PIN_ROOT": str(self.pin_root)}

    def cilia(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "cilia.cli.main", *args], env=self.env,
                              capture_output=True, text=True, timeout=180, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"cilia {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def apply(self, *docs: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        path = self.base / f"m{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        return self.cilia("apply", "-f", str(path), check=check)

    def endpoints(self, node: int) -> list[dict[str, Any]]:
        return AgentClient(self.base / "run" / "nodes" / f"node-{node}" / "cilia.sock").endpoints()

    def host_enforcement(self) -> dict[str, dict[str, bool]]:
        """Each node's host endpoint's enforcement per direction, as its agent reports it."""
        return {h["node"]: h["enforcement"] for i in (0, 1) for h in self.endpoints(i) if h.get("host")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    c = TwoNodes(tmp_path_factory.mktemp("hostfw-cluster"))
    try:
        c.cilia("up", "--nodes", "2", "--host-firewall")
        yield c
    finally:
        down = c.cilia("down", "--purge", "-o", "json", check=False)
        etcd_keeper.stop(c.base / "state" / "etcd")
        if nodes_lab.leftovers():
            nodes_lab.remove_nodes()
        assert json.loads(down.stdout or "{}").get("leftovers", []) == [], down.stdout + down.stderr
        assert not c.pin_root.exists()


def _pod(name: str, node: str, labels: dict[str, str], host_network: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": node, "containers": [
        {"name": "c", "image": "nginxdemos/hello:plain-text", "ports": [{"containerPort": 8080}]}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def _wait(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    """``cond`` holds within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _serves(text: str, namespace: str | None, ip: str, port: int) -> bool:
    """ip:port answers ``namespace`` with ``text`` within a few tries (an allowed connection on a
    loaded machine may miss one)."""
    return _wait(lambda: text in _served(namespace, ip, port), 5.0)


def _served(namespace: str | None, ip: str, port: int) -> str:
    """What ip:port answers an HTTP request from ``namespace`` (None: the machine) ("" if nothing)."""
    with netns.entered(namespace) if namespace else contextlib.nullcontext():
        try:
            with socket.create_connection((ip, port), timeout=0.5) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return c.recv(4096).decode(errors="replace")
        except OSError:
            return ""


@pytest.mark.root
def test_host_firewall_ingress_on_two_nodes(cluster: TwoNodes, corpus: Path) -> None:
    cluster.apply(_pod("hf-client", "node-0", {"name": "client"}),
                  _pod("hf-other", "node-0", {"name": "other"}),
                  _pod("hf-hostnet", "node-1", {"app": "hf-hostnet"}, host_network=True),
                  yaml.safe_load((corpus / DEMO).read_text()))  # selects no node: none has the label
    eps = {e["pod"]: e for e in cluster.endpoints(0) if not e.get("host")}
    client, other = eps["default/hf-client"], eps["default/hf-other"]
    hosts = [e for i in (0, 1) for e in cluster.endpoints(i) if e.get("host")]
    assert [(h["node"], h["enforcement"]) for h in hosts] == [
        ("node-0", {"ingress": False, "egress": False}), ("node-1", {"ingress": False, "egress": False})]
    assert _serves("hf-hostnet", client["netns"], NODE1, 8080), "no host policy selects a node yet"
    assert _serves("hf-hostnet", None, NODE1, 8080), "the machine (world: the bridge's address) too"

    # Cilium's demo host policy on the node labelled node-access=ssh: the cluster anything, the world
    # only 22/TCP and ICMP echo; the other node stays open
    cluster.cilia("label", "node", "node-1", "node-access=ssh")
    assert cluster.host_enforcement() == {
        "node-0": {"ingress": False, "egress": False}, "node-1": {"ingress": True, "egress": False}}
    assert _served(None, NODE1, 8080) == "", "the world is refused by node-1"
    assert _serves("node-0 ok", None, nodes_lab.underlay_address(0), 4240), "node-0 is not selected"
    assert _serves("hf-hostnet", client["netns"], NODE1, 8080), "a pod is in the cluster"
    assert _serves("hf-hostnet", nodes_lab.node_netns(0), NODE1, 8080), "so is the remote node"
    cluster.cilia("label", "node", "node-1", "node-access-")
    assert cluster.host_enforcement()["node-1"] == {"ingress": False, "egress": False}

    cluster.apply(yaml.safe_load((corpus / INGRESS).read_text()))
    hosts = [e for i in (0, 1) for e in cluster.endpoints(i) if e.get("host")]
    assert all(h["enforcement"] == {"ingress": True, "egress": False} for h in hosts)
    assert _served(client["netns"], NODE1, 8080) == "", "a pod named client may reach no node"
    assert _serves("hf-hostnet", other["netns"], NODE1, 8080), "every other pod may"
    assert _serves("hf-hostnet", nodes_lab.node_netns(0), NODE1, 8080), "node-0 is a remote node there"
    assert _serves("node-1 ok", other["netns"], NODE1, 4240), "the health port"

    # egress only to the cluster: the agents could not reach the lab's etcd (world) any more
    lockout = {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
               "metadata": {"name": "hf-egress-cluster"},
               "spec": {"nodeSelector": {}, "egress": [{"toEntities": ["cluster"]}]}}
    refused = cluster.apply(lockout, check=False)
    assert refused.returncode != 0 and "--force-host-policy" in refused.stdout + refused.stderr
    assert "hf-egress-cluster" not in cluster.cilia("get", "ccnp").stdout, "nothing stored"


# --- the corpus' host policies live against `cilia trace` (differential) -----------------------------

WORLD_HOST = nodes_lab.BRIDGE_ADDRESS  # the machine on the lab's bridge: the world to the nodes
HEALTH = 4240


def _policy_port(docs: list[dict[str, Any]]) -> int:
    """The first TCP port the policy's ingress rules name (else 80): a port the policy decides."""
    for doc in docs:
        for spec in [doc.get("spec") or {}, *(doc.get("specs") or [])]:
            for rule in spec.get("ingress") or []:
                for pr in rule.get("toPorts") or []:
                    for p in pr.get("ports") or []:
                        tcp = str(p.get("protocol", "TCP")).upper() in ("TCP", "ANY")
                        if tcp and str(p.get("port", "")).isdigit():
                            port = int(p["port"])
                            if port not in (0, HEALTH, 8080):
                                return port
    return 80


def _has_egress(docs: list[dict[str, Any]]) -> bool:
    return any("egress" in spec or "egressDeny" in spec
               for doc in docs for spec in [doc.get("spec") or {}, *(doc.get("specs") or [])])


def _connects(namespace: str | None, ip: str, port: int, allowed_expected: bool) -> bool:
    """Whether a TCP connection from ``namespace`` (None: the machine) to ip:port is established live:
    polled up to 3 s where allowed is expected (a loaded machine may miss one), one 0.7 s try otherwise."""
    def once(timeout: float) -> bool:
        with netns.entered(namespace) if namespace else contextlib.nullcontext():
            try:
                with socket.create_connection((ip, port), timeout=timeout):
                    return True
            except OSError:
                return False
    if allowed_expected:
        return _wait(lambda: once(0.5), 3.0)
    return once(0.7)


@contextlib.contextmanager
def _listening(namespace: str, ports: set[int]) -> Iterator[None]:
    """TCP listeners on ``ports`` in ``namespace`` (ports already served there are left to their server);
    the kernel completes the handshake from the backlog, so no accept loop is needed for a connect."""
    socks: list[socket.socket] = []
    try:
        with netns.entered(namespace):
            for port in sorted(ports):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("0.0.0.0", port))
                    s.listen(64)
                    socks.append(s)
                except OSError:
                    s.close()
        yield
    finally:
        for s in socks:
            s.close()


@pytest.mark.root
def test_corpus_host_policies_live_equal_trace(cluster: TwoNodes, corpus: Path) -> None:
    """Each corpus host policy the offline test decides, applied in turn on the lab (node-1 carries the
    labels their nodeSelectors name): live TCP verdicts to node-1 (health port and a port the policy
    names, from the world, a pod and node-0) and from node-1 (egress, to node-0's health port) equal
    ``cilia trace``'s verdicts on the same manifests plus Node manifests built from ``cilia get nodes``."""
    pods = [_pod("hf-client", "node-0", {"name": "client"}), _pod("hf-other", "node-0", {"name": "other"}),
            _pod("hf-hostnet", "node-1", {"app": "hf-hostnet"}, host_network=True)]
    if "default/hf-client" not in {e.get("pod") for e in cluster.endpoints(0)}:
        cluster.apply(*pods)
    client = next(e for e in cluster.endpoints(0) if e.get("pod") == "default/hf-client")
    # node-1 carries the labels the nodeSelectors name (one label change per run: type=ingress-worker)
    labelled = {"node-access": "ssh", "type": "worker", "status": "lockdown"}
    cluster.cilia("label", "node", "node-1", *(f"{k}={v}" for k, v in labelled.items()))
    for f in (DEMO, INGRESS):  # the previous test's policies
        cluster.cilia("delete", "-f", str(corpus / f), check=False)
    node0 = nodes_lab.underlay_address(0)

    def lab_nodes() -> list[dict[str, Any]]:
        got = json.loads(cluster.cilia("get", "nodes", "-o", "json").stdout)
        nodes = got.get("items", []) if isinstance(got, dict) else got
        assert sorted(n["metadata"]["name"] for n in nodes) == ["node-0", "node-1"]
        return nodes

    nodes = lab_nodes()

    texts = {name: (corpus / name).read_text() for name in sorted(CASES)}
    texts[NODEPORT] = (corpus / NODEPORT).read_text().replace("NODE_WITHOUT_CILIUM_IP", "198.19.0.9")
    covered: dict[str, int] = {}
    skipped: list[str] = []
    verdicts = {True: 0, False: 0}
    previous: Path | None = None
    with _listening(nodes_lab.node_netns(1), {22, 80, 443, 6443, 10250, 3389}):
        for name, text in texts.items():
            docs = [d for d in yaml.safe_load_all(text) if d]
            path = cluster.base / f"corpus-{len(covered) + len(skipped)}.yaml"
            path.write_text(text)
            if previous is not None:
                cluster.cilia("delete", "-f", str(previous))
                previous = None
            applied = cluster.cilia("apply", "-f", str(path), check=False)
            if applied.returncode != 0:
                # A host policy whose egress would cut a node's agent from the lab's etcd (the world to
                # the nodes) is refused unless --force-host-policy: forcing it would leave the node
                # without its store, so it is not tried live (test_analyze_host_corpus decides it offline).
                said = applied.stdout + applied.stderr
                assert "--force-host-policy" in said, said
                skipped.append(name.rsplit("__", 1)[-1])
                continue
            previous = path
            key, _, value = CASES.get(name, ("x: y", []))[0].partition(": ")
            if key != "x" and labelled.get(key) != value:
                cluster.cilia("label", "node", "node-1", f"{key}={value}", "--overwrite")
                labelled[key] = value
                nodes = lab_nodes()
            offline = Analysis(cluster_from_result(load_text(
                yaml.safe_dump_all([*nodes, *pods]) + "---\n" + text, "lab.yaml")))
            port = _policy_port(docs)
            flows: list[tuple[str, str | None, str, str, int]] = [
                (src, ns, "node:node-1", NODE1, p)
                for src, ns in ((WORLD_HOST, None), ("default/hf-client", client["netns"]),
                                ("node:node-0", nodes_lab.node_netns(0)))
                for p in (HEALTH, port)
            ]
            if port != 80:  # a port most policies leave out, from the most restricted source
                flows.append((WORLD_HOST, None, "node:node-1", NODE1, 80))
            if _has_egress(docs):
                flows.append(("node:node-1", nodes_lab.node_netns(1), "node:node-0", node0, HEALTH))
            mismatches = []
            for src, ns, dst, ip, p in flows:
                want = all(f.allowed for f in trace(offline, src, dst, parse_port(f"{p}/TCP")).flows)
                live = _connects(ns, ip, p, want)
                verdicts[want] += 1
                if live != want:
                    mismatches.append((src, dst, p, "live", live, "trace", want))
            assert not mismatches, f"{name}: {mismatches}"
            covered[name.rsplit("__", 1)[-1]] = len(flows)
        if previous is not None:
            cluster.cilia("delete", "-f", str(previous))
    print(f"covered {covered}; verdicts {verdicts}; refused at apply (not forced): {skipped}")
    assert len(covered) >= 5 and verdicts[True] and verdicts[False], (covered, verdicts, skipped)
