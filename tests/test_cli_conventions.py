"""Conventions every command shares (issue 15 item 3): examples and readable value names in help, no raw
backticks, ``cilia completion bash|zsh|fish`` (and completions that work), ``-o text`` = ``-o table``,
``-o yaml`` wherever ``-o json``, schema markers in structured output."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from cilia.cli import main as cli_main
from cilia.cli.examples import EXAMPLES
from cilia.cli.lazy import app
from tests.helpers_analyze import run_cli

S = "examples/seed/"


def _walk(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name), cmd
        if hasattr(cmd, "commands"):
            yield from _walk(cmd, (*path, name))


GROUP = typer.main.get_group(app)
EVERY = list(_walk(GROUP))


def test_every_command_help_is_readable_and_has_examples() -> None:
    runner = CliRunner()
    problems = []
    for path, _ in EVERY:
        out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).stdout
        if "Examples:" not in out and "Example:" not in out:
            problems.append((path, "no examples"))
        for bad in ("<bool>", "<list[", "<str>", "<int>", "`"):
            if bad in out:
                problems.append((path, bad))
    assert problems == []


@pytest.mark.parametrize("path", sorted(EXAMPLES))
def test_examples_parse(path: str) -> None:
    """Each example names options and choices the command really has."""
    for example in EXAMPLES[path]:
        words = shlex.split(example.replace("source <(", "").rstrip(")"))
        for stop in (">", "|"):
            words = words[: words.index(stop)] if stop in words else words
        assert words[0] == "cilia"
        args = words[1:]
        if args == ["--version"]:
            continue
        with GROUP.make_context("cilia", list(args)) as ctx:
            name, cmd, rest = GROUP.resolve_command(ctx, list(args))
            while hasattr(cmd, "commands") and rest and rest[0] in cmd.commands:
                name, cmd, rest = rest[0], cmd.commands[rest[0]], rest[1:]
            cmd.make_context(name, rest, parent=ctx)  # raises on an unknown option or bad choice


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    rc, out, _ = run_cli(["completion", shell])
    assert rc == 0 and "_CILIA_COMPLETE=complete_" + shell in out


def test_bash_completion_answers(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def complete(words: str) -> list[str]:
        monkeypatch.setenv("_CILIA_COMPLETE", "complete_bash")
        monkeypatch.setenv("COMP_WORDS", words)
        monkeypatch.setenv("COMP_CWORD", str(len(words.split()) - (0 if words.endswith(" ") else 1)))
        monkeypatch.setattr(sys, "argv", ["cilia"])
        with pytest.raises(SystemExit) as stop:
            cli_main.main()
        assert stop.value.code == 0
        return capsys.readouterr().out.split()

    assert complete("cilia vali") == ["validate"]
    assert complete("cilia lint --fail-on ") == ["error", "warning", "never"]
    assert "--exclude" in complete("cilia validate --ex")


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "-f", S + "app-a.yaml"],
        ["version"],
        ["trace", "-f", S + "app-a.yaml", "-f", S + "app-b.yaml", "--from", "deployment:default/app-a",
         "--to", "deployment:default/app-b", "--port", "80"],
    ],
    ids=["validate", "version", "trace"],
)
def test_text_is_table_and_yaml_is_json(args: list[str]) -> None:
    rc_text, text, _ = run_cli([*args, "-o", "text"])
    rc_table, table, _ = run_cli([*args, "-o", "table"])
    assert (rc_table, table) == (rc_text, text)
    rc_json, as_json, _ = run_cli([*args, "-o", "json"])
    rc_yaml, as_yaml, _ = run_cli([*args, "--output=yaml"])
    assert rc_yaml == rc_json
    assert yaml.safe_load(as_yaml) == json.loads(as_json)


def test_connectivity_takes_text_for_its_table() -> None:
    args = ["connectivity", "-f", S + "app-a.yaml", "-f", S + "app-b.yaml"]
    assert run_cli([*args, "-o", "text"])[1] == run_cli([*args, "-o", "table"])[1]


def test_schema_markers() -> None:
    _, out, _ = run_cli(["validate", "-f", S + "app-a.yaml", "-o", "json"])
    assert json.loads(out)["kind"] == "cilia.io/ValidateReport/v1"
    _, out, _ = run_cli(["lint", "-f", S + "app-a.yaml", "-o", "json"])
    report = json.loads(out)
    assert report["kind"] == "cilia.io/LintReport/v1"
    assert isinstance(report["counts"], dict) and "errors" not in report  # validate's errors is a list
    _, out, _ = run_cli(["version", "-o", "json"])
    assert json.loads(out)["kind"] == "cilia.io/Version/v1"
