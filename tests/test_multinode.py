"""Several nodes on this machine (root): ``cilia up --nodes 3`` on the lab's etcd, pods spread over
the nodes, the seed's story across nodes (egress on the source node, ingress on the destination
node, over IPv4 and, where the kernel allows the lab's IPv6, over the pods' IPv6 twins), a label
change on one node enforced on another, and ``cilia down`` leaving nothing behind.
Scheduling itself (:func:`cilia.agent.cluster.node_for`) is checked without root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from cilia.agent.client import AgentClient
from cilia.agent.cluster import SchedulingError, member_config, node_for
from cilia.agent.config import AgentConfig
from cilia.agent.desired import PodKey
from cilia.datapath.dualstack import ipv6_of
from cilia.lab import etcd_keeper, netns, nodes_lab, veth
from cilia.lab.etcd_pki import EtcdPki
from cilia.store import Kind, Store, open_store
from cilia.store.etcd import open_etcd_store
from tests.conftest import SEED

NODES = 3
CURL = ["curl", "-s", "-o", "/dev/null", "--max-time"]


# --------------------------------------------------------------------------- scheduling (no root)


def test_node_for_follows_node_name_else_spreads_by_hash() -> None:
    pods = [PodKey("default", f"p{i}") for i in range(60)]
    spread = [node_for(p, {}, 3) for p in pods]
    assert set(spread) == {0, 1, 2}
    assert spread == [node_for(p, {"spec": {}}, 3) for p in pods]  # every agent agrees
    assert node_for(pods[0], {"spec": {"nodeName": "node-2"}}, 3) == 2
    assert node_for(pods[0], {"spec": {"nodeName": "cilia-node-1"}}, 3) == 1
    with pytest.raises(SchedulingError, match="node-7"):
        node_for(pods[0], {"spec": {"nodeName": "node-7"}}, 3)


def test_member_config_gives_each_node_its_own_directories_and_pins(tmp_path: Path) -> None:
    base = AgentConfig(state_dir=tmp_path / "s", run_dir=tmp_path / "r", store="etcd",
                       etcd_endpoints="198.18.254.254:2379", cluster_size=2)
    m = member_config(base, 1)
    assert (m.state_dir, m.run_dir, m.node_index, m.node_name, m.netns, m.pin_root) == (
        tmp_path / "s" / "nodes" / "node-1", tmp_path / "r" / "nodes" / "node-1", 1, "node-1",
        "cilia-node-1", "/sys/fs/bpf/cilia/node-1/v1")
    assert (m.store, m.etcd_endpoint_list, m.cluster_size) == ("etcd", ["198.18.254.254:2379"], 2)


# --------------------------------------------------------------------------- live (root)


class Cluster:
    """Three nodes run through the CLI, as a user would."""

    def __init__(self, base: Path) -> None:
        self.pin_root = Path(f"/sys/fs/bpf/cilia/test-{uuid.uuid4().hex[:8]}")
        self.env = {**os.environ, "CILIA_STATE_DIR": str(base / "state"),
                    "CILIA_RUN_DIR": str(base / "run"), "CILIA_PIN_ROOT": str(self.pin_root)}
        self.base = base

    def cilia(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "cilia.cli.main", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"cilia {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def socket(self, i: int) -> Path:
        return self.base / "run" / "nodes" / f"node-{i}" / "cilia.sock"

    def endpoints(self) -> dict[str, dict[str, Any]]:
        """``pod name -> endpoint`` with the node index it runs on."""
        out = {}
        for i in range(NODES):
            for ep in AgentClient(self.socket(i)).endpoints():
                out[ep["pod"].split("/", 1)[1]] = {**ep, "node": i}
        return out

    def curl(self, src: dict[str, Any], dst_ip: str, max_time: str = "2") -> int:
        argv = ["nsenter", f"--net={netns.path_of(src['netns'])}", "--", *CURL, max_time, f"http://{dst_ip}/"]
        return subprocess.run(argv, capture_output=True, check=False, timeout=10).returncode

    def agents(self) -> dict[str, tuple[int, bool]]:
        """``node -> (agent pid, ready)`` from ``cilia node list``."""
        rows = json.loads(self.cilia("node", "list", "-o", "json").stdout)["items"]
        return {r["name"]: (r["agent"], r["ready"]) for r in rows}

    def agents_registered(self) -> dict[str, bool]:
        rows = json.loads(self.cilia("node", "list", "-o", "json").stdout)["items"]
        return {r["name"]: r["registered"] for r in rows}

    def settings(self) -> dict[str, Any]:
        return json.loads((self.base / "state" / "node.json").read_text())

    def store(self) -> Store:
        """The cluster's store as a client of the lab's etcd: mutual TLS with the lab's client cert."""
        pki = EtcdPki(self.base / "state" / "etcd" / "pki")
        return open_etcd_store(self.settings()["etcd_endpoints"].split(","), tls=pki.client_tls())


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.cilia("down", "--purge", check=False)
        # Safety net if `down` itself broke: nothing of the lab may stay on the machine.
        etcd_keeper.stop(tmp_path / "state" / "etcd")
        if nodes_lab.leftovers():
            nodes_lab.remove_nodes()


