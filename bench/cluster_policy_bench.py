"""Cluster policy benchmark (``make bench-cluster``, root): 1,000 pods on 3 nodes, policy propagation.

``cilia up --nodes 3`` on the lab's etcd, 1,000 pods (Deployments in four namespaces, spread over
the nodes by the scheduler; the probed ``target`` Deployments are pinned one per node with
``spec.nodeName``) and ``--policies`` background CiliumNetworkPolicies. Then ``--samples`` times a
policy change is written the way ``cilia apply`` writes it (:func:`cilia.agent.manifests.apply`
on the shared store): the CNP ``bench-probe`` selecting the targets now admits the source pod on
a new port. The change is enforced on a node when the new entry (target endpoint, source
identity, ingress, TCP, that port) is in the node's pinned BPF policy map for every target
endpoint of that node; the script reads each node's pinned map directly (exact-prefix lookups,
every ~0.5 ms), so a figure is the store write → kernel map latency, not an agent log line.

The same is then measured on one node (``cilia up --nodes 1``: the same etcd store, agent and
workload, all 1,000 pods on it) as the baseline, and the ratio cluster/single is printed.
Also printed: ``cilia up`` time, pods-up time (apply of the Deployments → every endpoint ready
on its node), agent resident memory per node. Private state/run/bpffs directories; everything is
removed at the end, also on failure or Ctrl-C. Run it under the machine's cluster lock (the make
target does): ``flock /tmp/cilia-cluster.lock python3 bench/cluster_policy_bench.py``.

The last line is ``summary: nodes=3 pods=1000 propagation_p50_ms=X propagation_p99_ms=X
single_p50_ms=X ratio_p50=X up_s=X``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cilia.agent import manifests  # noqa: E402
from cilia.agent.client import AgentClient  # noqa: E402
from cilia.agent.cluster import member_config, open_agent_store  # noqa: E402
from cilia.agent.config import AgentConfig  # noqa: E402
from cilia.datapath.bpf.pins import PinnedMaps, open_pinned  # noqa: E402
from cilia.datapath.maps.policy import F_DENY, PolicyValue, make_key  # noqa: E402
from cilia.lab import etcd_keeper, netns, nodes_lab  # noqa: E402
from cilia.lab.workloadd import PID_NAME as WORKLOADS_PID  # noqa: E402
from cilia.policy.types import Direction, Key, Proto  # noqa: E402
from cilia.store import EventType, Kind, Store  # noqa: E402

NAMESPACES = ("bench-0", "bench-1", "bench-2", "bench-3")
TARGET_NS = NAMESPACES[0]
TARGET_REPLICAS = 2  # per node
FILLER_REPLICAS = 10
PROBE_PORT_BASE = 10_000
POLL_S = 0.0005
IMAGE = "nginxdemos/hello:plain-text"


# --------------------------------------------------------------------------- workload


def deployment(ns: str, name: str, replicas: int, labels: dict[str, str],
               node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "web", "image": IMAGE, "ports": [{"containerPort": 80}]}]}
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": spec}},
    }  # fmt: skip


def cnp(ns: str, name: str, subject: dict[str, str], peer: dict[str, Any], port: int) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"endpointSelector": {"matchLabels": subject},
                 "ingress": [{"fromEndpoints": [peer],
                              "toPorts": [{"ports": [{"port": str(port), "protocol": "TCP"}]}]}]},
    }  # fmt: skip


def workload(nodes: int, pods: int) -> list[dict[str, Any]]:
    """Namespaces and Deployments totalling ``pods`` pods: ``target`` (2 per node, pinned), one
    ``src`` pod, and filler Deployments of 10 spread round-robin over the namespaces."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"bench": "cluster"}}}
        for ns in NAMESPACES
    ]
    for i in range(nodes):
        docs.append(deployment(TARGET_NS, f"target-{i}", TARGET_REPLICAS, {"app": "target", "slot": str(i)},
                               node=f"node-{i}"))
    docs.append(deployment(TARGET_NS, "src", 1, {"app": "bench-src"}))
    left = pods - nodes * TARGET_REPLICAS - 1
    i = 0
    while left > 0:
        n = min(FILLER_REPLICAS, left)
        ns = NAMESPACES[i % len(NAMESPACES)]
        docs.append(deployment(ns, f"app-{i}", n, {"app": f"app-{i}", "tier": f"t{i % 7}"}))
        left -= n
        i += 1
    return docs


