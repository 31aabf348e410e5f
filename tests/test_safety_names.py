"""Names and labels are checked as Kubernetes checks them, by kind, wherever they enter
(manifests of every kind, ``-n``, ``cilia label``), and ``cilia delete`` takes full names only."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cilia.agent import manifests
from cilia.agent.resources import resolve_name
from cilia.cli.commands.label import LabelError, parse_label_args
from cilia.cli.main import app
from cilia.k8s import names
from cilia.k8s.netaddr import cidr_problem, parse_prefix
from cilia.k8s.validate import validate_paths
from cilia.store import Kind, open_store
from tests.conftest import SEED


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (names.is_dns1123_label, "web\n"),
        (names.is_dns1123_subdomain, "web.example\n"),
        (lambda v: not names.label_value_errors(v), "a\n"),
        (lambda v: not names.qualified_name_errors(v), "app\n"),
        (lambda v: not names.qualified_name_errors(v), "example.com\n/app"),
        (names.is_iana_svc_name, "http\n"),
        (lambda v: names.FQDN_NAME_PATTERN.match(v) is not None, "example.com\n"),
        (lambda v: parse_prefix(v) is not None, "10.0.0.0/8\n"),
    ],
)
def test_a_trailing_newline_is_never_part_of_a_valid_name(check, value: str) -> None:  # type: ignore[no-untyped-def]
    assert not check(value)
    assert check(value.replace("\n", ""))


def test_to_cidr_with_a_newline_is_a_clean_error() -> None:
    assert cidr_problem("10.0.0.0/8\n") is not None


def test_crd_patterns_are_shown_as_the_crd_writes_them() -> None:
    assert names.pattern_text(names.FQDN_NAME_PATTERN) == "^([-a-zA-Z0-9_]+[.]?)+$"


@pytest.mark.parametrize(
    ("kind", "name", "ok"),
    [
        ("Pod", "a" * 253, True),
        ("Pod", "a" * 254, False),
        ("Pod", "web.v1", True),
        ("Pod", "Web", False),
        ("Pod", "..", False),
        ("Namespace", "a.b", False),
        ("Namespace", "a" * 63, True),
        ("Namespace", "a" * 64, False),
        ("Service", "1web", False),
        ("Service", "web-1", True),
        ("Service", "web.x", False),
        ("Deployment", "web.x", True),
        ("CiliumNetworkPolicy", "deny-a", True),
    ],
)
def test_object_names_by_kind(kind: str, name: str, ok: bool) -> None:
    assert (names.object_name_errors(kind, name) == []) is ok


def test_generate_name_may_end_with_a_dash() -> None:
    assert names.object_name_errors("Pod", "web-", generate=True) == []
    assert names.object_name_errors("Pod", "web-") != []


BAD = """\
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: ".."}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: "web\\n"
  labels: {app: "a b", "-x": "1", "example.com/ok": "y"}