def _wait(cond: Any, timeout: float, step: float = 0.05) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout}s: {cond.__code__.co_firstlineno}")
        time.sleep(step)
    return time.monotonic() - t0


@pytest.mark.root
def test_three_nodes_enforce_across_nodes_and_go_down_cleanly(cluster: Cluster, tmp_path: Path) -> None:
    up = json.loads(cluster.cilia("up", "--nodes", str(NODES), "-o", "json").stdout)
    assert [n["node"] for n in up["nodes"]] == ["node-0", "node-1", "node-2"]
    assert len(up["etcd"]) == 3
    listed = json.loads(cluster.cilia("node", "list", "-o", "json").stdout)["items"]
    assert [(r["name"], r["address"], r["podCIDR"], r["registered"], r["ready"]) for r in listed] == [
        ("node-0", "198.18.254.1", "198.18.0.0/20", True, True),
        ("node-1", "198.18.254.2", "198.18.16.0/20", True, True),
        ("node-2", "198.18.254.3", "198.18.32.0/20", True, True),
    ]

    status = json.loads(cluster.cilia("status", "-o", "json").stdout)["nodes"]
    assert sorted(status) == ["node-0", "node-1", "node-2"] and all(st["ready"] for st in status.values())
    # issue 13 item 1: each node's underlay is a guard-only device of its own datapath (no enforce flags)
    for i in range(NODES):
        rows = json.loads(subprocess.run(  # nsenter, not ip netns exec: that remounts /sys (bpffs)
            ["nsenter", f"--net={netns.path_of(nodes_lab.node_netns(i))}", "--", sys.executable, "-m",
             "cilia.cli.main", "bpf",
             "endpoint", "list", "-o", "json", "--pin-root", f"{cluster.pin_root}/node-{i}/v1",
             "--state-dir", str(tmp_path / "state" / "nodes" / f"node-{i}")],
            capture_output=True, text=True, check=True, timeout=60).stdout)
        underlay = [r for r in rows if r["ifname"] == nodes_lab.UNDERLAY_IF]
        assert [(r["endpoint_id"] >= 0xFF00, r["flags"]) for r in underlay] == [(True, ["policy_ready"])]

    cluster.cilia("apply", "-f", str(SEED / "app-a.yaml"), "-f", str(SEED / "app-b.yaml"))
    eps = cluster.endpoints()
    assert sorted(n.rsplit("-", 2)[0] for n in eps) == ["app-a", "app-a", "app-b", "app-b"]
    a_pods = [e for n, e in eps.items() if n.startswith("app-a")]
    b_pods = [e for n, e in eps.items() if n.startswith("app-b")]
    assert len({e["node"] for e in a_pods}) == 2, "the Deployment's two pods run on different nodes"
    for e in eps.values():  # each pod's address is from its node's /20
        assert e["ip"].startswith(f"198.18.{16 * e['node']}."), e
    # Same labels, same identity on every node (the cluster allocator).
    assert len({e["identity"] for e in a_pods}) == 1 and len({e["identity"] for e in b_pods}) == 1
    a, b = next((x, y) for x in a_pods for y in b_pods if x["node"] != y["node"])

    # kubectl's view names each pod's node; exec finds the pod on its node.
    items = json.loads(cluster.cilia("get", "pods", "-o", "json").stdout)["items"]
    assert {i["metadata"]["name"]: (i["spec"]["nodeName"], i["status"]["podIP"]) for i in items} == {
        n: (f"node-{e['node']}", e["ip"]) for n, e in eps.items()}
    assert f"node-{b['node']}" in cluster.cilia("get", "pods", "-o", "wide").stdout

    assert cluster.curl(a, b["ip"]) == 0, "no policy: app-a reaches app-b on another node"
    # IPv6 across nodes: b's twin through both nodes' host stacks and the underlay's IPv6 routes.
    b6 = ipv6_of(b["ip"]) if veth.ipv6_available() else ""
    if b6:
        assert b.get("ip6") == b6, b
        b_item = next(i for i in items if i["metadata"]["name"] == b["pod"].split("/", 1)[1])
        assert b_item["status"]["podIPs"] == [{"ip": b["ip"]}, {"ip": b6}]
        assert cluster.curl(a, f"[{b6}]") == 0, "no policy: app-a reaches app-b's IPv6 address"
    a_name = a["pod"].split("/", 1)[1]
    assert cluster.cilia("exec", a_name, "--", *CURL, "2", f"http://{b['ip']}/", check=False).returncode == 0

    # The corrected deny (egress of app-a) cuts it, on the source node.
    cluster.cilia("apply", "-f", str(SEED / "deny-a-to-b-fixed.yaml"))
    assert cluster.curl(a, b["ip"], "1") != 0  # an expected drop waits out --max-time: 1 s will do
    if b6:  # the remote pod's /128 carries its identity in the source node's ipcache
        assert cluster.curl(a, f"[{b6}]", "1") != 0
    cluster.cilia("delete", "-f", str(SEED / "deny-a-to-b-fixed.yaml"))
    _wait(lambda: cluster.curl(a, b["ip"], "0.5") == 0, 10)

    # Ingress of app-b on the destination node: only frontends may connect.
    ingress = tmp_path / "b-from-frontend.yaml"
    ingress.write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: b-from-frontend}\n"
        "spec:\n  endpointSelector: {matchLabels: {app: app-b}}\n  ingress:\n"
        "  - fromEndpoints: [{matchLabels: {access: frontend}}]\n"
        "    toPorts: [{ports: [{port: '80', protocol: TCP}]}]\n"
    )
    cluster.cilia("apply", "-f", str(ingress))
    assert cluster.curl(a, b["ip"], "1") != 0, "app-a is no frontend: dropped by app-b's node"
    if b6:  # and a's /128 carries a's identity in the destination node's ipcache
        assert cluster.curl(a, f"[{b6}]", "1") != 0

    # A label change on a's node reaches b's node: new identity, ipcache entry, policy.
    store = cluster.store()
    try:
        pod = a["pod"].split("/", 1)[1]

        def label(obj: dict[str, Any]) -> dict[str, Any]:
            obj["metadata"]["labels"]["access"] = "frontend"
            return obj

        store.update(Kind.PODS.key("default", pod), label)
        took = _wait(lambda: cluster.curl(a, b["ip"], "0.1") == 0, 10, step=0.01)
    finally:
        store.close()
    print(f"\nlabel change on node-{a['node']} enforced on node-{b['node']} after {took * 1000:.0f} ms")
    relabelled = cluster.endpoints()[pod]
    assert relabelled["identity"] != a["identity"]
    assert "k8s:access=frontend" in relabelled["labels"]

    # An agent killed on b's node: `cilia up` again restarts only it; it adopts its pods and the
    # policy holds (enforcement never stopped: the maps stay pinned).
    before = {n: pid for n, (pid, _) in cluster.agents().items()}
    victim = f"node-{b['node']}"
    os.kill(before[victim], signal.SIGKILL)
    cluster.cilia("up")
    after = cluster.agents()
    others = [n for n in before if n != victim]
    assert {n: after[n] for n in others} == {n: (before[n], True) for n in others}
    assert after[victim][0] != before[victim] and after[victim][1]
    assert {n: e["ip"] for n, e in cluster.endpoints().items()} == {n: e["ip"] for n, e in eps.items()}
    assert cluster.curl(a, b["ip"]) == 0
    assert cluster.curl(next(e for e in a_pods if e is not a), b["ip"], "1") != 0

    # a's node loses its lease (as after etcd was out of reach longer than the TTL): its record
    # and endpoints vanish from etcd, the agent rejoins and b's node admits a again.
    pki = EtcdPki(tmp_path / "state" / "etcd" / "pki")  # the lab's etcd: mutual TLS only
    etcdctl = ["etcdctl", f"--endpoints={cluster.settings()['etcd_endpoints']}", f"--cacert={pki.ca}",
               f"--cert={pki.client_cert}", f"--key={pki.client_key}"]
    ctl_env = {**os.environ, "ETCDCTL_API": "3"}

    def node_lease() -> int:
        got = subprocess.run([*etcdctl, "get", f"/cilia/cluster/v1/nodes/node-{a['node']}", "-w", "json"],
                             env=ctl_env, capture_output=True, text=True, check=True)
        kvs = json.loads(got.stdout).get("kvs") or [{"lease": 0}]
        return int(kvs[0]["lease"])

    lease = node_lease()
    subprocess.run([*etcdctl, "lease", "revoke", f"{lease:x}"], env=ctl_env, capture_output=True, check=True)
    _wait(lambda: node_lease() not in (0, lease), 20, step=0.2)  # rejoined on a new lease
    assert cluster.agents_registered() == {f"node-{i}": True for i in range(NODES)}
    _wait(lambda: cluster.curl(a, b["ip"], "0.5") == 0, 10)

    # Down: every node, etcd member, the bridge and the pins go.
    members = etcd_keeper.read(tmp_path / "state" / "etcd")
    assert members is not None
    down = json.loads(cluster.cilia("down", "-o", "json").stdout)
    assert down["leftovers"] == [] and down["errors"] == []
    assert nodes_lab.leftovers() == []
    assert not any(n.startswith("cilia-node-") for n in netns.names())
    for pid in [members["pid"], *members["members"]]:  # type: ignore[list-item]
        assert not Path(f"/proc/{pid}").exists() or b"etcd" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not cluster.pin_root.exists()


