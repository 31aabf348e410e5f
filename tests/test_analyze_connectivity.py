"""Connectivity: the bitset matrix equals pairwise traces, every port of a class shares its verdict,
and groups are identities."""

from __future__ import annotations

import io
import json
import random

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.connectivity_bench import cluster_of, generate_documents
from cilia.analyze.cluster import Analysis, EnforcementMode, Options
from cilia.analyze.connectivity import (
    SUMMARY_GROUPS,
    Connectivity,
    connectivity,
    render_table,
    write_json,
)
from cilia.analyze.flow import EndKind, FlowEnd
from cilia.analyze.manifests import cluster_from_result
from cilia.analyze.peers import PortSpec
from cilia.analyze.trace import trace_flow
from cilia.analyze.verify import FAST_PATH_MIN, Expectation, PlacedExpectation, verify
from cilia.k8s.loader import load_text
from cilia.policy.types import Proto
from tests.helpers_analyze import SCENARIOS, analysis_of


def _end(a: Analysis, conn: Connectivity, index: int) -> FlowEnd:
    g = conn.groups[index]
    return a.resolve(g.pods[0])[0] if g.kind is EndKind.POD else a.resolve(g.peer)[0]


def _check_against_traces(a: Analysis) -> int:
    conn = connectivity(a)
    ends = [_end(a, conn, g.index) for g in conn.groups]
    checked = 0
    for ci, cls in enumerate(conn.classes):
        # Every port of a class decides like its representative: check both ends of every segment.
        ports = {PortSpec(cls.proto, cls.port)}
        for proto, lo, hi in cls.segments:
            low = lo if proto in (Proto.ICMP, Proto.ICMPV6) else max(lo, 1)
            ports |= {PortSpec(proto, low), PortSpec(proto, hi)}
        for s, src in enumerate(ends):
            for d, dst in enumerate(ends):
                for port in ports:
                    assert conn.allowed(s, d, ci) == trace_flow(a, src, dst, port).allowed, (
                        cls.label,
                        s,
                        d,
                        port,
                    )
                    checked += 1
    return checked


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_seed_matrix_equals_traces(scenario: str) -> None:
    assert _check_against_traces(analysis_of(scenario)) > 0


@pytest.mark.parametrize("mode", [EnforcementMode.DEFAULT, EnforcementMode.ALWAYS])
def test_generated_cluster_matrix_equals_traces(mode: EnforcementMode) -> None:
    cluster = cluster_of(generate_documents(pods=60, namespaces=6, policies=30))
    a = Analysis(cluster, Options(mode))
    assert len(a.endpoints) == 60 and len(cluster.policies) == 30
    assert _check_against_traces(a) >= 32 * 32 * 7  # 30 identity groups + world + host, 7 classes


def test_story_groups_and_classes() -> None:
    conn = connectivity(analysis_of("story"))
    assert [(g.name, g.kind, len(g.pods)) for g in conn.groups] == [
        ("deployment:default/app-a", EndKind.POD, 2),
        ("default/app-a-frontend", EndKind.POD, 1),
        ("deployment:default/app-b", EndKind.POD, 2),
        ("world", EndKind.ENTITY, 0),
        ("host", EndKind.ENTITY, 0),
    ]
    assert [c.label for c in conn.classes] == ["80/TCP", "other"]
    # frontend: only app-b on 80/TCP and the host get in
    assert [conn.allowed(s, 1, 0) for s in range(5)] == [False, False, True, False, True]
    assert [conn.allowed(s, 1, 1) for s in range(5)] == [False, False, False, False, True]


