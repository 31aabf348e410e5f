"""Benchmarks (b) and (c) of issues 3 and 21: offline connectivity at scale and incremental policy
updates.

(b) ``cilia connectivity`` on a generated cluster: 10,000 pods (Deployments of 10 replicas, 5 apps in
    each of 200 namespaces), 1,000 policies (CNPs of four shapes and one NetworkPolicy per namespace:
    same-namespace allows, cross-namespace allows by namespace labels, CIDR egress with except,
    deny rules, entities, egress default deny). Timed from the loaded objects to the full matrix
    (wall clock and the process's CPU time); peak memory is the process's maximum RSS.
    Targets (issue 21): 10k pods under 1 s; 100k pods / 2,000 namespaces / 10,000 policies
    (``--scale 100k``) under 30 s and 2 GiB. ``--baseline`` also times the construction cilia used
    before issue 21 (every identity's MapState, one lookup per peer) and prints the ratio.
(c) The same cluster with every pod identity registered as an engine endpoint; one more policy is
    added: the engine's incremental update vs recomputing every endpoint from scratch, as a ratio.
    Target: at least 50x.

The generator (:func:`generate_documents`) is shared with tests/test_analyze_connectivity.py, which
checks the matrix against pairwise traces on a small instance.

Run: ``python3 bench/connectivity_bench.py [--scale 10k|100k] [--pods N --namespaces N --policies N
--repeat N] [--baseline] [--no-incremental] [--no-yaml]``. The last line is ``summary:
connectivity_s=X connectivity_cpu_s=X peak_rss_mib=X [baseline_s=X] [incremental_speedup=X]``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cilia.analyze.cluster import Analysis, Options
from cilia.analyze.connectivity import classes_of, connectivity, groups_of
from cilia.analyze.engine_adapter import translate_all
from cilia.analyze.manifests import load_cluster
from cilia.analyze.matrix import UNENFORCED, BitMatrix, SideSummary, combine
from cilia.analyze.portclasses import PortClass
from cilia.k8s.cluster import build_cluster
from cilia.k8s.loader import LoadResult
from cilia.k8s.objects import Cluster
from cilia.k8s.source import Document
from cilia.policy.engine import PolicyEngine
from cilia.policy.repository import ResourceKey
from cilia.policy.resolve import EngineOptions
from cilia.policy.types import Direction

APPS = 5
REPLICAS_DEFAULT = 10


def _ns(i: int) -> str:
    return f"ns-{i:03d}"


def _ports(*specs: tuple[int, str]) -> list[dict[str, Any]]:
    return [{"ports": [{"port": str(p), "protocol": proto} for p, proto in specs]}]


def _cnp(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def _app(app: int) -> dict[str, Any]:
    return {"matchLabels": {"app": f"app-{app}"}}


def policy_documents(i: int, n: int, shapes: int) -> list[dict[str, Any]]:
    """The policies of namespace ``i`` (``shapes`` of the five shapes, so the total is adjustable)."""
    ns = _ns(i)
    team = f"team-{(i + 1) % 10}"
    docs = [
        _cnp(
            ns,
            "app-1-from-app-0",
            {
                "endpointSelector": _app(1),
                "ingress": [{"fromEndpoints": [_app(0)], "toPorts": _ports((8080, "TCP"))}],
            },
        ),
        _cnp(
            ns,
            "app-2-from-app-1-and-team",
            {
                "endpointSelector": _app(2),
                "ingress": [
                    {"fromEndpoints": [_app(1)], "toPorts": _ports((8080, "TCP"))},
                    {
                        "fromEndpoints": [
                            {
                                "matchLabels": {
                                    "app": "app-0",
                                    "k8s:io.cilium.k8s.namespace.labels.team": team,
                                }
                            }
                        ],
                        "toPorts": _ports((9090, "TCP")),
                    },
                ],
            },
        ),
        _cnp(
            ns,
            "db",
            {
                "endpointSelector": _app(3),
                "ingress": [{"fromEndpoints": [_app(2)], "toPorts": _ports((5432, "TCP"))}],
                "ingressDeny": [{"fromEntities": ["world"]}],
            },
        ),
        _cnp(
            ns,
            "frontend-egress",
            {
                "endpointSelector": _app(0),
                "egress": [
                    {"toEndpoints": [_app(1)], "toPorts": _ports((8080, "TCP"))},
                    {"toEntities": ["cluster"], "toPorts": _ports((53, "UDP"))},
                    {
                        "toCIDRSet": [
                            {"cidr": f"198.19.{i % 256}.0/24", "except": [f"198.19.{i % 256}.16/28"]}
                        ],
                        "toPorts": _ports((443, "TCP")),
                    },
                ],
                "egressDeny": [{"toEndpoints": [_app(3)]}],
            },
        ),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "app-4", "namespace": ns},
            "spec": {
                "podSelector": _app(4),
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}}}],
                        "ports": [{"port": 80, "protocol": "TCP"}],
                    }
                ],
                "egress": [{"to": [{"podSelector": {}}]}],
            },
        },
    ]
    return docs[:shapes]


def generate_documents(
    pods: int = 10_000, namespaces: int = 200, policies: int = 1_000
) -> list[dict[str, Any]]:
    """Manifests of a generated cluster (plain data, as the loader would produce them)."""
    per_ns = pods // namespaces
    replicas = max(1, per_ns // APPS)
    shapes = max(0, min(5, policies // namespaces))
    docs: list[dict[str, Any]] = []
    for i in range(namespaces):
        ns = _ns(i)
        env = "prod" if i % 2 == 0 else "dev"
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"team": f"team-{i % 10}", "env": env}},
            }
        )
        for app in range(APPS):
            docs.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": f"app-{app}", "namespace": ns},
                    "spec": {
                        "replicas": replicas,
                        "selector": {"matchLabels": {"app": f"app-{app}"}},
                        "template": {
                            "metadata": {
                                "labels": {"app": f"app-{app}", "tier": ("web", "api", "db")[app % 3]}
                            },
                            "spec": {
                                "containers": [
                                    {
                                        "name": "main",
                                        "image": "nginxdemos/hello:plain-text",
                                        "ports": [{"containerPort": 8080 if app else 80, "name": "http"}],
                                    }
                                ]
                            },
                        },
                    },
                }
            )
        docs.extend(policy_documents(i, namespaces, shapes))
    return docs


def cluster_of(docs: list[dict[str, Any]]) -> Cluster:
    """The Cluster the loader would build from these documents (the generator writes valid ones)."""
    documents = tuple(Document("<generated>", i, None, d, 1, 1) for i, d in enumerate(docs))
    return build_cluster(LoadResult(("<generated>",), documents))


def extra_policy(namespace: str) -> dict[str, Any]:
    """The one policy added in (c)."""
    return _cnp(
        namespace,
        "added",
        {
            "endpointSelector": _app(4),
            "ingress": [{"fromEndpoints": [_app(0)], "toPorts": _ports((7070, "TCP"))}],
        },
    )


# --------------------------------------------------------------------------- (b)


def bench_connectivity(cluster: Cluster) -> tuple[float, float, int, int, int]:
    """Seconds (wall, CPU of the process) for identities + rules + every policy + the matrix;
    (groups, classes, allowed pairs). CPU time is printed too: on a shared machine the wall clock
    also counts the time other processes had the cores."""
    start, cpu = time.perf_counter(), time.process_time()
    analysis = Analysis(cluster, Options())
    conn = connectivity(analysis)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    allowed = sum(m.count() for m in conn.matrices)
    return elapsed, cpu, len(conn.groups), len(conn.classes), allowed


def per_peer_matrices(analysis: Analysis) -> list[BitMatrix]:
    """The baseline: the matrix as cilia built it before issue 21 — every identity's MapState from the
    engine, then one datapath lookup per (side, peer identity with entries of its own, class)."""
    groups = groups_of(analysis)
    index: dict[int, list[int]] = defaultdict(list)
    for g in groups:
        index[g.identity].append(g.index)
    no_entry = 0xFFFFFFFF  # a peer identity no MapState names: the side's default verdict

    def summaries(direction: Direction, cls: PortClass) -> list[SideSummary]:
        out = []
        for g in groups:
            if not g.local:
                out.append(UNENFORCED)
                continue
            side = analysis.side(g.identity, direction)
            default = side.lookup(no_entry, cls.proto, cls.port).allowed
            exceptions: dict[int, bool] = {}
            for peers in side.peer_groups():
                verdict = side.lookup(peers[0], cls.proto, cls.port).allowed
                if verdict != default:
                    exceptions.update(dict.fromkeys((i for p in peers for i in index.get(p, ())), verdict))
            out.append(SideSummary(default, exceptions))
        return out

    return [
        combine(summaries(Direction.EGRESS, cls), summaries(Direction.INGRESS, cls))
        for cls in classes_of(analysis)
    ]


def bench_baseline(cluster: Cluster) -> tuple[float, int]:
    """Seconds and allowed pairs of :func:`per_peer_matrices` (identities and rules included)."""
    start = time.perf_counter()
    matrices = per_peer_matrices(Analysis(cluster, Options()))
    return time.perf_counter() - start, sum(m.count() for m in matrices)


# --------------------------------------------------------------------------- (c)


def _engine_for(analysis: Analysis) -> PolicyEngine:
    engine = PolicyEngine(EngineOptions(), analysis.identities)
    engine.apply_rules(analysis.rules)
    for ident in dict.fromkeys(ep.identity for ep in analysis.endpoints):
        engine.add_endpoint(ident)
    return engine


def bench_incremental(cluster: Cluster) -> tuple[float, float, int]:
    """(incremental seconds, full recompute seconds, endpoints changed) for one added policy."""
    analysis = Analysis(cluster, Options())
    engine = _engine_for(analysis)
    added = cluster_of([extra_policy(_ns(0))])
    rules = translate_all(added)
    start = time.perf_counter()
    diffs = engine.apply(ResourceKey.of(rules[0]), rules)
    incremental = time.perf_counter() - start
    # Full recompute: every endpoint's policy again, from the same rules plus the added one.
    start = time.perf_counter()
    full_engine = PolicyEngine(EngineOptions(), analysis.identities)
    full_engine.apply_rules((*analysis.rules, *rules))
    for ident in engine.endpoints():
        full_engine.add_endpoint(ident)
    full = time.perf_counter() - start
    for ident in engine.endpoints():  # the incremental result must equal the full one
        assert engine.policy(ident).map_state == full_engine.policy(ident).map_state, ident
    return incremental, full, len(diffs)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(
    pods: int = 10_000,
    namespaces: int = 200,
    policies: int = 1_000,
    repeat: int = 3,
    from_yaml: bool = True,
    incremental: bool = True,
    baseline: bool = False,
) -> dict[str, float]:
    """Run (b) and (c), print each measurement, and return the medians. ``baseline``: also the
    per-peer construction (:func:`per_peer_matrices`), after (b) so (b)'s peak RSS is its own."""
    docs = generate_documents(pods, namespaces, policies)
    start = time.perf_counter()
    cluster = cluster_of(docs)
    build_s = time.perf_counter() - start
    print(
        f"cluster: {len(cluster.pods)} pods, {len(cluster.namespaces)} namespaces, "
        f"{len(cluster.policies)} policies (objects built in {build_s:.2f} s)"
    )
    times: list[float] = []
    cpus: list[float] = []
    for _ in range(repeat):
        elapsed, cpu, groups, classes, allowed = bench_connectivity(cluster)
        times.append(elapsed)
        cpus.append(cpu)
        print(
            f"(b) connectivity: {elapsed:.2f} s (CPU {cpu:.2f} s)  ({groups} identity groups, "
            f"{classes} port classes, {allowed} allowed group pairs)"
        )
    conn_s = statistics.median(times)
    peak_mib = peak_rss_mib()
    target = "< 30 s, < 2048 MiB" if pods > 10_000 else "< 1 s"
    cpu_s = statistics.median(cpus)
    print(
        f"(b) median {conn_s:.2f} s (CPU {cpu_s:.2f} s), peak RSS of the process {peak_mib:.0f} MiB "
        f"(target for {pods} pods: {target})"
    )
    out = {"connectivity_s": conn_s, "connectivity_cpu_s": cpu_s, "peak_rss_mib": peak_mib}
    if baseline:
        base_s, base_allowed = bench_baseline(cluster)
        if base_allowed != allowed:
            raise SystemExit(f"baseline found {base_allowed} allowed pairs, the matrix {allowed}")
        out["baseline_s"] = base_s
        print(
            f"(b) baseline, per-peer lookups in every identity's MapState: {base_s:.2f} s "
            f"(same {base_allowed} pairs); speedup {base_s / conn_s:.1f}x"
        )
    if from_yaml:
        with tempfile.TemporaryDirectory(prefix="cilia-bench-") as tmp:
            path = Path(tmp) / "cluster.yaml"
            path.write_text(yaml.safe_dump_all(docs))
            start = time.perf_counter()
            result, loaded = load_cluster([path])
            load_s = time.perf_counter() - start
            conn = connectivity(Analysis(loaded, Options()))
            total = time.perf_counter() - start
        print(
            f"(b') the same from a YAML file: {total:.2f} s, of which loading and validating "
            f"{len(result.documents)} documents {load_s:.2f} s ({len(conn.groups)} groups)"
        )
    if not incremental:
        return out
    ratios = []
    for _ in range(repeat):
        inc, full, changed = bench_incremental(cluster)
        ratios.append(full / inc)
        print(
            f"(c) one policy added: incremental {inc * 1000:.1f} ms ({changed} endpoint(s) changed), "
            f"full recompute {full * 1000:.0f} ms, speedup {full / inc:.0f}x"
        )
    speedup = statistics.median(ratios)
    print(f"(c) median speedup {speedup:.0f}x (target >= 50x)")
    out["incremental_speedup"] = speedup
    return out