@pytest.mark.root
def test_given_etcd_endpoints_are_used_and_left_running(cluster: Cluster, tmp_path: Path) -> None:
    # An etcd that is not the lab's: reachable from node namespaces on the underlay address.
    with IPRoute() as ipr:
        ipr.link("add", ifname=nodes_lab.BRIDGE, kind="bridge")
        br = ipr.link_lookup(ifname=nodes_lab.BRIDGE)[0]
        ipr.addr("add", index=br, address=nodes_lab.BRIDGE_ADDRESS, prefixlen=24)
        ipr.link("set", index=br, state="up")
    outside = tmp_path / "outside-etcd"
    try:
        endpoints = etcd_keeper.start(outside, nodes_lab.BRIDGE_ADDRESS, tls=False)  # plain, not the lab's
        loopback = cluster.cilia("up", "--nodes", "2", "--etcd-endpoints", "127.0.0.1:2379", check=False)
        assert loopback.returncode != 0 and "own loopback" in loopback.stderr
        up = json.loads(cluster.cilia("up", "--nodes", "2", "--etcd-endpoints", ",".join(endpoints),
                                      "-o", "json").stdout)
        assert up["etcd"] == endpoints
        assert etcd_keeper.read(tmp_path / "state" / "etcd") is None, "no etcd of its own"
        cluster.cilia("apply", "-f", str(SEED / "app-b.yaml"))
        store = open_store(backend="etcd", endpoints=endpoints)
        try:
            assert sorted(r.key.name.rsplit("-", 2)[0] for r in store.list(Kind.PODS)) == ["app-b", "app-b"]
        finally:
            store.close()
        down = json.loads(cluster.cilia("down", "-o", "json").stdout)
        assert down["leftovers"] == []
        assert etcd_keeper.read(outside) is not None, "an etcd cilia did not start is not stopped"
    finally:
        etcd_keeper.stop(outside)
        if nodes_lab.leftovers():
            nodes_lab.remove_nodes()


