"""The cluster benchmark's workload (bench/cluster_policy_bench.py), checked without root: the
pod count it promises, the probed pods pinned one group per node, every document valid as
``cilia apply`` would validate it, and the probe policy's kernel key."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.cluster_policy_bench import (
    NAMESPACES,
    TARGET_REPLICAS,
    background_policies,
    probe_policy,
    workload,
    write_yaml,
)
from cilia.agent.manifests import load_manifests


def test_workload_has_the_pods_it_promises_and_pins_the_targets() -> None:
    docs = workload(3, 1000)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert sum(d["spec"]["replicas"] for d in deployments) == 1000
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"] == list(NAMESPACES)
    targets = {d["metadata"]["name"]: (d["spec"]["replicas"], d["spec"]["template"]["spec"].get("nodeName"))
               for d in deployments if d["metadata"]["name"].startswith("target-")}
    assert targets == {f"target-{i}": (TARGET_REPLICAS, f"node-{i}") for i in range(3)}
    assert [d["metadata"]["name"] for d in deployments if d["metadata"]["name"] == "src"] == ["src"]
    fillers = [d for d in deployments if d["metadata"]["name"].startswith("app-")]
    assert Counter(d["metadata"]["namespace"] for d in fillers) == {ns: 25 for ns in NAMESPACES}
    assert sum(d["spec"]["replicas"] for d in workload(1, 60) if d["kind"] == "Deployment") == 60


def test_every_document_is_valid_as_cilia_apply_validates_it(tmp_path: Path) -> None:
    apps = sum(1 for d in workload(3, 1000) if d["metadata"]["name"].startswith("app-"))
    docs = [*workload(3, 1000), *background_policies(200, apps), probe_policy(10_000)]
    report, result, _ = load_manifests([str(write_yaml(tmp_path / "all.yaml", docs))])
    assert report.valid, report
    assert Counter(d.kind for d in result.documents) == {
        "Namespace": 4, "Deployment": 104, "CiliumNetworkPolicy": 201}
