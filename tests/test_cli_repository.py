"""``-f DIR`` on a real repository: what kubectl would apply is read, the rest is skipped and listed
(``--strict`` refuses it), ``-R`` as kubectl, ``--exclude GLOB``; on a fake repository tree and on
../shared/corpus.

Golden files in tests/golden/repository/ (CILIA_UPDATE_GOLDEN=1 rewrites them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cilia.cli.lazy import app
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden" / "repository"
UPDATE = os.environ.get("CILIA_UPDATE_GOLDEN") == "1"

POLICY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web
  namespace: default
spec:
  endpointSelector:
    matchLabels:
      app: web
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: client
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
"""
WORKLOADS = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: default
  labels: {app: client}
spec:
  containers:
  - name: c
    image: curl
"""
FILES = {
    ".github/workflows/ci.yml": "name: ci\non:\n  push:\n    branches: [main]\njobs:\n  t:\n    runs-on: x\n",
    "charts/web/Chart.yaml": "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    "charts/web/values.yaml": "replicaCount: 2\nimage:\n  repository: nginx\n",
    "charts/web/templates/deployment.yaml": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ include \"web.fullname\" . }}\n"
        "spec:\n  replicas: {{ .Values.replicaCount }}\n"
    ),
    "policies/web.yaml": POLICY,
    "policies/empty.yaml": "",
    "policies/todo.yaml": "# nothing here yet\n",
    "deploy/app.yaml": WORKLOADS,
    "package.json": '{"name": "x", "version": "1.0.0"}\n',
    "README.md": "# repo\n",
    "list.yaml": "- a\n- b\n",
    "kustomization.yaml": (
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [deploy]\n"
    ),
}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, text in FILES.items():
        path = tmp_path / "repo" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.chdir(tmp_path)  # file names in the output are the ones given
    return tmp_path / "repo"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with CILIA_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def test_recursive_reads_the_objects_and_lists_what_it_skipped(repo: Path) -> None:
    code, out, err = run("validate", "-f", "repo", "-R")
    assert code == 0, err
    check_golden("validate-recursive.txt", f"$ cilia validate -f repo -R\n{err}{out}")
    assert out == "11 files, 3 objects: valid\n"


def test_without_r_only_the_directory_s_own_files(repo: Path) -> None:
    code, out, err = run("validate", "-f", "repo", "-f", "repo/deploy", "-o", "json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["files"], report["objects"]) == (4, 2)
    assert [s["file"] for s in report["skipped"]] == [
        "repo/kustomization.yaml", "repo/list.yaml", "repo/package.json"
    ]


def test_exclude_and_strict(repo: Path) -> None:
    code, out, err = run(
        "validate", "-f", "repo", "-R", "--exclude", ".github", "--exclude", "charts/*",
        "--exclude", "*.json", "--exclude", "list.yaml", "--exclude", "kustom*", "--strict",
    )
    check_golden("validate-strict.txt", f"$ cilia validate -f repo -R --exclude … --strict\n{err}{out}")
    assert code == 1
    assert "refused by --strict" in out and "skipped:" not in err


def test_analysis_reads_the_repository(repo: Path) -> None:
    code, out, err = run("trace", "-f", "repo", "-R", "--from", "default/client", "--to",
                         "deployment:default/web", "--port", "80")
    assert code == 0, err
    assert "verdict: ALLOWED" in out
    assert err.count("skipped: ") == 9


def test_no_objects_at_all_is_an_error(repo: Path) -> None:
    code, out, _ = run("validate", "-f", "repo/charts", "-R")
    assert code == 1
    assert out.startswith("<input>: no Kubernetes objects in the 3 files read\n    skipped:\n")


def test_the_deny_hint_only_when_a_deny_key_is_there(repo: Path) -> None:
    bad = repo / "policies" / "bad.yaml"
    bad.write_text(POLICY.replace("  ingress:\n  - fromEndpoints:", "  ingress:\n  - fromEntities: [world]\n"
                                  "    fromEndpoints:"))
    code, _, err = run("trace", "-f", str(bad), "-f", "repo/deploy", "--from", "entity:world", "--to",
                       "deployment:default/web", "--port", "80")
    assert code == 2 and "not supported" in err
    assert err.rstrip().endswith("(real Cilium would refuse these objects)")
    bad.write_text(POLICY.replace("  ingress:", "  deny:"))
    code, _, err = run("trace", "-f", str(bad), "-f", "repo/deploy", "--from", "entity:world", "--to",
                       "deployment:default/web", "--port", "80")
    assert code == 2 and "corrects deny:" in err


def test_corpus_as_a_repository(corpus: Path) -> None:
    """The corpus read as one repository with -R, less its biggest folder (--exclude; the reading only:
    test_k8s_corpus validates every file)."""
    from cilia.k8s.loader import Selection, load_paths, using_selection

    with using_selection(Selection(recursive=True, exclude=("cilium__cilium",))):
        result = load_paths([corpus])
    assert (len(result.files), len(result.documents), result.errors) == (83, 86, ())
    assert not [f for f in result.files if "cilium__cilium" in f]
    assert [(Path(s.file).name, s.line, s.reason) for s in result.skipped] == [
        ("EXPECTED.yaml", 9, "document 1 is a list, not an object (a mapping with apiVersion and kind)")
    ]


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from cilia.cli.progress import MIN_FILES, FileProgress, wanted
    from cilia.k8s.loader import Selection, load_paths, using_selection

    for i in range(MIN_FILES + 5):
        namespace = f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: n{i}}}\n"
        (tmp_path / f"ns-{i:02}.yaml").write_text(namespace)
    screen = io.StringIO()
    bar = FileProgress(Console(file=screen, force_terminal=True, width=100))
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int, file: str) -> None:
        calls.append((done, total))
        bar(done, total, file)

    with using_selection(Selection(progress=progress)):
        assert len(load_paths([tmp_path]).documents) == MIN_FILES + 5
    assert calls == [(i, MIN_FILES + 5) for i in range(1, MIN_FILES + 6)]
    assert "reading manifests" in screen.getvalue() and bar._bar is None  # drawn, then taken away
    assert not wanted(io.StringIO())  # piped: no bar at all


def test_spinner_only_for_big_inputs_on_a_terminal() -> None:
    import io

    from rich.console import Console

    from cilia.cli.progress import MIN_OBJECTS, analysing

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80)
    with analysing("linting 5 objects", 5, console):
        pass
    assert screen.getvalue() == ""
    with analysing(f"linting {MIN_OBJECTS} objects", MIN_OBJECTS, console):
        pass
    assert f"linting {MIN_OBJECTS} objects" in screen.getvalue()


def test_fix_prints_only_the_manifests(repo: Path) -> None:
    (repo / "policies" / "deny.yaml").write_text(POLICY.replace("  ingress:", "  deny:"))
    code, out, err = run("validate", "-f", "repo", "-R", "--fix")
    assert code == 0, err
    assert "egressDeny" not in out and "ingressDeny:" in out  # the deny with from… peers, fixed
    assert "jobs:" not in out and "replicaCount" not in out and "{{" not in out  # workflow, values, template