@pytest.mark.root
def test_one_deployment_controller_and_another_takes_over_when_its_agent_is_killed(cluster: Cluster) -> None:
    cluster.cilia("up", "--nodes", str(NODES))

    def controllers() -> list[str]:
        rows = json.loads(cluster.cilia("node", "list", "-o", "json").stdout)["items"]
        return [r["name"] for r in rows if r["controller"]]

    first = controllers()
    assert len(first) == 1, "exactly one node runs the Deployment controller"
    table = cluster.cilia("node", "list").stdout
    assert table.splitlines()[0].split() == ["NAME", "ADDRESS", "POD", "CIDR", "REGISTERED", "AGENT",
                                             "ENDPOINTS", "IDENTITIES", "CONTROLLER"]
    assert [ln.split()[0] for ln in table.splitlines()[1:] if ln.split()[-1] == "yes"] == first

    store = cluster.store()
    try:
        def app_b_pods() -> int:
            return sum(1 for r in store.list(Kind.PODS) if r.key.name.startswith("app-b-"))

        cluster.cilia("apply", "-f", str(SEED / "app-b.yaml"))
        assert app_b_pods() == 2

        # The controller's agent dies; the Deployment is scaled while its lease is still alive.
        pid, _ = cluster.agents()[first[0]]
        os.kill(pid, signal.SIGKILL)

        def scale(obj: dict[str, Any]) -> dict[str, Any]:
            obj["spec"]["replicas"] = 4
            return obj

        store.update(Kind.DEPLOYMENTS.key("default", "app-b"), scale)
        took = _wait(lambda: app_b_pods() == 4, 40, step=0.2)  # lease TTL (15 s), then the election
        print(f"\nnew controller created the pods {took:.1f} s after the scale")
        now = controllers()
        assert len(now) == 1 and now != first
        time.sleep(1)
        assert app_b_pods() == 4, "no duplicate pods from a second controller"

        # The killed agent comes back as an ordinary node: the controller stays where it is.
        cluster.cilia("up")
        assert controllers() == now
        assert app_b_pods() == 4
    finally:
        store.close()


