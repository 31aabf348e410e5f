"""``cilia validate``: golden text/json output, exit codes, --fix and --write.

Golden files live in tests/golden/validate/; regenerate them with CILIA_UPDATE_GOLDEN=1 and review
the diff.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from cilia.cli.commands import validate as validate_cmd
from cilia.k8s.loader import load_text
from cilia.k8s.validate import validate_result
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden" / "validate"
UPDATE = os.environ.get("CILIA_UPDATE_GOLDEN") == "1"


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Test root."""

    validate_cmd.register(app)
    return app


APP = make_app()


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    cwd = Path.cwd()
    os.chdir(REPO)  # file names in the output are the ones given, relative to the repository
    try:
        result = CliRunner().invoke(APP, ["validate", *args], input=stdin)
    finally:
        os.chdir(cwd)
    return result.exit_code, result.stdout, result.stderr


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with CILIA_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


SCENARIOS = {
    "seed-deny": ["examples/seed/deny-a-to-b.yaml"],
    "seed-valid": [
        "examples/seed/app-a.yaml",
        "examples/seed/app-b.yaml",
        "examples/seed/allow-frontend-to-b.yaml",
    ],
    "many-errors": ["tests/golden/validate/many-errors.yaml"],
}
EXIT = {"seed-deny": 1, "seed-valid": 0, "many-errors": 1}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_golden_output(scenario: str, fmt: str) -> None:
    args = [a for f in SCENARIOS[scenario] for a in ("-f", f)]
    code, out, _ = run(*args, "-o", fmt)
    assert code == EXIT[scenario]
    check_golden(f"{scenario}.{'txt' if fmt == 'text' else 'json'}", out)
    if fmt == "json":
        data = json.loads(out)
        assert data["valid"] is (code == 0)
        assert set(data) == {"kind", "valid", "files", "objects", "errors", "warnings", "skipped"}
        assert data["kind"] == "cilia.io/ValidateReport/v1"


def test_seed_deny_names_line_10_and_the_fix() -> None:
    _, out, _ = run("-f", "examples/seed/deny-a-to-b.yaml", "-o", "json")
    [err] = json.loads(out)["errors"]
    assert (err["line"], err["column"], err["path"], err["message"]) == (
        10,
        3,
        "spec.deny",
        'unknown field "spec.deny"',
    )
    assert "egressDeny:" in err["hint"] and "egress: false" in err["hint"]


def test_fix_prints_a_valid_manifest_keeping_comments() -> None:
    code, out, _ = run("-f", "examples/seed/deny-a-to-b.yaml", "--fix")
    assert code == 0
    check_golden("seed-deny-fix.yaml", out)
    assert out.startswith("# deny-a-to-b.yaml\n")
    assert validate_result(load_text(out, "fixed.yaml")).valid
    spec = yaml.safe_load(out)["spec"]
    assert list(spec) == ["endpointSelector", "egressDeny", "enableDefaultDeny"]
    assert spec["enableDefaultDeny"] == {"egress": False}


def test_fix_write_rewrites_files(tmp_path: Path) -> None:
    target = tmp_path / "deny.yaml"
    shutil.copy(REPO / "examples/seed/deny-a-to-b.yaml", target)
    code, out, err = run("-f", str(target), "--fix", "--write")
    assert (code, out) == (0, "")
    assert err.splitlines() == [
        f'{target}: spec.egressDeny: replaced "deny" with egressDeny',
        f"{target}: spec.enableDefaultDeny.egress: set enableDefaultDeny.egress: false",
    ]
    assert run("-f", str(target))[0] == 0


def test_fix_that_cannot_repair_everything_exits_1() -> None:
    code, out, err = run("-f", "tests/golden/validate/many-errors.yaml", "--fix")
    assert code == 1
    assert "toPorts:" in out and "fromPorts" not in out.replace('"fromPorts"', "")
    assert err.startswith("the fixed manifests are still invalid:\n")


def test_exit_2_for_unreadable_input_and_stdin() -> None:
    code, out, _ = run("-f", "does/not/exist.yaml")
    assert code == 2
    assert out == "does/not/exist.yaml: no such file or directory\n0 files, 0 objects: 1 error\n"
    text = (REPO / "examples/seed/allow-frontend-to-b.yaml").read_text()
    assert run("-f", "-", stdin=text)[:2] == (0, "1 file, 1 object: valid\n")


def test_write_needs_fix() -> None:
    code, _, err = run("-f", "examples/seed/app-a.yaml", "--write")
    assert code == 2 and "--write needs --fix" in err


def test_registered_in_the_real_cli() -> None:
    from cilia.cli.main import app

    result = CliRunner().invoke(app, ["validate", "-f", str(REPO / "examples/seed/allow-frontend-to-b.yaml")])
    assert (result.exit_code, result.stdout) == (0, "1 file, 1 object: valid\n")


def test_node_selector_labels_flag(tmp_path: Path) -> None:
    policy = tmp_path / "nodes.yaml"
    policy.write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: n}\n"
        "spec: {endpointSelector: {}, ingress: [{fromNodes: [{}]}]}\n"
    )
    assert run("-f", str(policy))[0] == 1
    assert run("-f", str(policy), "--enable-node-selector-labels")[:2] == (0, "1 file, 1 object: valid\n")
