"""Live (root): the seed's story across three nodes (``cilia up --nodes 3``), each pair of pods on
different nodes tried live (curl) and offline (``cilia trace`` on the same YAML), and ``cilia
observe`` fanning in every node's flows (Hubble Relay's part): each drop shown once, by the node
whose policy dropped it (egress: the source's node; ingress: the destination's), naming the rule
``cilia trace`` names; ``--node-name`` keeps one node's; node audit mode per node (``cilia audit on
--node``) and namespace audit (the Namespace annotation, in the shared store) on every node.

One cluster for the module. Run it under the machine-wide lab lock:
``flock /tmp/cilia-cluster.lock python -m pytest -q tests/test_observe_cluster.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cilia.agent.client import AgentClient
from cilia.cli.main import app
from cilia.lab import etcd_keeper, netns, nodes_lab
from tests.conftest import SEED

pytestmark = pytest.mark.root

NODES = 3
TCP, UDP = (80, "TCP"), (7, "UDP")  # the seed's web servers; a UDP echo port added to the same pods
DROP_WAIT, PASS_WAIT = 1.5, 5.0  # how long a probe waits: trace expects a drop / expects it through
UDP_PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
s.sendto(b"cilia", (sys.argv[1], int(sys.argv[2])))
try:
    s.recvfrom(64)
except OSError:
    sys.exit(1)
"""
DENY = SEED / "deny-a-to-b-fixed.yaml"
ALLOW_INTO_FRONTEND = SEED / "allow-frontend-to-b.yaml"


@dataclass(frozen=True)
class Pod:
    name: str
    ip: str
    node: str
    netns: str


Ref = tuple[str, str, str, str]  # kind, namespace, name, rule


@dataclass(frozen=True)
class Decision:
    """What ``cilia trace`` says of one pair: allowed, or the side that denies, its node and rule."""

    allowed: bool
    direction: str = ""  # EGRESS | INGRESS of the first side that denies
    node: str = ""
    denied_by: frozenset[Ref] = frozenset()
    default_deny_by: frozenset[Ref] = frozenset()


class LabCluster:
    def __init__(self, base: Path) -> None:
        self.pin_root = Path(f"/sys/fs/bpf/cilia/test-{uuid.uuid4().hex[:8]}")
        self.base = base
        self.env = {**os.environ, "CILIA_STATE_DIR": str(base / "state"),
                    "CILIA_RUN_DIR": str(base / "run"), "CILIA_PIN_ROOT": str(self.pin_root)}  # fmt: skip
        self.pods: dict[str, Pod] = {}
        self.manifests: list[Path] = []

    def cilia(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "cilia.cli.main", *args], env=self.env,
                              capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"cilia {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def load_pods(self) -> None:
        for i in range(NODES):
            sock = self.base / "run" / "nodes" / f"node-{i}" / "cilia.sock"
            for ep in AgentClient(sock).endpoints():
                name = ep["pod"].split("/", 1)[1]
                self.pods[name] = Pod(name, ep["ip"], f"node-{i}", ep["netns"])

    def probe(self, src: Pod, dst: Pod, port: tuple[int, str], wait: float) -> bool:
        """curl (TCP) or one datagram to the pod's echo port (UDP), from inside ``src``; an answer
        comes at once, so ``wait`` only bounds what a drop costs (and a busy machine's delay)."""
        enter = ["nsenter", f"--net={netns.path_of(src.netns)}", "--"]
        if port == TCP:
            cmd = ["curl", "-s", "-o", "/dev/null", "--max-time", str(wait), f"http://{dst.ip}:{port[0]}/"]
        else:
            cmd = [sys.executable, "-c", UDP_PROBE, dst.ip, str(port[0]), str(wait)]
        return subprocess.run([*enter, *cmd], capture_output=True, check=False, timeout=10).returncode == 0

    def observe(self, *args: str) -> list[dict[str, Any]]:
        out = self.cilia("observe", *args, "-o", "json").stdout
        return [json.loads(line) for line in out.splitlines()]

    def cross_node_pairs(self) -> list[tuple[Pod, Pod]]:
        return [(s, d) for s in self.pods.values() for d in self.pods.values() if s.node != d.node]


