"""Every command and sub-command prints its help (help text is rendered with rich markup, where a
stray bracket is an error)."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from cilia.cli.main import app


def _paths(cmd: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    if hasattr(cmd, "commands"):  # a group (typer may bring its own click)
        for name, sub in sorted(cmd.commands.items()):
            out += _paths(sub, (*prefix, name))
    return out


PATHS = _paths(typer.main.get_command(app))


def test_there_are_many_commands() -> None:
    names = {p[0] for p in PATHS if p}
    assert {"validate", "lint", "trace", "connectivity", "verify", "up", "down", "apply", "get",
            "observe", "bpf", "world"} <= names  # fmt: skip


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "cilia")
def test_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "Usage" in result.output
