"""``cilia agent`` / ``up`` / ``down`` / ``status``: the local node's lifecycle.

Also holds the small helpers the other node verbs share (state/run dir options, the agent client,
waiting for the agent to reconcile a write).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cilia.agent.client import AgentAPIError, AgentClient, AgentUnavailable
from cilia.agent.config import AgentConfig, ConfigError
from cilia.store import Store, StoreError, open_store

console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

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
    try:
        cfg = AgentConfig.resolve(state_dir, run_dir).with_saved()
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(cfg, **given) if given else cfg
    except ConfigError as e:
        err_console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e


def open_node_store(cfg: AgentConfig) -> Store:
    """The node's store (the SQLite file in the state directory)."""
    try:
        return open_store(cfg.state_dir)
    except StoreError as e:
        raise fail(str(e), 2) from e


def agent_client(cfg: AgentConfig) -> AgentClient:
    return AgentClient(cfg.socket_path)


def wait_for_agent(cfg: AgentConfig, revision: int, timeout: float = 600.0, quiet: bool = False) -> bool:
    """Wait until the running agent has reconciled ``revision`` and its own follow-up work (pods of
    new Deployments, identities); a spinner shows progress on a terminal. False (with a note) if
    no agent runs or it did not catch up within ``timeout``."""
    client = agent_client(cfg)
    deadline = time.monotonic() + timeout
    spinner = err_console.status("waiting for the agent") if not quiet and err_console.is_terminal else None
    with spinner if spinner is not None else contextlib.nullcontext():
        while True:
            try:
                reached = client.wait_revision(revision, max(0.1, min(1.0, deadline - time.monotonic())))
                status = client.status()
            except (AgentUnavailable, AgentAPIError) as e:
                if not quiet:
                    err_console.print(f"[yellow]note:[/yellow] stored, but {e}")
                return False
            if reached >= revision and status.get("caught_up"):
                return True
            if time.monotonic() >= deadline:
                if not quiet:
                    err_console.print(
                        f"[yellow]note:[/yellow] stored; the agent has not caught up yet "
                        f"(revision {reached} of {revision}); see `cilia status`"
                    )
                return False
            if spinner is not None:
                spinner.update(
                    f"waiting for the agent: store revision {reached}/{revision}, "
                    f"{status.get('endpoints', 0)} endpoints"
                )


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def register(app: typer.Typer) -> None:
    @app.command("agent")
    def agent_cmd(
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        node_index: Annotated[int | None, typer.Option(help="Pods get 198.18.<16·i>.0/20 (0).")] = None,
        enforcement_mode: Annotated[str | None, typer.Option(help="default | always | never")] = None,
        allow_localhost: Annotated[str | None, typer.Option(help="always | policy")] = None,
        datapath: Annotated[str | None, typer.Option(help="bpf (kernel) | sim (no kernel, no netns)")] = None,
    ) -> None:
        """Run the node agent in the foreground (``cilia up`` runs it in the background)."""
        from cilia.agent import daemon

        cfg = node_config(
            state_dir,
            run_dir,
            node_index=node_index,
            enforcement_mode=enforcement_mode,
            allow_localhost=allow_localhost,
            datapath=datapath,
        )
        raise typer.Exit(daemon.run(cfg))

    @app.command("up")
    def up_cmd(
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        node_index: Annotated[int | None, typer.Option(help="Pods get 198.18.<16·i>.0/20 (0).")] = None,
        enforcement_mode: Annotated[str | None, typer.Option(help="default | always | never")] = None,
        allow_localhost: Annotated[str | None, typer.Option(help="always | policy")] = None,
        datapath: Annotated[str | None, typer.Option(help="bpf | sim")] = None,
        output: Annotated[str, typer.Option("-o", "--output", help="text | json")] = "text",
    ) -> None:
        """Start the local node: the agent in the background; waits until it is ready."""
        from cilia.agent import process

        cfg = node_config(
            state_dir,
            run_dir,
            node_index=node_index,
            enforcement_mode=enforcement_mode,
            allow_localhost=allow_localhost,
            datapath=datapath,
        )
        already = process.read_pid(cfg)
        try:
            pid = process.start_background(cfg)
        except process.AgentStartError as e:
            raise fail(str(e)) from e
        status = agent_client(cfg).status()
        if output == "json":
            print(
                json.dumps(
                    {
                        "pid": pid,
                        "log": str(cfg.log_path),
                        "socket": str(cfg.socket_path),
                        "already_running": already is not None,
                        "status": status,
                    },
                    sort_keys=True,
                )
            )
            return
        verb = "already running" if already else "started"
        console.print(f"cilia node {verb}: agent pid {pid}, {status['endpoints']} endpoints")
        console.print(f"  logs:   {cfg.log_path}")
        console.print(f"  socket: {cfg.socket_path}")
        console.print(f"  state:  {cfg.state_dir}")

    @app.command("down")
    def down_cmd(
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        purge: Annotated[bool, typer.Option(help="Also delete the desired state (store), events.")] = False,
        output: Annotated[str, typer.Option("-o", "--output", help="text | json")] = "text",
    ) -> None:
        """Stop the agent and remove every pod, link, pin, socket and process cilia created."""
        from cilia.agent import node, process

        cfg = node_config(state_dir, run_dir)
        pid = process.stop(cfg)
        report = node.teardown(cfg, purge=purge)
        if output == "json":
            print(json.dumps({"stopped_pid": pid, **report.to_json()}, sort_keys=True))
        else:
            if pid:
                console.print(f"stopped agent pid {pid}")
            for line in report.removed:
                console.print(f"  removed {line}")
            if report.leftovers:
                err_console.print("[red]left behind:[/red]")
                for line in report.leftovers:
                    err_console.print(f"  {line}")
            else:
                console.print("node is down; nothing left behind")
        if report.leftovers:
            raise typer.Exit(1)

    @app.command("status")
    def status_cmd(
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        output: Annotated[str, typer.Option("-o", "--output", help="text | json")] = "text",
    ) -> None:
        """Show whether the node agent runs, and what it manages."""
        cfg = node_config(state_dir, run_dir)
        try:
            status = agent_client(cfg).status()
        except (AgentUnavailable, AgentAPIError) as e:
            if output == "json":
                print(json.dumps({"ready": False, "error": str(e)}))
            else:
                err_console.print(str(e))
            raise typer.Exit(1) from e
        if output == "json":
            print(json.dumps(status, sort_keys=True))
            return
        for k in sorted(status):
            console.print(f"{k:>16}: {status[k]}")
