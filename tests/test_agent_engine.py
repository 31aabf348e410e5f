"""One engine for the node and for ``cilia trace``: what the agent puts into the datapath for each
endpoint is, entry for entry, what the offline analysis (trace, connectivity, verify) computes from
the same objects. Identities are numbered by each side's own allocator, so entries are compared
with every identity replaced by its label set.

The story: the seed's two Deployments, the fixed deny, a relabelled pod, the allow policy, the prod
example, and a policy with a CIDR peer and a named port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from helpers_agent import SimAgent, running_agent

from cilia.analyze.cluster import analyse_paths
from cilia.identity.labels import Labels
from cilia.policy.mapstate import MapState
from cilia.store import Kind
from tests.conftest import SEED

WEB_EGRESS = {
    "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "b-egress", "namespace": "default"},
    "spec": {"endpointSelector": {"matchLabels": {"app": "app-b"}},
             "egress": [{"toCIDR": ["198.19.7.0/24"], "toPorts": [{"ports": [{"port": "443"}]}]},
                        {"toEndpoints": [{"matchLabels": {"app": "app-a"}}],
                         "toPorts": [{"ports": [{"port": "http"}]}]}]},
}  # fmt: skip

OBJECT_KINDS = (Kind.NAMESPACES, Kind.PODS, Kind.SERVICES, Kind.ENDPOINTS, Kind.CNP, Kind.CCNP, Kind.KNP)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimAgent]:
    with running_agent(tmp_path_factory.mktemp("agent")) as s:
        s.cli("apply", "-f", str(SEED / "app-a.yaml"), "-f", str(SEED / "app-b.yaml"))
        s.cli("apply", "--fix", "-f", str(SEED / "deny-a-to-b.yaml"))
        pod = next(e.pod.name for e in s.agent.reconciler.endpoints if e.pod.name.startswith("app-a-"))
        s.cli("label", "pod", pod, "access=frontend")
        s.cli("apply", "-f", str(SEED / "allow-frontend-to-b.yaml"),
              "-f", str(SEED / "prod-backend-to-database.yaml"))  # fmt: skip
        s.apply("b-egress", WEB_EGRESS)
        yield s


def by_labels(ms: MapState, labels_of: Callable[[int], Labels | None]) -> dict[tuple[object, ...], object]:
    out = {}
    for key, entry in ms.items():
        peer = labels_of(key.identity) if key.identity else Labels()
        assert peer is not None, f"identity {key.identity} has no labels"
        out[(tuple(peer.strings()), *key[1:])] = entry
    return out


def test_the_agent_enforces_what_trace_computes(node: SimAgent, tmp_path: Path) -> None:
    rec = node.agent.reconciler
    with node.agent._lock:
        objects = [r.value for kind in OBJECT_KINDS for r in node.node.store.list(kind)]
        endpoints = list(rec.endpoints)
        applied = {ep.id: rec.applied[ep.id] for ep in endpoints}
        node_labels = dict(rec.allocator.identities())
    dump = tmp_path / "objects.yaml"
    dump.write_text(yaml.safe_dump_all(objects))
    analysis = analyse_paths([dump])
    offline = {tuple(labels.strings()): ident for ident, labels in analysis.identities.items()}

    assert len(endpoints) >= 4  # app-a, app-b and the prod example's pods
    compared = 0
    for ep in endpoints:
        ident = offline[tuple(ep.labels)]  # the same labels give the pod its identity offline
        want = by_labels(analysis.oracle.endpoint_policy(ident).map_state, analysis.allocator.lookup)
        got = by_labels(applied[ep.id], node_labels.get)
        assert got == want, f"{ep.pod}: the node's datapath differs from trace's engine"
        compared += len(got)
    assert compared > 20  # the story gives every endpoint entries beyond the allow-any ones
