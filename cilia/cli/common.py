"""What the commands share: the consoles, ``fail``, the ``-o`` output choice, the node's state and
run directory options, and the node's configuration, store and agent as a command reaches them.

Imported by command modules only (never by :mod:`cilia.cli.main`, which loads commands lazily); the
agent and store are imported inside the functions that need them, so a command that only prints an
``Output`` pays for none of them.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from cilia.agent.client import AgentClient
    from cilia.agent.config import AgentConfig
    from cilia.store import Store


class Output(StrEnum):
    """``-o text | json``: the output formats most commands have."""

    text = "text"
    json = "json"


OutputOpt = Annotated[Output, typer.Option("-o", "--output", help="text | json")]  # checked choice
OutputStrOpt = Annotated[str, typer.Option("-o", "--output", help="text | json")]  # compared as text
ExecArgs = Annotated[list[str], typer.Argument(help="Command and arguments, after --.")]


def _console(name: str) -> Console:
    """``console`` (stdout) or ``err_console`` (stderr): :func:`cilia.cli.consoles.get`."""
    from cilia.cli import consoles

    return consoles.get(name)


def __getattr__(name: str) -> Any:
    if name in ("console", "err_console"):  # `from cilia.cli.common import console` works as before
        return _console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Node state directory (default /var/lib/cilia, env CILIA_STATE_DIR).",
        show_default=False,
    ),
]
RunDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--run-dir", help="Socket/pid directory (default /run/cilia, env CILIA_RUN_DIR).", show_default=False
    ),
]


def node_config(state_dir: Path | None, run_dir: Path | None, **overrides: Any) -> AgentConfig:
    """Flags (``overrides`` that are not None), else the settings the node was last started with,
    else the environment and defaults."""
    from cilia.agent.config import AgentConfig, ConfigError

    try:
        cfg = AgentConfig.resolve(state_dir, run_dir).with_saved()
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(cfg, **given) if given else cfg
    except ConfigError as e:
        _console("err_console").print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e


def open_node_store(cfg: AgentConfig) -> Store:
    """The node's store (the SQLite file in the state directory, or the cluster's etcd)."""
    from cilia.agent.cluster import open_agent_store
    from cilia.store import StoreError

    try:
        return open_agent_store(cfg)
    except StoreError as e:
        raise fail(str(e), 2) from e


def agent_client(cfg: AgentConfig) -> AgentClient:
    """A client of the node's agent API (its unix socket)."""
    from cilia.agent.client import AgentClient

    return AgentClient(cfg.socket_path)


def wait_for_agent(cfg: AgentConfig, revision: int, timeout: float = 600.0, quiet: bool = False) -> bool:
    """Wait until the running agent has reconciled ``revision`` and its own follow-up work (pods of
    new Deployments, identities); a spinner shows progress on a terminal. False (with a note) if
    no agent runs or it did not catch up within ``timeout``."""
    from cilia.agent.client import AgentAPIError, AgentTimeout, AgentUnavailable
    from cilia.agent.cluster import member_configs

    members = member_configs(cfg)
    if members:  # several nodes: each agent reconciles the shared store
        return all([wait_for_agent(m, revision, timeout, quiet) for m in members])
    client = agent_client(cfg)
    deadline = time.monotonic() + timeout
    err = _console("err_console")
    spinner = err.status("waiting for the agent") if not quiet and err.is_terminal else None
    with spinner if spinner is not None else contextlib.nullcontext():
        while True:
            try:
                reached = client.wait_revision(revision, max(0.1, min(1.0, deadline - time.monotonic())))
                status = client.status()
            except AgentTimeout:
                if time.monotonic() < deadline:
                    continue  # busy with a long reconcile (many pods): keep waiting
                reached, status = 0, {}
            except (AgentUnavailable, AgentAPIError) as e:
                if not quiet:
                    err.print(f"[yellow]note:[/yellow] stored, but {e}")
                return False
            if reached >= revision and status.get("caught_up"):
                if status.get("last_error") and not quiet:
                    err.print(f"[yellow]warning:[/yellow] the agent reported: {status['last_error']} "
                              "(it retries; see `cilia get events` and its log)")
                return True
            if time.monotonic() >= deadline:
                if not quiet:
                    err.print(
                        f"[yellow]note:[/yellow] stored; the agent has not caught up yet "
                        f"(revision {reached} of {revision}); see `cilia status`"
                    )
                return False
            if spinner is not None:
                created, to_create = status.get("pods_created", 0), status.get("pods_to_create", 0)
                pods = f", creating pods {created}/{to_create}" if created < to_create else ""  # its reports
                spinner.update(
                    f"waiting for the agent: store revision {reached}/{revision}, "
                    f"{status.get('endpoints', 0)} endpoints{pods}"
                )


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr; the exit to raise (``raise fail(...)``)."""
    from cilia.cli.consoles import print_error

    print_error(message)
    return typer.Exit(code)


def exec_command(command: list[str], usage: str) -> list[str]:
    """The command of ``… exec … -- CMD [ARGS…]`` (the ``--`` dropped); an error naming ``usage``
    when none is given."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise fail(f"give the command after --: {usage}", 2)
    return command


def exec_and_exit(run: Callable[[list[str]], int], command: list[str]) -> NoReturn:
    """Run ``command`` with ``run`` (in a pod's or a world host's namespace) and exit with its code;
    a program that does not exist exits 127, as in a shell."""
    try:
        code = run(command)
    except FileNotFoundError as e:
        raise fail(f"exec: {e}", 127) from e
    raise typer.Exit(code)


def print_listing(output: str, document: dict[str, Any], lines: Iterable[str]) -> None:
    """What a ``list`` command prints: ``document`` for ``-o json``, else the table's ``lines``."""
    if output == "json":
        print(json.dumps(document, sort_keys=True))
        return
    for line in lines:
        _console("console").print(line)


class DiffOutput(StrEnum):
    """The formats of a connectivity delta (``cilia diff -o``, ``cilia policy from-flows --diff-output``)."""

    text = "text"
    json = "json"
    md = "md"
    csv = "csv"
    dot = "dot"
    mermaid = "mermaid"
    html = "html"