def udp_echo(manifest: str) -> str:
    """The manifest with a UDP port beside the web server's, so that its pods echo UDP there."""
    indent = next(line for line in manifest.splitlines() if "- containerPort: 80" in line).split("-")[0]
    extra = f"{indent}- containerPort: {UDP[0]}\n{indent}  protocol: UDP\n"
    return manifest.replace(f"{indent}- containerPort: 80\n", f"{indent}- containerPort: 80\n{extra}", 1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    base = tmp_path_factory.mktemp("observe-cluster")
    c = LabCluster(base)
    try:
        c.cilia("up", "--nodes", str(NODES))
        apps = []
        for name in ("app-a.yaml", "app-b.yaml"):  # the seed's Deployments, each pod also echoing UDP
            apps.append(base / name)
            apps[-1].write_text(udp_echo((SEED / name).read_text()))
        c.cilia("apply", *(a for m in apps for a in ("-f", str(m))))
        c.load_pods()
        # the relabelled frontend pod of the story, on a node without app-b: app-b reaches it across nodes
        frontend = base / "frontend-pod.yaml"
        free = sorted({f"node-{i}" for i in range(NODES)} - {p.node for p in c.pods.values()
                                                             if p.name.startswith("app-b")})  # fmt: skip
        frontend.write_text(udp_echo((SEED / "frontend-pod.yaml").read_text().replace(
            "spec:\n", f"spec:\n  nodeName: {free[0]}\n", 1)))  # fmt: skip
        c.manifests = [*apps, frontend]
        c.cilia("apply", "-f", str(frontend))
        c.load_pods()
        yield c
    finally:
        down = c.cilia("down", "--purge", check=False)
        # safety nets if `down` itself broke: nothing of the lab may stay on the machine
        etcd_keeper.stop(base / "state" / "etcd")
        if nodes_lab.leftovers():
            nodes_lab.remove_nodes()
        pins_left = c.pin_root.exists()
        if pins_left:
            shutil.rmtree(c.pin_root, ignore_errors=True)
        assert not pins_left and down.returncode == 0, f"cilia down:\n{down.stdout}\n{down.stderr}"


def _ref(r: dict[str, Any]) -> Ref:
    """A rule as ``cilia trace -o json`` names it, in the flow's words (``egressDeny[0]``)."""
    rule = f"{r['section']}[{r['index']}]" if r["index"] >= 0 else ""
    if rule and r.get("spec_index"):
        rule = f"specs[{r['spec_index']}].{rule}"
    return (r["kind"], r["namespace"], r["name"], rule)


def _flow_refs(refs: list[dict[str, Any]]) -> frozenset[Ref]:
    return frozenset((r["kind"], r["namespace"], r["name"], r.get("rule", "")) for r in refs)


def trace(files: list[Path], src: Pod, dst: Pod, port: tuple[int, str]) -> Decision:
    """``cilia trace`` of ``src`` → ``dst`` on ``port``, offline on the YAML the cluster was given."""
    args = ["trace", *(a for f in files for a in ("-f", str(f))), "--from", f"default/{src.name}",
            "--to", f"default/{dst.name}", "--port", f"{port[0]}/{port[1]}", "-o", "json"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code in (0, 1), res.output
    (flow,) = json.loads(res.stdout)["flows"]
    for side, direction, node in (("egress", "EGRESS", src.node), ("ingress", "INGRESS", dst.node)):
        s = flow[side]
        if not s["allowed"]:
            deny = s["drop_reason"] == 181
            return Decision(False, direction, node,
                            frozenset(_ref(r) for r in s["rules"]) if deny else frozenset(),
                            frozenset() if deny else frozenset(_ref(r) for r in s["default_deny_by"]))
    return Decision(True)


def _wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.2)


Probe = tuple[str, str, tuple[int, str]]  # source pod, destination pod, (port, protocol)


def run_stage(
    lab: LabCluster,
    files: list[Path],
    audited_nodes: frozenset[str] = frozenset(),
    audit_all: bool = False,
    ports: tuple[tuple[int, str], ...] = (TCP,),
) -> dict[Probe, Decision]:
    """Every cross-node pair on each port live and traced; checks the outcome and the flows
    ``cilia observe`` shows of this stage. A denying side on an audited node lets it through as AUDIT."""
    before = {(f["node_name"], f["seq"]) for f in lab.observe()}
    probes = [(s, d, port) for s, d in lab.cross_node_pairs() for port in ports]
    keys: list[Probe] = [(s.name, d.name, port) for s, d, port in probes]
    decisions = {k: trace(files, s, d, port) for k, (s, d, port) in zip(keys, probes, strict=True)}

    def audited(d: Decision) -> bool:
        return audit_all or d.node in audited_nodes

    waits = [PASS_WAIT if decisions[k].allowed or audited(decisions[k]) else DROP_WAIT for k in keys]
    with ThreadPoolExecutor(8) as pool:
        live = dict(zip(keys, pool.map(lambda p, w: lab.probe(*p, w), probes, waits), strict=True))

    for key, d in decisions.items():
        want = d.allowed or audited(d)
        assert live[key] == want, f"{key[0]} -> {key[1]} {key[2]}: live {live[key]}, trace {d}"

    decided = {k: d for k, d in decisions.items() if not d.allowed}
    by_ips = {(lab.pods[s].ip, lab.pods[t].ip, port): (s, t, port) for s, t, port in decided}

    def stage_flows() -> list[dict[str, Any]]:
        return [f for f in lab.observe("--verdict", "DROPPED", "--verdict", "AUDIT")
                if (f["node_name"], f["seq"]) not in before]  # fmt: skip

    def ips(f: dict[str, Any]) -> tuple[str, str, tuple[int, str]]:
        ((proto, l4),) = f["l4"].items()
        return (f["IP"]["source"], f["IP"]["destination"], (l4.get("destination_port", 0), proto))

    def seen() -> set[Probe]:
        return {by_ips[ips(f)] for f in stage_flows() if ips(f) in by_ips}

    _wait_for(lambda: seen() >= set(decided))
    flows = stage_flows()
    keys = [(f["node_name"], f["seq"]) for f in flows]
    assert len(keys) == len(set(keys)), "a flow shown twice by the fan-in"
    times = [f["time"] for f in flows]  # RFC 3339 with nanoseconds: text order is time order
    assert times == sorted(times), "the fan-in merges nodes in time order"
    for (s, t, port), d in decided.items():
        mine = [f for f in flows if ips(f) == (lab.pods[s].ip, lab.pods[t].ip, port)]
        assert mine, f"no drop observed for {s} -> {t} {port} ({d})"
        side = d.direction.lower()
        verdict = "AUDIT" if audited(d) else "DROPPED"
        decisive = [f for f in mine if f["traffic_direction"] == d.direction]
        # each drop once: only the node whose policy decided reports it, never the other one
        assert {(f["node_name"], f["verdict"]) for f in decisive} == {(d.node, verdict)}, (s, t, d, mine)
        if verdict == "DROPPED":
            assert decisive == mine, f"{s} -> {t}: dropped at {side}, yet seen elsewhere: {mine}"
        for f in decisive:
            assert (_flow_refs(f.get(f"{side}_denied_by", [])), _flow_refs(f.get("default_deny_by", []))) == (
                d.denied_by, d.default_deny_by), (s, t, f)
    assert not [f for f in flows if ips(f) not in by_ips and f["verdict"] == "DROPPED"], "a drop trace misses"
    print(f"\n{len(probes)} probes across nodes: {len(probes) - len(decided)} allowed, {len(decided)} denied "
          f"({len(flows)} drop/audit flows fanned in)")  # fmt: skip
    return decisions


def test_seed_story_across_nodes_live_equals_trace_and_observe_fans_in(lab: LabCluster) -> None:
    pods, manifests = lab.pods, lab.manifests
    assert sorted(n.rsplit("-", 2)[0] if n != "app-a-frontend" else n for n in pods) == [
        "app-a", "app-a", "app-a-frontend", "app-b", "app-b"]  # fmt: skip
    assert len({p.node for p in pods.values()}) >= 2

    # flows carry the node names `cilia get pods -o wide` and `cilia node list` use
    items = json.loads(lab.cilia("get", "pods", "-o", "json").stdout)["items"]
    assert {i["metadata"]["name"]: i["spec"]["nodeName"] for i in items} == {
        n: p.node for n, p in pods.items()}

    # a lab just started has dropped nothing: no policy decides yet, and a device's first packets (the
    # node's underlay, a pod's first MLD report) must not be "policy not ready" drops
    assert not [f for f in lab.observe() if f["verdict"] == "DROPPED"]

    # 1. no policy: every pair across nodes connects, as trace says
    first = run_stage(lab, manifests, ports=(TCP, UDP))
    assert all(d.allowed for d in first.values())

    # 2. the corrected deny: app-a (the frontend pod too) -> app-b dropped at egress, on the source's node
    lab.cilia("apply", "-f", str(DENY))
    second = run_stage(lab, [*manifests, DENY], ports=(TCP, UDP))
    denied = {k for k, d in second.items() if not d.allowed}
    assert {port for _, _, port in denied} == {TCP, UDP}, "an L3 deny: every protocol"
    assert denied and all(d.direction == "EGRESS" and k[1].startswith("app-b") for k, d in second.items()
                          if not d.allowed)  # fmt: skip

    # 3. the tutorial's "allow": an ingress rule into the frontend pod (default deny there for others)
    lab.cilia("apply", "-f", str(ALLOW_INTO_FRONTEND))
    earlier = {(f["node_name"], f["seq"]) for f in lab.observe()}
    files = [*manifests, DENY, ALLOW_INTO_FRONTEND]
    third = run_stage(lab, files)
    into_frontend = {k: d for k, d in third.items() if k[1] == "app-a-frontend"}
    assert {src.rsplit("-", 2)[0] for src, _, _ in into_frontend} == {"app-a", "app-b"}, "placement"
    for (src, _, _), d in into_frontend.items():
        assert d.allowed == src.startswith("app-b"), (src, d)
        if not d.allowed:
            assert (d.direction, d.node) == ("INGRESS", pods["app-a-frontend"].node)
    # the allowed ones (since the policy) name their allow rule, on the frontend's node
    into = lab.observe("--verdict", "FORWARDED", "--to-pod", "default/app-a-frontend")
    admitted = [f for f in into
                if f["traffic_direction"] == "INGRESS" and (f["node_name"], f["seq"]) not in earlier]
    allow = ("CiliumNetworkPolicy", "default", "allow-frontend-to-app-b", "ingress[0]")
    assert {(f["node_name"], *sorted(_flow_refs(f["ingress_allowed_by"]))) for f in admitted} == {
        (pods["app-a-frontend"].node, allow)}

    # --node-name keeps one node's flows: exactly the fan-in's flows of that node
    everything = lab.observe()
    for node in ("node-0", "node-1", "node-2"):
        only = lab.observe("--node-name", node)
        assert {f["node_name"] for f in only} <= {node}
        assert [(f["node_name"], f["seq"]) for f in only] == [
            (f["node_name"], f["seq"]) for f in everything if f["node_name"] == node]
    deciding = {d.node for dd in (second, third) for d in dd.values() if not d.allowed}
    stray = [f for f in everything if f["verdict"] == "DROPPED" and f["node_name"] not in deciding]
    assert {f["node_name"] for f in everything if f["verdict"] == "DROPPED"} == deciding, stray
    last_drop = [f for f in everything if f["verdict"] == "DROPPED"][-1]
    compact = lab.cilia("observe", "--print-node-name", "--verdict", "DROPPED", "--last", "1").stdout
    assert f" [{last_drop['node_name']}]: " in compact and compact.count("\n") == 1

    # -f follows every node at once: a new drop comes from its node's agent
    (src, dst, port), d = next((k, d) for k, d in third.items() if not d.allowed)
    known = {(f["node_name"], f["seq"]) for f in everything}
    follower = subprocess.Popen([sys.executable, "-m", "cilia.cli.main", "observe", "-f", "--follow-for", "5",
                                 "--verdict", "DROPPED", "-o", "json"], env=lab.env, stdout=subprocess.PIPE,
                                text=True)  # fmt: skip
    try:
        time.sleep(2.0)  # past its first read of every node
        assert not lab.probe(pods[src], pods[dst], port, DROP_WAIT)
        out, _ = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    new = [f for f in map(json.loads, out.splitlines()) if (f["node_name"], f["seq"]) not in known]
    seen = {(f["IP"]["source"], f["IP"]["destination"], f["node_name"], f["traffic_direction"]) for f in new}
    assert seen == {(pods[src].ip, pods[dst].ip, d.node, d.direction)}

    # 4. node audit mode on one node: its drops pass as AUDIT, the other nodes still drop
    audit_node = pods["app-a-frontend"].node
    lab.cilia("audit", "on", "--node", audit_node)
    status = json.loads(lab.cilia("audit", "status", "-o", "json").stdout)["nodes"]
    assert {n: (s["node"], s["applied_by_agent"]) for n, s in status.items()} == {
        f"node-{i}": (f"node-{i}" == audit_node, True) for i in range(NODES)}
    run_stage(lab, files, audited_nodes=frozenset({audit_node}))
    lab.cilia("audit", "off")

    # 5. namespace audit through the Namespace annotation: kept in the shared store, every node
    # audits the namespace's policies
    ns = lab.base / "default-audited.yaml"
    ns.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n"
                  "  annotations: {cilia.io/audit: 'true'}\n")  # fmt: skip
    lab.cilia("apply", "-f", str(ns))
    run_stage(lab, files, audit_all=True)
