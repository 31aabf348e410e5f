"""``cilia diff`` takes a side's verdict from the old analysis where it cannot differ (a source
whose selecting rules did not change, ends with the same labels, equal engine options, named ports
and Nodes): the delta must equal the one that traces every side on both analyses."""

from __future__ import annotations

import itertools

import pytest

from bench.connectivity_bench import cluster_of, extra_policy, generate_documents
from cilia.analyze import diff as diff_module
from cilia.analyze.cluster import Analysis, Options
from tests.helpers_analyze import SCENARIOS, analysis_of


def _both(make_old, make_new, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    fast = diff_module.diff(make_old(), make_new()).to_dict()
    with monkeypatch.context() as m:
        m.setattr(diff_module, "_same_engine", lambda old, new: False)
        slow = diff_module.diff(make_old(), make_new()).to_dict()
    return fast, slow


@pytest.mark.parametrize(("a", "b"), list(itertools.permutations(sorted(SCENARIOS), 2)))
def test_seed_scenarios(a: str, b: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = _both(lambda: analysis_of(a), lambda: analysis_of(b), monkeypatch)
    assert fast == slow


def test_generated_cluster_one_policy_added(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = generate_documents(200, 10, 50)
    fast, slow = _both(
        lambda: Analysis(cluster_of(docs), Options()),
        lambda: Analysis(cluster_of([*docs, extra_policy("ns-000")]), Options()),
        monkeypatch,
    )
    assert fast == slow and fast["summary"]["rule_changed"] + fast["summary"]["opened"] > 0


def test_generated_cluster_one_egress_policy_added(monkeypatch: pytest.MonkeyPatch) -> None:
    """One workload's egress changes: the cells towards it are decided by untouched ingress."""
    docs = generate_documents(200, 10, 50)
    egress = {
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "egress-added", "namespace": "ns-002"},
        "spec": {"endpointSelector": {"matchLabels": {"app": "app-1"}},
                 "egress": [{"toEndpoints": [{"matchLabels": {"app": "app-2"}}],
                             "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]},
    }  # fmt: skip
    fast, slow = _both(
        lambda: Analysis(cluster_of(docs), Options()),
        lambda: Analysis(cluster_of([*docs, egress]), Options()),
        monkeypatch,
    )
    assert fast == slow and fast["summary"]["closed"] > 0


def test_relabelled_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A label change moves a group's identity: no side of it may be taken from the old side."""
    docs = generate_documents(200, 10, 50)
    relabelled = [
        {**d, "spec": {**d["spec"], "selector": {"matchLabels": {"app": "app-9"}},
                       "template": {**d["spec"]["template"], "metadata": {
            "labels": {**d["spec"]["template"]["metadata"]["labels"], "app": "app-9"}}}}}
        if d.get("kind") == "Deployment" and d["metadata"] == {"name": "app-1", "namespace": "ns-001"}
        else d
        for d in docs
    ]  # fmt: skip
    fast, slow = _both(
        lambda: Analysis(cluster_of(docs), Options()),
        lambda: Analysis(cluster_of(relabelled), Options()),
        monkeypatch,
    )
    assert fast == slow and fast["changes"]
