"""trace and connectivity as users ask (issue 15 items 6-7): kubectl names with -n, label queries,
named ports, no --port, CIDR/entity rows, filters, deciding rules; golden text/json."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from bench.connectivity_bench import generate_documents
from tests.helpers_analyze import check_golden, run_cli

P = ["-f", "tests/inputs/peers/cluster.yaml"]

# (golden name, arguments after the files, exit code)
TRACES = [
    ("test-to-1.1.1.1-every-class", "--from test --to 1.1.1.1", 1),
    ("test-to-1.1.1.1-443", "--from pod/test --to 1.1.1.1 --port 443", 0),
    ("frontend-to-svc-named-port", "-n prod --from deploy/frontend --to svc/api --port http", 0),
    ("frontend-to-svc-every-port", "-n prod --from deploy/frontend --to svc/api", 0),
    ("api-to-a-new-pod-by-labels", "-n prod --from deploy/api --to-labels app=db,tier=x --port 5432", 0),
    ("labels-to-sts-named-port", "-n prod --from-labels tier=backend --to sts/db --port pg", 1),
    ("labels-everywhere-to-apiserver", "-A --from-labels app --to entity:kube-apiserver --port 6443", 0),
    ("frontend-to-api-named-port", "-n prod --from deploy/frontend --to deploy/api --port http", 0),
    ("remote-node-to-frontend", "--from entity:remote-node --to-labels app=frontend --to-namespace prod", 0),
]


@pytest.mark.parametrize(("name", "args", "code"), TRACES, ids=[t[0] for t in TRACES])
def test_trace_forms_golden(name: str, args: str, code: int) -> None:
    rc, out, err = run_cli(["trace", *P, *args.split()])
    assert (rc, err) == (code, "")
    check_golden("trace", f"{name}.txt", out)


def test_trace_every_class_json() -> None:
    rc, out, _ = run_cli(["trace", *P, "--from", "test", "--to", "1.1.1.1", "-o", "json"])
    assert rc == 1
    check_golden("trace", "test-to-1.1.1.1-every-class.json", out)
    data = json.loads(out)
    verdicts = {c["port_class"]: c["allowed"] for c in data["port_classes"]}
    assert verdicts["443/TCP"] is True and verdicts["other"] is False
    allowed = data["port_classes"][0]["decided_by"]
    assert allowed["sides"][0]["rules"] == ["CiliumNetworkPolicy default/test-egress egress[0]"]


def test_kubectl_names_are_the_canonical_peers() -> None:
    """deploy/NAME -n NS traces the flows of deployment:NS/NAME; pod/NAME those of NS/NAME."""
    short = run_cli(["trace", *P, *shlex.split("-n prod --from deploy/frontend --to pod/db-0 --port 5432")])
    long = run_cli(["trace", *P, *shlex.split("--from deployment:prod/frontend --to prod/db-0 --port 5432")])
    assert short == long and short[0] == 1
    q = "--from-labels app=frontend --from-namespace prod --to prod/db-0 --port 5432"
    assert run_cli(["trace", *P, *q.split()]) == long


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--from test --from-labels app=x --to 1.1.1.1", "give one of --from PEER and --from-labels"),
        ("--to 1.1.1.1", "give one of --from PEER and --from-labels"),
        ("-A --from-labels app=none --to 1.1.1.1", "no pods with labels app=none in every namespace in the"),
        ("--from-labels !app --to 1.1.1.1", "no pods with labels !app in namespace default in the manifests"),
        ("--from test --to prod/db-0 --port http", "pod prod/db-0 has no container port named 'http'"),
        ("--from test --to 1.1.1.1 --port https", "1.1.1.1 is not a pod, give a number"),
        ("-n prod -A --from test --to 1.1.1.1", "-n and -A contradict each other"),
        ("-n prod --from sts/web --to 1.1.1.1", "no StatefulSet prod/web in the manifests"),
        ("--from-labels app=,  --to 1.1.1.1", "bad labels"),
        ("--from test --to-namespace prod --to 1.1.1.1", "go with --from-labels/--to-labels"),
    ],
)
def test_trace_bad_questions_exit_2(args: str, message: str) -> None:
    rc, out, err = run_cli(["trace", *P, *args.split()])
    assert rc == 2 and out == "" and message in err, err


def test_connectivity_has_cidr_and_entity_rows_golden() -> None:
    rc, out, err = run_cli(["connectivity", *P])
    assert (rc, err) == (0, "")
    check_golden("connectivity", "peers.txt", out)
    for row in ("cidr:1.1.1.1/32 (identity", "cidr:10.1.0.0/16", "kube-apiserver (identity 7)"):
        assert row in out
    assert "remote-node (identity 6)" in out


def test_connectivity_agrees_with_trace_on_the_issue_example() -> None:
    """test -> 1.1.1.1:443: allowed by trace, and an allowed cell of the matrix (it was absent)."""
    rc, out, _ = run_cli(["connectivity", *P, *shlex.split("--from test --to 1.1.1.1 --port 443 -o json")])
    assert rc == 0
    data = json.loads(out)
    assert data["sources"] == ["default/test"] and data["destinations"] == ["cidr:1.1.1.1/32"]
    assert data["allowed"] == {"443/TCP": {"default/test": ["cidr:1.1.1.1/32"]}}
    cell = data["deciding_rules"]["443/TCP"]["default/test"]["cidr:1.1.1.1/32"]
    assert cell["verdict"] == "allow"
    assert cell["rules"] == ["CiliumNetworkPolicy default/test-egress egress[0]"]
    assert run_cli(["trace", *P, "--from", "test", "--to", "1.1.1.1", "--port", "443"])[0] == 0


def test_connectivity_filters_golden() -> None:
    args = ["connectivity", *P, "-n", "prod", "--from", "deploy/frontend", "--port", "http"]
    rc, out, err = run_cli([*args, "-o", "json"])
    assert (rc, err) == (0, "")
    check_golden("connectivity", "peers-filtered.json", out)
    data = json.loads(out)
    # --port http: the classes of every number a pod calls http (8080 frontend, 8081 api)
    assert [c["label"] for c in data["port_classes"]] == ["8080/TCP", "8081/TCP"]
    assert all(not g["namespace"] or g["namespace"] == "prod" for g in data["groups"])
    rc, text, _ = run_cli([*args, "-o", "text"])
    check_golden("connectivity", "peers-filtered.txt", text)
    rc, csv, _ = run_cli([*args, "-o", "csv"])
    assert csv.count("\n") == 1 + 2 * len(data["destinations"])


def test_connectivity_rules_switch() -> None:
    _, out, _ = run_cli(["connectivity", *P, "--no-rules", "-o", "json"])
    data = json.loads(out)
    assert "deciding_rules" not in data and data["deciding_rules_omitted"].startswith("--no-rules")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--port nope", "no pod has a container port named 'nope'"),
        ("-n prod -A", "-n and -A contradict each other"),
        ("--from deploy/missing", "no Deployment default/missing"),
    ],
)
def test_connectivity_bad_filters_exit_2(args: str, message: str) -> None:
    rc, out, err = run_cli(["connectivity", *P, *args.split()])
    assert rc == 2 and out == "" and message in err, err


def test_verify_takes_kubectl_names_in_the_namespace_of_n() -> None:
    args = ["verify", *P, "--expect", "tests/inputs/peers/expectations.yaml"]
    rc, out, err = run_cli([*args, "-n", "prod"])
    assert (rc, err) == (0, "")
    check_golden("verify", "peers-n-prod.txt", out)
    rc, _, err = run_cli(args)  # without -n: deploy/frontend is looked for in default
    assert rc == 2 and "no Deployment default/frontend" in err
    rc, _, err = run_cli([*args, "-n", "prod", "-A"])
    assert rc == 2 and "-n and -A contradict each other" in err


def test_connectivity_rules_left_out_above_the_limit(tmp_path: Path) -> None:
    """Above 20,000 cells -o json says why the deciding rules are not there; a filter brings them back."""
    f = tmp_path / "big.yaml"
    f.write_text(yaml.safe_dump_all(generate_documents(pods=60, namespaces=12, policies=48)))
    _, out, _ = run_cli(["connectivity", "-f", str(f), "-o", "json"])
    data = json.loads(out)
    assert "deciding_rules" not in data
    note = data["deciding_rules_omitted"]
    assert "cells (over 20,000): --rules, or narrow with -n/--from/--to/--port" in note
    source = data["groups"][0]["peer"]
    cls = data["port_classes"][0]
    port = f"{cls['port']}/{cls['protocol']}"
    args = ["--from", source, "--to", "entity:world", "--port", port, "-o", "json"]
    narrowed = json.loads(run_cli(["connectivity", "-f", str(f), *args])[1])
    assert list(narrowed["deciding_rules"]) == [cls["label"]]
    (row,) = narrowed["deciding_rules"][cls["label"]].values()
    assert list(row) == ["world"] and row["world"]["verdict"] in ("allow", "deny")