spec: {containers: [{name: C_1}, {name: c}, {name: c}]}
---
apiVersion: v1
kind: Service
metadata: {name: 1web}
spec: {selector: {"a/b/c": x}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: a.b, labels: {"k": "%s"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, annotations: {"Bad Key": "v"}}
spec:
  selector: {matchLabels: {app: "x y"}}
  template:
    metadata: {labels: {app: "x y"}}
    spec: {containers: [{name: c}]}
""" % ("v" * 64)


def test_every_kind_is_name_and_label_checked(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    report = validate_paths([f])
    got = {(e.line, e.path) for e in report.errors}
    assert got == {
        (3, "metadata.namespace"),
        (9, "metadata.name"),
        (10, "metadata.labels.app"),
        (10, "metadata.labels.-x"),
        (11, "spec.containers[0].name"),
        (11, "spec.containers[2].name"),
        (15, "metadata.name"),
        (16, "spec.selector.a/b/c"),
        (20, "metadata.name"),
        (20, "metadata.labels.k"),
        (24, "metadata.annotations.Bad Key"),
        (26, "spec.selector.matchLabels.app"),
        (28, "spec.template.metadata.labels.app"),
    }
    assert all("\n" not in str(e) for e in report.errors)  # control characters are escaped


def test_apply_refuses_a_pod_in_namespace_dotdot_before_storing_anything(tmp_path: Path) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text(BAD.split("---")[0])
    store = open_store(backend="memory")
    out = manifests.apply(store, [str(f)])
    assert not out.ok and store.revision == 0


def test_apply_refuses_an_invalid_default_namespace() -> None:
    store = open_store(backend="memory")
    for ns in ("..", "a/b", "Default", "x\n", "a" * 64):
        out = manifests.apply(store, [str(SEED / "app-a.yaml")], namespace=ns)
        assert not out.ok and out.report.errors[0].path == "--namespace", ns
        assert not manifests.delete(store, [str(SEED / "app-a.yaml")], namespace=ns).ok
    assert store.revision == 0


@pytest.mark.parametrize(
    ("command", "rest"),
    [(["apply"], ["-f", "x.yaml"]), (["delete"], ["pod", "p"]), (["label"], ["pod", "p", "a=b"]),
     (["audit"], ["on"]), (["get"], ["pods"]), (["describe"], ["pod", "p"]), (["logs"], ["p"]),
     (["exec"], ["p", "--", "true"]), (["svc", "list"], []), (["observe"], []),
     (["policy", "from-flows"], [])],
)  # fmt: skip
def test_dash_n_is_checked_on_the_command_line(command: list[str], rest: list[str], tmp_path: Path) -> None:
    res = CliRunner().invoke(app, [*command, "-n", "..", "--state-dir", str(tmp_path), *rest])
    assert res.exit_code == 2 and "RFC 1123 label" in res.output, res.output
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "arg", ["a b=c", "app=x y", "app=" + "v" * 64, "-x=1", "a/b/c=1", "app\n=1", "bad key-"]
)
def test_label_arguments_are_checked(arg: str) -> None:
    with pytest.raises(LabelError):
        parse_label_args([arg])


def test_label_arguments_that_kubernetes_accepts() -> None:
    assert parse_label_args(["example.com/tier=web", "app=", "old-"]) == (
        {"example.com/tier": "web", "app": ""},
        ["old"],
    )


def test_delete_takes_full_names_only(tmp_path: Path) -> None:
    store = open_store(backend="memory")
    assert manifests.apply(store, [str(SEED / "deny-a-to-b-fixed.yaml")]).ok
    name = store.list(Kind.CNP, "default")[0].key.name
    assert name.startswith("d") and name != "d"
    assert resolve_name(store, Kind.CNP, "default", "d", prefix=False) is None
    assert resolve_name(store, Kind.CNP, "default", name, prefix=False) is not None
    runner, sd = CliRunner(), ["--state-dir", str(tmp_path), "--run-dir", str(tmp_path / "run"), "--no-wait"]
    assert runner.invoke(app, ["apply", "-f", str(SEED / "deny-a-to-b-fixed.yaml"), *sd]).exit_code == 0
    res = runner.invoke(app, ["delete", "cnp", "d", *sd])
    assert res.exit_code == 1 and 'not found' in res.output
    assert runner.invoke(app, ["delete", "cnp", name, *sd]).exit_code == 0


def test_a_long_deployment_name_gives_valid_pod_names(tmp_path: Path) -> None:
    from cilia.k8s.objects import replica_pod_name

    name = "d" * 250
    f = tmp_path / "d.yaml"
    f.write_text(
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 2\n"
        "  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n"
        "    spec: {containers: [{name: c}]}\n"
    )
    assert validate_paths([f]).valid
    from cilia.k8s.cluster import build_cluster
    from cilia.k8s.loader import load_paths

    pods = build_cluster(load_paths([f])).pods
    assert len(pods) == 2
    assert all(len(p.name) == 63 and not names.object_name_errors("Pod", p.name) for p in pods)
    assert replica_pod_name("web", "abcdefghij", "xyz12") == "web-abcdefghij-xyz12"  # short names unchanged


@pytest.mark.parametrize(
    "name", ["api.example.com\n", "", ".", "a..b", "a b.com", "x" * 64 + ".com", "é.com"]
)
def test_dns_add_refuses_bad_names_before_starting_anything(tmp_path: Path, name: str) -> None:
    assert names.dns_name_errors(name)
    dirs = ["--state-dir", str(tmp_path / "s"), "--run-dir", str(tmp_path / "r")]
    res = CliRunner().invoke(app, ["dns", "add", name, "198.19.0.60", *dirs])
    assert res.exit_code == 2 and "invalid DNS name" in res.output
    assert not any(tmp_path.iterdir())  # no world host, no server, no record


def test_dns_names_that_are_fine() -> None:
    for name in ("api.example.com", "api.example.com.", "_svc.x-y.io"):
        assert names.dns_name_errors(name) == []