# --scale presets: (pods, namespaces, policies)
SCALES = {"10k": (10_000, 200, 1_000), "100k": (100_000, 2_000, 10_000)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--policies", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-yaml", action="store_true", help="skip the informational run from YAML")
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        help="preset sizes; 100k: one run of (b) only (no YAML run, no (c), no baseline)",
    )
    parser.add_argument("--no-incremental", action="store_true", help="skip (c)")
    parser.add_argument(
        "--baseline", action="store_true", help="also time the per-peer construction (slow at 100k)"
    )
    args = parser.parse_args(argv)
    pods, namespaces, policies = args.pods, args.namespaces, args.policies
    repeat, from_yaml, incremental = args.repeat, not args.no_yaml, not args.no_incremental
    if args.scale:
        pods, namespaces, policies = SCALES[args.scale]
        if args.scale == "100k":
            repeat, from_yaml, incremental = 1, False, False
    res = run(pods, namespaces, policies, repeat, from_yaml, incremental, args.baseline)
    line = (
        f"summary: connectivity_s={res['connectivity_s']:.2f} "
        f"connectivity_cpu_s={res['connectivity_cpu_s']:.2f} peak_rss_mib={res['peak_rss_mib']:.0f}"
    )
    if "baseline_s" in res:
        line += f" baseline_s={res['baseline_s']:.2f}"
    if "incremental_speedup" in res:
        line += f" incremental_speedup={res['incremental_speedup']:.0f}"
    print(line)


if __name__ == "__main__":
    main()
