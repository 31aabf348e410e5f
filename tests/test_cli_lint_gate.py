"""``cilia lint`` as a CI gate: --disable/--enable, the config file (.cilia.yaml, pyproject.toml) found
upward, the cilia.io/lint-ignore annotation, --fail-on, -o sarif (golden), and "selects no pod"
judged only where workloads were given."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cilia.cli.lazy import app
from tests.conftest import SEED
from tests.helpers_analyze import check_golden, run_cli

S = "examples/seed/"
TUTORIAL = ["-f", S + "app-a.yaml", "-f", S + "app-b.yaml", "-f", S + "deny-a-to-b.yaml",
            "-f", S + "allow-frontend-to-b.yaml"]  # CL001, CL003, CL011


def rules_of(out: str) -> list[str]:
    return sorted(f["rule"] for f in json.loads(out)["findings"])


def run_in(cwd: Path, args: list[str]) -> tuple[int, str, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        os.chdir(old)
    return result.exit_code, result.stdout, result.stderr


def test_disable_enable_and_fail_on() -> None:
    rc, out, _ = run_cli(["lint", *TUTORIAL, "-o", "json"])
    assert (rc, rules_of(out)) == (1, ["CL001", "CL003", "CL011"])
    rc, out, _ = run_cli(["lint", *TUTORIAL, "-o", "json", "--disable", "CL003,cl011"])
    assert (rc, rules_of(out)) == (1, ["CL001"])
    assert json.loads(out)["counts"] == {"error": 1, "warning": 0, "info": 0}
    rc, out, _ = run_cli(["lint", *TUTORIAL, "--disable", "CL001", "--fail-on", "error"])
    assert rc == 0 and "CL011 warning" in out  # warnings shown, but they do not fail the run
    rc, _, _ = run_cli(["lint", *TUTORIAL, "--fail-on", "never"])
    assert rc == 0
    rc, _, err = run_cli(["lint", *TUTORIAL, "--disable", "CL999"])
    assert rc == 2 and "unknown lint rule CL999" in err and "--rules" in err


def test_config_file_found_upward_and_flags_over_it(tmp_path: Path) -> None:
    for name in ("app-a.yaml", "app-b.yaml", "deny-a-to-b.yaml", "allow-frontend-to-b.yaml"):
        (tmp_path / name).write_text((SEED / name).read_text())
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    (tmp_path / ".cilia.yaml").write_text("lint:\n  disable: [CL003, CL011]\n  fail-on: error\n")
    args = ["lint", "-f", str(tmp_path), "-o", "json"]
    rc, out, _ = run_in(tmp_path / "sub" / "dir", args)
    assert (rc, rules_of(out)) == (1, ["CL001"])
    rc, out, _ = run_in(tmp_path / "sub" / "dir", [*args, "--enable", "CL011", "--disable", "CL001"])
    assert (rc, rules_of(out)) == (0, ["CL011"])  # fail-on: error from the file; CL011 is a warning
    rc, out, _ = run_in(tmp_path / "sub", [*args, "--no-config"])
    assert (rc, rules_of(out)) == (1, ["CL001", "CL003", "CL011"])
    (tmp_path / ".cilia.yaml").unlink()
    (tmp_path / "sub" / "pyproject.toml").write_text('[tool.cilia.lint]\ndisable = ["CL001"]\n')
    rc, out, _ = run_in(tmp_path / "sub" / "dir", args)
    assert (rc, rules_of(out)) == (1, ["CL003", "CL011"])
    (tmp_path / "sub" / "pyproject.toml").write_text('[tool.cilia.lint]\nfail-on = "sometimes"\n')
    rc, _, err = run_in(tmp_path / "sub" / "dir", args)
    assert rc == 2 and 'fail-on: "sometimes"' in err


def test_annotation_silences_one_finding_on_one_object(tmp_path: Path) -> None:
    allow = (SEED / "allow-frontend-to-b.yaml").read_text()
    assert "metadata:\n  name: allow-frontend-to-app-b\n" in allow
    twin = allow.replace("name: allow-frontend-to-app-b", "name: allow-frontend-to-app-b-twin")
    quiet = allow.replace(
        "metadata:\n  name: allow-frontend-to-app-b\n",
        "metadata:\n  name: allow-frontend-to-app-b\n  annotations:\n    cilia.io/lint-ignore: CL011\n",
    )
    (tmp_path / "quiet.yaml").write_text(quiet)
    (tmp_path / "twin.yaml").write_text(twin)
    _, out, _ = run_cli(["lint", "-f", S + "app-a.yaml", "-f", S + "app-b.yaml",
                          "-f", str(tmp_path), "-o", "json"])
    found = sorted((f["rule"], Path(f["file"]).name) for f in json.loads(out)["findings"])
    assert found == [("CL003", "quiet.yaml"), ("CL003", "twin.yaml"), ("CL011", "twin.yaml")]


def test_selects_no_pod_only_where_workloads_were_given() -> None:
    _, out, _ = run_cli(["lint", "-f", S + "allow-frontend-to-b.yaml", "-o", "json"])
    assert rules_of(out) == ["CL011"]  # policies alone: no CL003 for the missing pods
    _, out, _ = run_cli(["lint", "-f", S + "app-a.yaml", "-f", S + "allow-frontend-to-b.yaml", "-o", "json"])
    assert rules_of(out) == ["CL003", "CL004", "CL011"]  # no app-b pod for the peer either


def test_sarif_golden() -> None:
    rc, out, _ = run_cli(["lint", *TUTORIAL, "-o", "sarif"])
    assert rc == 1
    log = json.loads(out)
    assert (log["$schema"], log["version"]) == ("https://json.schemastore.org/sarif-2.1.0.json", "2.1.0")
    [run] = log["runs"]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["CL001", "CL003", "CL011"]
    first = run["results"][0]
    assert first["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": S + "allow-frontend-to-b.yaml"},
        "region": {"startLine": 7, "startColumn": 3},
    }
    run["tool"]["driver"]["version"] = "VERSION"  # the golden file outlives a release
    check_golden("lint", "tutorial.sarif", json.dumps(log, indent=2) + "\n")


@pytest.mark.parametrize("fmt", ["yaml", "table"])
def test_yaml_and_table(fmt: str) -> None:
    rc, out, _ = run_cli(["lint", *TUTORIAL, "-o", fmt])
    assert rc == 1
    check_golden("lint", f"tutorial.{fmt}", out)


def test_sarif_uris() -> None:
    from cilia.analyze.sarif import _uri

    assert (_uri("examples/seed/a.yaml"), _uri("./k8s/b c.yaml"), _uri("-")) == (
        "examples/seed/a.yaml", "k8s/b%20c.yaml", "stdin"
    )
    assert _uri("/srv/repo/p.yaml") == "file:///srv/repo/p.yaml"
