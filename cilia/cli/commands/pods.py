"""``cilia exec POD -- CMD…`` and ``cilia logs POD``: run a command in a pod, read its workload log."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from cilia.agent.cluster import member_configs
from cilia.agent.config import AgentConfig
from cilia.agent.resources import AmbiguousNameError, resolve_name
from cilia.cli.common import (
    ExecArgs,
    RunDirOpt,
    StateDirOpt,
    exec_and_exit,
    exec_command,
    fail,
    node_config,
    open_node_store,
)
from cilia.cli.nameopts import namespace_option
from cilia.lab.node_setup import make_lab
from cilia.store import Kind, ObjectKey


def _pod_key(
    state_dir: Path | None, run_dir: Path | None, namespace: str, name: str
) -> tuple[AgentConfig, ObjectKey]:
    cfg = node_config(state_dir, run_dir)
    with open_node_store(cfg) as store:
        try:
            key = resolve_name(store, Kind.PODS, namespace, name)
        except AmbiguousNameError as e:
            raise fail(str(e)) from e
        if key is not None:  # several nodes: the node the pod runs on
            ns, pod = key.namespace, key.name
            cfg = next((m for m in member_configs(cfg) if make_lab(m, store).get_pod(ns, pod)), cfg)
    if key is None:
        raise fail(f'pods "{name}" not found in namespace {namespace}')
    return cfg, key


def register(app: typer.Typer) -> None:
    @app.command("exec", context_settings={"allow_interspersed_args": False})
    def exec_cmd(
        pod: Annotated[str, typer.Argument(help="Pod name (a unique prefix is enough).")],
        command: ExecArgs,
        namespace: Annotated[str, typer.Option("-n", "--namespace", callback=namespace_option)] = "default",
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Run a command in the pod's network namespace; its exit code is passed through."""
        command = exec_command(command, "cilia exec POD -- CMD [ARGS…]")
        cfg, key = _pod_key(state_dir, run_dir, namespace, pod)
        if cfg.datapath == "sim":
            raise fail("this node runs with --datapath sim: pods have an address but no namespace")
        with open_node_store(cfg) as store:
            lab = make_lab(cfg, store)
            if lab.get_pod(key.namespace, key.name) is None:
                raise fail(f"pod {key.namespace}/{key.name} is not running on this node (yet)")
            exec_and_exit(lambda argv: lab.exec_in_pod(key.namespace, key.name, argv), command)

    @app.command("logs")
    def logs_cmd(
        pod: Annotated[str, typer.Argument(help="Pod name (a unique prefix is enough).")],
        namespace: Annotated[str, typer.Option("-n", "--namespace", callback=namespace_option)] = "default",
        follow: Annotated[bool, typer.Option("-f", "--follow")] = False,
        tail: Annotated[int, typer.Option("--tail", help="Only the last N lines (-1: all).")] = -1,
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Print the pod's workload log (the built-in server's access log, or its command's output)."""
        cfg, key = _pod_key(state_dir, run_dir, namespace, pod)
        with open_node_store(cfg) as store:
            path = make_lab(cfg, store).log_path(key.namespace, key.name)
        if not path.exists():
            raise fail(f"no log for pod {key.namespace}/{key.name} yet ({path})")
        with open(path, errors="replace") as f:
            lines = f.readlines()
            sys.stdout.writelines(lines if tail < 0 else lines[-tail:] if tail else [])
            sys.stdout.flush()
            while follow:
                line = f.readline()
                if line:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    time.sleep(0.2)
