"""Start-up (issue 15 item 2): the command table that ``cilia --help`` lists without importing the
command modules matches what they register; importing the entry point pulls in none of the heavy
libraries only some commands need (a guard on imports, not a timing: ``make bench-cli`` times)."""

from __future__ import annotations

import json
import subprocess
import sys

import typer
import typer.main
from typer.testing import CliRunner

from cilia.cli import lazy
from cilia.cli.registry import COMMANDS, command_modules
from tests.conftest import REPO


def _eager_group() -> typer.core.TyperGroup:
    """Every command module registered at once, as before lazy loading."""
    eager = typer.Typer()
    for module in command_modules():
        mod = __import__(f"cilia.cli.commands.{module}", fromlist=["register"])
        if hasattr(mod, "register"):
            mod.register(eager)
    return typer.main.get_group(eager)


def test_table_matches_what_the_modules_register() -> None:
    real = []
    for module in command_modules():
        for name, cmd in lazy.load_module(module).items():
            first = (cmd.short_help or cmd.help or "").split("\n\n")[0]
            real.append((name, module, " ".join(first.split())))  # the table holds it on one line
    assert sorted(COMMANDS) == sorted(real), "update cilia/cli/registry.py COMMANDS"
    # Listed in typer's own order: commands first, then groups.
    assert [name for name, _, _ in COMMANDS] == list(_eager_group().commands)


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


HEAVY = ("pyroute2", "etcd3aio", "grpc", "pydantic", "numpy", "rich.markdown", "cilia.k8s", "cilia.agent")


def test_importing_the_entry_point_imports_nothing_heavy() -> None:
    loaded = _modules_after("import cilia.cli.main")
    assert not [m for m in loaded if m.split(".")[0] in ("pyroute2", "etcd3aio", "grpc", "typer")]
    assert not [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_help_and_validate_import_only_what_they_need() -> None:
    run = (
        "import sys\nfrom cilia.cli.main import main\nsys.argv = ['cilia', {args}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    loaded = _modules_after(run.format(args="'--help'"))
    assert not [m for m in loaded if any(m == h or m.startswith(h + ".") for h in (*HEAVY, "typer"))]
    loaded = _modules_after(run.format(args="'validate', '-f', 'examples/seed/deny-a-to-b-fixed.yaml'"))
    assert "cilia.k8s.validate" in loaded  # it did validate
    assert not [m for m in loaded if m.split(".")[0] in ("pyroute2", "etcd3aio", "grpc", "numpy", "pydantic")]
    assert "rich.markdown" not in loaded and "cilia.agent.daemon" not in loaded
    assert "rich.console" not in loaded  # plain-text output: the consoles are made when first used
    assert "typer" not in loaded  # validate's common forms are parsed by cli/fastpath.py


def test_help_is_the_same_through_typer_and_the_fast_path() -> None:
    fast = subprocess.run(
        [sys.executable, "-m", "cilia", "-h"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    result = CliRunner().invoke(lazy.app, ["--help"], prog_name="python -m cilia", terminal_width=80)
    assert result.exit_code == 0
    for name, _, _ in COMMANDS:
        assert f"│ {name} " in fast and f"│ {name} " in result.output
    assert fast.splitlines()[1].strip() == result.output.splitlines()[1].strip()
    assert subprocess.run([sys.executable, "-m", "cilia"], cwd=REPO, capture_output=True).returncode == 2


def test_lazy_group_still_runs_every_kind_of_command() -> None:
    runner = CliRunner()
    assert runner.invoke(lazy.app, ["lint", "--rules"]).exit_code == 0  # a command
    result = runner.invoke(lazy.app, ["bpf", "--help"])  # a group
    assert result.exit_code == 0 and "policy" in result.output
    result = runner.invoke(lazy.app, ["no-such-command"])
    assert result.exit_code == 2 and "No such command" in result.output


def test_version_and_short_help() -> None:
    from cilia import __version__

    out = subprocess.run(
        [sys.executable, "-m", "cilia", "--version", "-o", "json"], cwd=REPO, capture_output=True, text=True,
        check=True,
    ).stdout
    data = json.loads(out)
    assert data["kind"] == "cilia.io/Version/v1" and data["cilia"] == __version__ and data["cilium"] == "1.18"
    runner = CliRunner()
    for args in (["--version"], ["version"]):
        result = runner.invoke(lazy.app, args)
        assert result.exit_code == 0 and result.output.startswith(f"cilia {__version__} (Cilium 1.18")
    assert json.loads(runner.invoke(lazy.app, ["version", "-o", "json"]).output) == data
    for args in (["trace", "-h"], ["bpf", "-h"], ["bpf", "policy", "-h"]):
        result = runner.invoke(lazy.app, args)
        assert result.exit_code == 0 and "Usage" in result.output, args
