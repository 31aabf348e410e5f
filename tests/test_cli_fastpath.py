"""``cilia validate`` and ``cilia trace`` through the fast path (no typer) print and exit exactly as the
typer commands; what the fast path does not parse goes to typer."""

from __future__ import annotations

from pathlib import Path

import pytest

from cilia.cli import fastpath
from tests.conftest import REPO
from tests.helpers_analyze import files_args, run_cli
from tests.test_cli_peer_names import TRACES
from tests.test_cli_trace import CASES as TRACE_CASES
from tests.test_cli_trace_fqdn import world  # noqa: F401 (the fixture)

S = "examples/seed/"
CASES = [
    ["validate", "-f", S + "app-a.yaml"],
    ["validate", "-f", S, "-o", "json"],
    ["validate", f"--filename={S}deny-a-to-b.yaml", "-otable"],
    ["validate", "-f", S + "deny-a-to-b.yaml", "--fix"],
    ["validate", "-f", S, "-R", "--exclude", "expect*", "--strict", "--output", "yaml"],
    ["validate", "-f", S + "app-a.yaml", "--enable-node-selector-labels", "-f", "no-such.yaml"],
    # trace: every golden question (two also as json); kubectl names, labels, every port class
    *(["trace", *files_args(sc), "--from", a, "--to", b, "--port", port]
      for _, sc, a, b, port, _ in TRACE_CASES),
    *(["trace", *files_args(sc), "--from", a, "--to", b, "--port", port, "-o", "json"]
      for _, sc, a, b, port, _ in TRACE_CASES[1:3]),
    *(["trace", "-f", "tests/inputs/peers/cluster.yaml", *args.split()] for _, args, _ in TRACES[::2]),
    ["trace", "--filename=tests/inputs/peers/cluster.yaml", "-nprod", "--from=deploy/frontend", "--to",
     "svc/api", "-otable", "--no-state"],
    ["trace", "-f", S, "-R", "--exclude", "expect*", "--from", "deployment:default/app-a", "--to",
     "entity:world", "--port", "80", "--enforcement-mode", "always", "--allow-localhost", "policy"],
    ["trace", *files_args("story"), "--from", "entity:host", "--to", "default/app-a-frontend", "--port",
     "22/TCP", "--allow-localhost", "policy", "--enable-node-selector-labels", "--state-dir", "/nonexistent"],
    # bad input found while running: the same messages, exit 2
    ["trace", *files_args("story"), "--from", "default/nope", "--to", "entity:world", "--port", "80/TCP"],
    ["trace", *files_args("story"), "--from", "entity:world", "--to", "entity:host", "--port", "80/GRE"],
    ["trace", "-f", S + "deny-a-to-b.yaml", "--from", "entity:world", "--to", "entity:host"],
    ["trace", "-f", "no-such.yaml", "--from", "entity:world", "--to", "entity:host"],
    ["trace", *files_args("story"), "-n", "default", "-A", "--from-labels", "app", "--to", "entity:world"],
    ["trace", *files_args("story"), "--from-namespace", "x", "--to", "entity:world", "--from", "default/y"],
    ["trace", *files_args("story"), "--from", "entity:world", "--to", "entity:host", "--http-header", "x"],
    ["trace", *files_args("story"), "--no-state", "--state-dir", "/tmp", "--from", "entity:world", "--to",
     "entity:host"],
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
        ["trace", "--from", "entity:world", "--to", "entity:host"],  # no -f: typer names it
        ["trace", "-f", S, "-h"],
        ["trace", "-f", S, "-o", "yaml", "--from", "entity:world", "--to", "entity:host"],
        ["trace", "-f", S, "-n", "Not_A_Label", "--from", "a", "--to", "b"],
        ["trace", "-f", S, "--enforcement-mode", "ALWAYS", "--from", "a", "--to", "b"],
        ["trace", "-f", S, "--from", "--to", "b"],
        ["trace", "-f", S, "-An", "x", "--from", "a", "--to", "b"],
        ["trace", "-f", S, "--no-state=1", "--from", "a", "--to", "b"],
        ["trace", "-f", S, "extra", "--from", "a", "--to", "b"],
    ],
)
def test_what_the_fast_path_leaves_to_typer(argv: list[str]) -> None:
    assert fastpath.run(argv) is None


def test_trace_with_what_the_node_learned(
    world: Path,  # noqa: F811 (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """toFQDNs decided on the node's saved DNS answers, its state directory given or from the
    environment: the fast path answers as the typer command."""
    base = ["trace", "-f", str(world / "m.yaml"), "--from", "default/client", "--port", "443/TCP"]
    for argv, env in (
        ([*base, "--to", "fqdn:cdn.example.org", "--state-dir", str(world / "node")], None),
        ([*base, "--to", "fqdn:api.example.com", "-o", "json"], str(world / "node")),
    ):
        if env is not None:
            monkeypatch.setenv("CILIA_STATE_DIR", env)
        code, out, err = run_cli(argv)
        assert fastpath.run(argv) == code
        fast = capsys.readouterr()
        assert (fast.out, fast.err) == (out, err) and "ALLOWED" in out.upper()
