"""StatefulSet and DaemonSet manifests (issue 15): read and validated as Deployments are, their pods
made from the template offline; sts/NAME and ds/NAME in trace and verify; verify without a port."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from cilia.analyze.cluster import Analysis
from cilia.k8s.cluster import load_cluster
from tests.helpers_analyze import check_golden, run_cli

INPUTS = Path("tests/inputs/workloads")
P = ["-f", str(INPUTS / "cluster.yaml")]


def test_pods_are_made_from_the_templates() -> None:
    cluster = load_cluster([INPUTS / "cluster.yaml"])
    kinds = {(w.kind, w.name): [p.name for p in w.pods] for w in cluster.workloads}
    assert kinds[("StatefulSet", "db")] == ["db-0", "db-1"]
    agents = kinds[("DaemonSet", "agent")]
    assert len(agents) == 2 and all(n.startswith("agent-") and len(n) == len("agent-") + 5 for n in agents)
    pods = {p.name: p for p in cluster.pods}
    db0 = pods["db-0"]
    assert db0.namespace == "shop" and db0.owner == "StatefulSet/db"
    assert db0.label_map["statefulset.kubernetes.io/pod-name"] == "db-0"
    assert db0.label_map["apps.kubernetes.io/pod-index"] == "0"
    assert db0.label_map["controller-revision-hash"].startswith("db-")
    assert [cp.name for cp in db0.ports] == ["pg"]
    # a DaemonSet: one pod on each Node of the manifests
    assert sorted(pods[n].node_name or "" for n in agents) == ["wl-node-a", "wl-node-b"]
    # the controllers' labels are not in identities: all pods of one workload share one identity
    analysis = Analysis(cluster)
    ids = {ep.pod.name: ep.identity for ep in analysis.endpoints}
    assert ids["db-0"] == ids["db-1"] and ids[agents[0]] == ids[agents[1]] != ids["db-0"]


def test_a_listed_pod_is_kept_and_a_daemonset_without_nodes_has_one_pod(tmp_path: Path) -> None:
    docs = (INPUTS / "cluster.yaml").read_text().split("\n---\n")
    kept = [d for d in docs if "kind: Node\n" not in d]
    listed = (
        "apiVersion: v1\nkind: Pod\n"
        "metadata: {name: db-1, namespace: shop, labels: {app: db, listed: 'yes'}}\n"
        "spec: {containers: [{name: pg, image: postgres}]}\n"
    )
    f = tmp_path / "c.yaml"
    f.write_text("\n---\n".join([*kept, listed]))
    cluster = load_cluster([f])
    db = [p for p in cluster.pods if p.name.startswith("db-")]
    assert [(p.name, p.owner, p.label_map.get("listed")) for p in db] == [
        ("db-1", None, "yes"),
        ("db-0", "StatefulSet/db", None),
    ]
    agents = [p for p in cluster.pods if p.owner == "DaemonSet/agent"]
    assert len(agents) == 1 and agents[0].node_name is None


def test_bad_statefulsets_and_daemonsets_name_file_line_field() -> None:
    rc, out, err = run_cli(["validate", "-f", str(INPUTS / "bad.yaml")])
    assert rc == 1
    check_golden("validate", "workloads-bad.txt", out + err)
    assert "bad.yaml:8:16: spec.template.metadata.labels: Invalid value: `selector` does not" in out + err


def test_trace_sts_and_ds_golden() -> None:
    rc, out, err = run_cli(["trace", *P, *shlex.split("-n shop --from ds/agent --to sts/db")])
    assert (rc, err) == (1, "")
    check_golden("trace", "workloads-ds-to-sts.txt", out)
    short = run_cli(["trace", *P, *shlex.split("-n shop --from deploy/web --to sts/db --port pg")])
    full = "--from deployment:shop/web --to statefulset:shop/db --port 5432"
    long = run_cli(["trace", *P, *shlex.split(full)])
    assert short == long and short[0] == 0
    assert "shop/db-0" in short[1] and "shop/db-1" in short[1]


def test_trace_unknown_statefulset_exit_2() -> None:
    rc, out, err = run_cli(["trace", *P, *shlex.split("-n shop --from ds/nope --to sts/db")])
    assert rc == 2 and out == ""
    assert "no DaemonSet shop/nope in the manifests (known: shop/agent)" in err


def test_verify_takes_workloads_and_expectations_without_a_port() -> None:
    args = ["verify", *P, "-n", "shop", "--expect", str(INPUTS / "expectations.yaml")]
    rc, out, err = run_cli(args)
    assert (rc, err) == (1, "")  # the last one is mixed: 5432 allowed, every other port denied
    check_golden("verify", "workloads-n-shop.txt", out)
    rc, out, _ = run_cli([*args, "-o", "json"])
    results = json.loads(out)["results"]
    assert [(r["port"], r["actual"]) for r in results] == [
        (5432, "allow"), (None, "deny"), (None, "allow"), (None, "mixed")
    ]