SERVICE_ACROSS_NODES = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeName: node-2
      containers: [{name: web, image: nginxdemos/hello, ports: [{containerPort: 80}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client}
spec:
  replicas: 1
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      nodeName: node-0
      containers: [{name: client, image: curlimages/curl}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports: [{port: 8080, targetPort: 80}]
"""

CLIENT_EGRESS = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: client-egress}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
  - {peer}
    toPorts: [{{ports: [{{port: '80', protocol: TCP}}]}}]
"""


@pytest.mark.root
def test_a_service_whose_only_backend_is_on_another_node(cluster: Cluster, tmp_path: Path) -> None:
    cluster.cilia("up", "--nodes", str(NODES))
    manifest = tmp_path / "svc.yaml"
    manifest.write_text(SERVICE_ACROSS_NODES)
    cluster.cilia("apply", "-f", str(manifest))
    eps = cluster.endpoints()
    client = next(e for n, e in eps.items() if n.startswith("client-"))
    web = next(e for n, e in eps.items() if n.startswith("web-"))
    assert (client["node"], web["node"]) == (0, 2)
    store = cluster.store()
    try:
        rec = store.get(Kind.SERVICES.key("default", "web"))
        assert rec is not None
        cluster_ip, cluster_ip6 = rec.value["spec"]["clusterIPs"]
    finally:
        store.close()
    url, url6 = f"{cluster_ip}:8080", f"[{cluster_ip6}]:8080"  # dual stack: both ClusterIPs translate

    # node-0's service table has the backend node-2 published (the client's node translates).
    _wait(lambda: cluster.curl(client, url, "0.5") == 0, 10)

    # Policy decides on the backend, not on the ClusterIP: toServices admits it ...
    policy = tmp_path / "client-egress.yaml"
    to_web = "toServices: [{k8sService: {serviceName: web, namespace: default}}]"
    policy.write_text(CLIENT_EGRESS.format(peer=to_web))
    cluster.cilia("apply", "-f", str(policy))
    assert cluster.curl(client, url) == 0
    # (the IPv6 ClusterIP: node-0 balances to the IPv6 twin of the address node-2 published)
    assert cluster.curl(client, url6) == 0
    # ... a rule naming some other peer does not, though the ClusterIP is the same.
    policy.write_text(CLIENT_EGRESS.format(peer="toEndpoints: [{matchLabels: {app: nothing-like-web}}]"))
    cluster.cilia("apply", "-f", str(policy))
    assert cluster.curl(client, url, "1") != 0
    assert cluster.curl(client, web["ip"], "1") != 0
