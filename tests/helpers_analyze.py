"""Shared by the analysis tests: the seed story's scenarios, a CLI runner and golden-file checks.

Golden files live in tests/golden/<command>/; regenerate them with CILIA_UPDATE_GOLDEN=1 and review
the diff.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from typer.testing import CliRunner

from cilia.analyze.cluster import Analysis, Options, analyse_paths
from cilia.cli.main import app
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden"
UPDATE = os.environ.get("CILIA_UPDATE_GOLDEN") == "1"
S = "examples/seed/"

# The seed story, step by step (paths relative to the repository, as users would type them).
SCENARIOS: dict[str, list[str]] = {
    "no-policy": [S + "app-a.yaml", S + "app-b.yaml"],
    "deny": [S + "app-a.yaml", S + "app-b.yaml", S + "deny-a-to-b-fixed.yaml"],
    "story": [
        S + "app-a.yaml",
        S + "app-b.yaml",
        S + "frontend-pod.yaml",
        S + "deny-a-to-b-fixed.yaml",
        S + "allow-frontend-to-b.yaml",
    ],
    "intended": [
        S + "app-a.yaml",
        S + "app-b.yaml",
        S + "frontend-pod.yaml",
        S + "allow-frontend-egress-to-b.yaml",
    ],
    "prod": [S + "prod-backend-to-database.yaml"],
}


def files_args(scenario: str) -> list[str]:
    return [arg for f in SCENARIOS[scenario] for arg in ("-f", f)]


def analysis_of(scenario: str, options: Options = Options()) -> Analysis:
    return analyse_paths([REPO / f for f in SCENARIOS[scenario]], options)


def run_cli(args: Sequence[str], stdin: str | None = None) -> tuple[int, str, str]:
    """Run ``cilia ARGS`` in-process from the repository root (file names in output stay relative)."""
    cwd = Path.cwd()
    os.chdir(REPO)
    try:
        result = CliRunner().invoke(app, list(args), input=stdin)
    finally:
        os.chdir(cwd)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def check_golden(command: str, name: str, text: str) -> None:
    """Compare ``text`` with tests/golden/<command>/<name> exactly (write it with CILIA_UPDATE_GOLDEN=1)."""
    path = GOLDEN / command / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with CILIA_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{path} differs; CILIA_UPDATE_GOLDEN=1 to accept"