def background_policies(count: int, apps: int) -> list[dict[str, Any]]:
    """Policy ``i`` selects filler app ``i`` and admits app ``i+1`` (same namespace scoping as
    the filler: the peer is named with its namespace label) on 80/TCP."""
    out = []
    for i in range(count):
        a, b = i % apps, (i + 1) % apps
        peer = {"matchLabels": {"app": f"app-{b}",
                                "k8s:io.kubernetes.pod.namespace": NAMESPACES[b % len(NAMESPACES)]}}
        out.append(cnp(NAMESPACES[a % len(NAMESPACES)], f"bg-{i}", {"app": f"app-{a}"}, peer, 80))
    return out


def probe_policy(port: int) -> dict[str, Any]:
    return cnp(TARGET_NS, "bench-probe", {"app": "target"}, {"matchLabels": {"app": "bench-src"}}, port)


def write_yaml(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text("---\n".join(json.dumps(d) + "\n" for d in docs))  # JSON is YAML
    return path


def pct(values: list[float], q: float) -> float:
    vals = sorted(values)
    return vals[min(len(vals) - 1, round(q * (len(vals) - 1)))]


# --------------------------------------------------------------------------- kernel signal


@dataclass
class NodeProbe:
    """One node's pinned policy map and the target endpoints on that node."""

    name: str
    maps: PinnedMaps
    endpoint_ids: list[int]

    def has(self, key: Key) -> bool:
        """Whether every target endpoint of this node has exactly ``key`` as an allow entry."""
        for eid in self.endpoint_ids:
            val = PolicyValue()
            # An LPM lookup answers the longest entry covering the key: check it is this very one.
            if not self.maps.policy.m.lookup(make_key(eid, key), val):
                return False
            if val.lpm_prefix != key.lpm_prefix or val.flags & F_DENY:
                return False
        return True


def wait_enforced(probes: list[NodeProbe], key: Key, t0: float, limit: float = 30.0) -> dict[str, float]:
    """Milliseconds from ``t0`` until each node's map holds ``key`` for its targets."""
    left = {p.name: p for p in probes}
    got: dict[str, float] = {}
    while left:
        now = time.perf_counter()
        if now - t0 > limit:
            raise RuntimeError(f"policy change not in the kernel of {sorted(left)} within {limit}s")
        for name, p in list(left.items()):
            if p.has(key):
                got[name] = (time.perf_counter() - t0) * 1000
                del left[name]
        time.sleep(POLL_S)
    return got


# --------------------------------------------------------------------------- one setup


@dataclass
class Result:
    nodes: int
    pods: int
    cilia_up_s: float = 0.0
    pods_up_s: float = 0.0
    pod_writes: int = 0  # PUTs of pod objects until every pod was up
    policies_s: float = 0.0
    per_node_ms: dict[str, list[float]] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # agent CPU per policy change
    down_s: float = 0.0

    @property
    def all_ms(self) -> list[float]:
        """The slowest node of each sample: when the change is enforced everywhere."""
        per_sample = zip(*self.per_node_ms.values(), strict=True)
        return [max(s) for s in per_sample]


@contextlib.contextmanager
def lab(nodes: int) -> Iterator[tuple[dict[str, str], AgentConfig, Callable[..., str]]]:
    """A private cluster of ``nodes`` nodes; torn down (down --purge, etcd, namespaces) on exit."""
    with tempfile.TemporaryDirectory(prefix="cilia-clusterbench-") as tmp:
        base = Path(tmp)
        env = {**os.environ, "CILIA_STATE_DIR": str(base / "state"), "CILIA_RUN_DIR": str(base / "run"),
               "CILIA_PIN_ROOT": f"/sys/fs/bpf/cilia/bench-{uuid.uuid4().hex[:8]}"}

        def cilia(*argv: str, timeout: float = 600) -> str:
            proc = subprocess.run([sys.executable, "-m", "cilia.cli.main", *argv], env=env,
                                  capture_output=True, text=True, check=False, timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"cilia {' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}\n"
                                   f"{proc.stderr[-2000:]}")
            return proc.stdout

        cfg = AgentConfig(state_dir=base / "state", run_dir=base / "run", pin_root=env["CILIA_PIN_ROOT"])
        try:
            yield env, cfg, cilia
        finally:
            code = -1
            with contextlib.suppress(Exception):
                code = subprocess.run([sys.executable, "-m", "cilia.cli.main", "down", "--purge"], env=env,
                                      capture_output=True, check=False, timeout=600).returncode
            if code != 0:
                print(f"warning: cilia down failed (exit {code}); removing what the benchmark made directly",
                      file=sys.stderr, flush=True)
                force_cleanup(base, env["CILIA_PIN_ROOT"])
            etcd_keeper.stop(base / "state" / "etcd")
            if nodes_lab.leftovers():
                nodes_lab.remove_nodes()


def force_cleanup(base: Path, pin_root: str) -> None:
    """When ``cilia down`` itself failed: stop the agents and workload daemons this run started
    (their pid files under ``base``, checked against their command line), delete the pods'
    namespaces (only the benchmark's Kubernetes namespaces) and the private pins."""
    for pid_file in [*base.rglob("agent.pid"), *base.rglob(WORKLOADS_PID)]:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            if str(base).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
    for name in netns.names():
        if any(name.startswith(f"cilia-{ns}-") for ns in NAMESPACES):
            with contextlib.suppress(Exception):
                netns.remove(name)
    pins = Path(pin_root)
    if pins.is_dir():
        for path in sorted(pins.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        with contextlib.suppress(OSError):
            pins.rmdir()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_pods(clients: dict[str, AgentClient], total: int, limit: float) -> None:
    t0 = time.monotonic()
    while sum(int(c.status()["endpoints"]) for c in clients.values()) < total:
        if time.monotonic() - t0 > limit:
            counts = {n: c.status()["endpoints"] for n, c in clients.items()}
            raise RuntimeError(f"{total} pods not up within {limit}s: {counts}")
        time.sleep(0.25)


def wait_revision(clients: dict[str, AgentClient], revision: int, limit: float) -> None:
    for c in clients.values():
        c.wait_revision(revision, limit)


def run_setup(nodes: int, pods: int, policies: int, samples: int) -> Result:
    res = Result(nodes, pods)
    with lab(nodes) as (_env, cfg, cilia):
        t = time.perf_counter()
        cilia("up", "--nodes", str(nodes), "-o", "json")
        res.cilia_up_s = time.perf_counter() - t
        print(f"[{nodes} node(s)] cilia up --nodes {nodes}: {res.cilia_up_s:.1f} s", flush=True)
        settings = json.loads((cfg.state_dir / "node.json").read_text())
        base = replace_settings(cfg, settings)
        members = [member_config(base, i) for i in range(nodes)]
        clients = {m.node_name: AgentClient(m.socket_path, timeout=600) for m in members}
        store: Store = open_agent_store(base)  # the lab's etcd: mutual TLS with its client certificate
        probes: list[NodeProbe] = []
        try:
            tmp = cfg.state_dir
            docs = workload(nodes, pods)
            t = time.perf_counter()
            rev0 = store.revision
            manifests.apply(store, [str(write_yaml(tmp / "workload.yaml", docs))])
            wait_pods(clients, pods, 900)
            wait_revision(clients, store.revision, 600)
            res.pods_up_s = time.perf_counter() - t
            # Writes of pod objects (the Deployment controller's): one per pod if one node writes.
            res.pod_writes = sum(1 for ev in store.backend.events(Kind.PODS.prefix(), rev0 + 1)
                                 if ev.type is EventType.PUT)
            print(f"[{nodes} node(s)] {pods} pods up in {res.pods_up_s:.1f} s "
                  f"({store.revision - rev0} store transactions, {res.pod_writes} pod object writes)",
                  flush=True)

            apps = sum(1 for d in docs if d["metadata"]["name"].startswith("app-"))
            t = time.perf_counter()
            bg = [*background_policies(policies, apps), probe_policy(PROBE_PORT_BASE - 1)]
            rev = manifests.apply(store, [str(write_yaml(tmp / "policies.yaml", bg))]).revision
            wait_revision(clients, rev, 600)
            res.policies_s = time.perf_counter() - t
            print(f"[{nodes} node(s)] {len(bg)} policies applied in {res.policies_s:.1f} s", flush=True)

            eps = {m.node_name: clients[m.node_name].endpoints() for m in members}
            src = [e for es in eps.values() for e in es if e["pod"].startswith(f"{TARGET_NS}/src-")]
            if len(src) != 1:
                raise RuntimeError(f"expected one src pod, found {[e['pod'] for e in src]}")
            src_identity = int(src[0]["identity"])
            for m in members:
                targets = [int(e["id"]) for e in eps[m.node_name]
                           if e["pod"].startswith(f"{TARGET_NS}/target-")]
                if len(targets) != TARGET_REPLICAS:
                    raise RuntimeError(f"{m.node_name}: {len(targets)} target pods, not {TARGET_REPLICAS}")
                probes.append(NodeProbe(m.node_name, open_pinned(m.pin_root, m.datapath_state_dir), targets))
            res.per_node_ms = {p.name: [] for p in probes}
            pids = {m.node_name: int(clients[m.node_name].status()["pid"]) for m in members}
            cpu0 = {n: cpu_s(pid) for n, pid in pids.items()}
            for s in range(samples):
                port = PROBE_PORT_BASE + s
                key = Key(src_identity, int(Direction.INGRESS), int(Proto.TCP), port, 16)
                path = write_yaml(tmp / f"probe-{s}.yaml", [probe_policy(port)])
                t0 = time.perf_counter()
                out = manifests.apply(store, [str(path)])
                if not out.report.valid:
                    raise RuntimeError(f"probe policy invalid: {out.report}")
                got = wait_enforced(probes, key, t0)
                for name, ms in got.items():
                    res.per_node_ms[name].append(ms)
                wait_revision(clients, out.revision, 60)  # settle before the next sample
            for m in members:
                res.cpu_ms[m.node_name] = (cpu_s(pids[m.node_name]) - cpu0[m.node_name]) * 1000 / samples
                res.rss_mib[m.node_name] = int(clients[m.node_name].status()["rss_kib"]) / 1024
        finally:
            for p in probes:
                p.maps.close()
            store.close()
            t = time.perf_counter()
            cilia("down", "--purge")
            res.down_s = time.perf_counter() - t
            print(f"[{nodes} node(s)] down in {res.down_s:.1f} s", flush=True)
    return res


def replace_settings(cfg: AgentConfig, settings: dict[str, Any]) -> AgentConfig:
    """The base config as ``cilia up --nodes`` saved it (endpoints, cluster size)."""
    return AgentConfig(state_dir=cfg.state_dir, run_dir=cfg.run_dir, pin_root=cfg.pin_root, store="etcd",
                       etcd_endpoints=settings["etcd_endpoints"], cluster_size=int(settings["cluster_size"]))


def report(res: Result) -> None:
    label = f"{res.nodes} node(s)"
    for name, ms in sorted(res.per_node_ms.items()):
        print(f"[{label}] {name}: policy change written → in the kernel map: p50 {pct(ms, 0.5):.1f} ms, "
              f"p99 {pct(ms, 0.99):.1f} ms, max {max(ms):.1f} ms ({len(ms)} samples); "
              f"agent CPU {res.cpu_ms[name]:.1f} ms per change; agent RSS {res.rss_mib[name]:.0f} MiB",
              flush=True)
    every = res.all_ms
    print(f"[{label}] on every node: p50 {pct(every, 0.5):.1f} ms, p99 {pct(every, 0.99):.1f} ms, "
          f"mean {statistics.mean(every):.1f} ms", flush=True)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--policies", type=int, default=200)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--no-baseline", action="store_true", help="skip the 1-node baseline")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("cluster_policy_bench needs root (network namespaces, eBPF, etcd)")
        return 2
    # SIGTERM unwinds like Ctrl-C, so the finally blocks tear everything down.
    signal.signal(signal.SIGTERM, _interrupt)
    cluster = run_setup(args.nodes, args.pods, args.policies, args.samples)
    report(cluster)
    single = None
    if not args.no_baseline:
        single = run_setup(1, args.pods, args.policies, args.samples)
        report(single)
    c50, c99 = pct(cluster.all_ms, 0.5), pct(cluster.all_ms, 0.99)
    s50 = pct(single.all_ms, 0.5) if single else float("nan")
    print(f"summary: nodes={args.nodes} pods={args.pods} propagation_p50_ms={c50:.1f} "
          f"propagation_p99_ms={c99:.1f} single_p50_ms={s50:.1f} ratio_p50={c50 / s50:.2f} "
          f"up_s={cluster.pods_up_s:.1f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything the benchmark made was removed", file=sys.stderr)
        sys.exit(130)