def _random_documents(rng: random.Random) -> list[dict]:
    """A small random cluster: pods with labels from a tiny vocabulary and CNPs mixing allows,
    denies, port ranges, ICMP, entities, CIDRs and enableDefaultDeny."""
    docs: list[dict] = []
    for i in range(rng.randint(2, 6)):
        ns = rng.choice(["a", "b"])
        labels = {"app": rng.choice(["x", "y", "z"]), **({"tier": "t"} if rng.random() < 0.3 else {})}
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{i}", "namespace": ns, "labels": labels},
                "spec": {"containers": [{"name": "c"}]},
            }
        )

    def ports() -> list[dict]:
        kind = rng.random()
        if kind < 0.2:
            return []
        if kind < 0.35:
            return [{"icmps": [{"fields": [{"type": rng.choice([0, 8])}]}]}]
        port = rng.choice([53, 80, 443, 8080])
        pp: dict = {"port": str(port), "protocol": rng.choice(["TCP", "UDP", "ANY"])}
        if rng.random() < 0.3:
            pp["endPort"] = port + rng.choice([1, 20, 500])
        return [{"toPorts": [{"ports": [pp]}]}]

    def peer(direction: str) -> dict:
        f = "from" if direction == "ingress" else "to"
        choice = rng.random()
        if choice < 0.5:
            sel: dict = {"matchLabels": {"app": rng.choice(["x", "y", "z"])}}
            if rng.random() < 0.3:
                sel["matchLabels"]["k8s:io.kubernetes.pod.namespace"] = rng.choice(["a", "b"])
            return {f"{f}Endpoints": [sel]}
        if choice < 0.7:
            return {f"{f}Entities": [rng.choice(["world", "host", "cluster", "all"])]}
        if choice < 0.85:
            return {f"{f}CIDR": [rng.choice(["198.19.0.0/16", "198.19.1.0/24", "0.0.0.0/0"])]}
        return {}

    for i in range(rng.randint(1, 4)):
        spec: dict = {"endpointSelector": {"matchLabels": {"app": rng.choice(["x", "y", "z"])}}}
        for direction in ("ingress", "egress"):
            for section in (direction, direction + "Deny"):
                if rng.random() < 0.4:
                    entries = []
                    for _ in range(rng.randint(1, 2)):
                        entry = peer(direction)
                        extra = ports()
                        entry.update(extra[0] if extra else {})
                        entries.append(entry)
                    spec[section] = entries
            if rng.random() < 0.2:
                spec.setdefault("enableDefaultDeny", {})[direction] = False
        if not any(k in spec for k in ("ingress", "ingressDeny", "egress", "egressDeny")):
            spec["ingress"] = [{}]
        docs.append(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNetworkPolicy",
                "metadata": {"name": f"pol{i}", "namespace": rng.choice(["a", "b"])},
                "spec": spec,
            }
        )
    return docs


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_random_clusters_matrix_equals_traces(seed: int) -> None:
    docs = _random_documents(random.Random(seed))
    result = load_text(yaml.safe_dump_all(docs), "r.yaml")
    cluster = cluster_from_result(result)
    _check_against_traces(Analysis(cluster))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_streamed_json_is_to_dict(scenario: str) -> None:
    conn = connectivity(analysis_of(scenario))
    out = io.StringIO()
    write_json(conn, out)
    assert out.getvalue() == json.dumps(conn.to_dict(), indent=2) + "\n"


def test_large_cluster_summaries() -> None:
    cluster = cluster_of(generate_documents(pods=600, namespaces=30, policies=150))
    conn = connectivity(Analysis(cluster))
    n = len(conn.groups)
    assert n > SUMMARY_GROUPS
    table = render_table(conn)
    assert table.startswith(f"{n} x {n} identity groups (600 pods in 30 namespaces), {len(conn.classes)} ")
    for cls, m in zip(conn.classes, conn.matrices, strict=True):
        assert f"  {cls.label}: {m.count()} of {n * n} pairs allowed" in table
    # out/in per group, on some port class: row and column counts of the union of the matrices
    g = conn.groups[7]
    out = sum(any(conn.allowed(g.index, d, ci) for ci in range(len(conn.classes))) for d in range(n))
    into = sum(any(conn.allowed(s, g.index, ci) for ci in range(len(conn.classes))) for s in range(n))
    line = [x for x in table.splitlines() if x.startswith(f"    [{g.index + 1}] ")][-1]
    assert line.endswith(f": out {out}, in {into}")
    # readable: grouped by namespace, no line longer than a group's name needs
    assert f"  namespace {g.namespace}: " in table
    assert max(len(x) for x in table.splitlines()) <= 120
    out = io.StringIO()
    write_json(conn, out)
    data = json.loads(out.getvalue())
    counts = {c.label: m.count() for c, m in zip(conn.classes, conn.matrices, strict=True)}
    assert data["allowed_pairs"] == counts
    assert sum(len(v) for v in data["allowed"][conn.classes[0].label].values()) == conn.matrices[0].count()


def test_verify_fast_path_agrees_with_traces() -> None:
    """Many expectations go through the matrix's sets; the report is the one tracing each gives."""
    cluster = cluster_of(generate_documents(pods=120, namespaces=12, policies=60))
    a = Analysis(cluster)
    rng = random.Random(7)
    peers = [f"deployment:ns-{i:03d}/app-{j}" for i in range(12) for j in range(5)]
    peers += ["entity:world", "entity:host", "198.19.3.20", "198.19.3.7"]
    placed = []
    for i in range(60):
        exp = Expectation.model_validate(
            {
                "from": rng.choice(peers),
                "to": rng.choice(peers),
                "port": rng.choice([53, 80, 443, 5432, 8080, 9090]),
                "protocol": rng.choice(["TCP", "UDP"]),
                "expect": rng.choice(["allow", "deny"]),
            }
        )
        placed.append(PlacedExpectation(exp, "e.yaml", i + 1, i))
    assert len(placed) >= FAST_PATH_MIN
    report = verify(a, placed)
    traced = [verify(a, [p]).results[0] for p in placed]  # one at a time: no fast path
    assert [(r.actual, r.passed) for r in report.results] == [(r.actual, r.passed) for r in traced]
    assert 0 < report.passed < len(placed)
    assert all(r.trace is not None for r in report.results if not r.passed)
    assert any(r.trace is None for r in report.results)
