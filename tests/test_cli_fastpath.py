"""``cilia validate`` through the fast path (no typer) prints and exits exactly as the typer command;
what the fast path does not parse goes to typer."""

from __future__ import annotations

import pytest

from cilia.cli import fastpath
from tests.conftest import REPO
from tests.helpers_analyze import run_cli

S = "examples/seed/"
CASES = [
    ["validate", "-f", S + "app-a.yaml"],
    ["validate", "-f", S, "-o", "json"],
    ["validate", f"--filename={S}deny-a-to-b.yaml", "-otable"],
    ["validate", "-f", S + "deny-a-to-b.yaml", "--fix"],
    ["validate", "-f", S, "-R", "--exclude", "expect*", "--strict", "--output", "yaml"],
    ["validate", "-f", S + "app-a.yaml", "--enable-node-selector-labels", "-f", "no-such.yaml"],
]


@pytest.mark.parametrize("argv", CASES, ids=range(len(CASES)))
def test_fast_path_is_the_typer_command(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(argv)
    monkeypatch.chdir(REPO)
    assert fastpath.run(argv) == code
    fast = capsys.readouterr()
    assert (fast.out, fast.err) == (out, err)


@pytest.mark.parametrize(
    "argv",
    [
        ["validate"],
        ["validate", "-h"],
        ["validate", "--write", "-f", S],
        ["validate", "-f", S, "--bogus"],
        ["validate", "-f", S, "-o", "csv"],
        ["validate", "-f"],
        ["lint", "-f", S],
    ],
)
def test_what_the_fast_path_leaves_to_typer(argv: list[str]) -> None:
    assert fastpath.run(argv) is None
