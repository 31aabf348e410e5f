"""``cilia label`` takes full names only, as kubectl: a unique prefix used to pick the object, so a
typo could relabel (and so re-identify) a pod the user did not name (issue 13 item 4)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cilia.cli.main import app
from cilia.store import Kind, open_store

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web-7f9c
  labels: {app: web}
spec:
  containers: [{name: web, image: nginx}]
---
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
"""


def test_label_needs_the_full_name(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(POD)
    runner = CliRunner()
    sd = ["--state-dir", str(tmp_path / "state"), "--run-dir", str(tmp_path / "run"), "--no-wait"]
    assert runner.invoke(app, ["apply", "-f", str(tmp_path / "pod.yaml"), *sd]).exit_code == 0
    res = runner.invoke(app, ["label", "pod", "web", "access=frontend", *sd])
    assert res.exit_code == 1 and 'pods "web" not found' in res.output
    res = runner.invoke(app, ["label", "ns", "team", "owner=a", *sd])  # not the namespace "team-a"
    assert res.exit_code == 1 and "not found" in res.output
    res = runner.invoke(app, ["label", "pod", "web-7f9c", "access=frontend", *sd])
    assert res.exit_code == 0, res.output
    with open_store(tmp_path / "state") as store:
        ns = store.get(Kind.NAMESPACES.key("", "team-a"))
        assert ns is not None and "owner" not in (ns.value["metadata"].get("labels") or {})
        rec = store.get(Kind.PODS.key("default", "web-7f9c"))
        assert rec is not None and rec.value["metadata"]["labels"] == {"app": "web", "access": "frontend"}
