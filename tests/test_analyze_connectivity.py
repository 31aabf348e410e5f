"""Connectivity: the bitset matrix equals pairwise traces, every port of a class shares its verdict,
and groups are identities."""

from __future__ import annotations

import pytest

from bench.connectivity_bench import cluster_of, generate_documents
from cilia.analyze.cluster import Analysis, EnforcementMode, Options
from cilia.analyze.connectivity import Connectivity, connectivity
from cilia.analyze.flow import EndKind, FlowEnd
from cilia.analyze.peers import PortSpec
from cilia.analyze.trace import trace_flow
from tests.helpers_analyze import SCENARIOS, analysis_of


def _end(a: Analysis, conn: Connectivity, index: int) -> FlowEnd:
    g = conn.groups[index]
    return a.resolve(g.pods[0])[0] if g.kind is EndKind.POD else a.resolve(f"entity:{g.name}")[0]


def _check_against_traces(a: Analysis) -> int:
    conn = connectivity(a)
    ends = [_end(a, conn, g.index) for g in conn.groups]
    checked = 0
    for ci, cls in enumerate(conn.classes):
        # The representative and the last port of the class's last segment decide alike.
        ports = {PortSpec(cls.proto, cls.port), PortSpec(cls.segments[-1][0], max(cls.segments[-1][2], 1))}
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
