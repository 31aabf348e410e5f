"""``cilia audit on|off|status``: policy audit mode for the node (or for namespaces with ``-n``).

In audit mode drops are let through and reported with verdict AUDIT (``cilia observe --verdict
AUDIT``). Per policy, the annotation ``cilia.io/audit: "true"`` does the same for the drops only that
policy would cause (see :mod:`cilia.observe.audit`); so does the annotation on a Namespace for all
its policies. The setting is kept in ``audit.json`` in the state directory (a starting agent reads
it) and a running agent applies it at once (``POST /v1/audit``).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cilia.agent.client import AgentAPIError, AgentUnavailable
from cilia.cli.commands.node import (
    RunDirOpt,
    StateDirOpt,
    agent_client,
    console,
    err_console,
    fail,
    node_config,
)
from cilia.observe.audit import AuditSettings

MODES = ("on", "off", "status")


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit_cmd(
        mode: Annotated[str, typer.Argument(help="on | off | status")],
        namespace: Annotated[
            list[str] | None, typer.Option("--namespace", "-n", help="Audit these namespaces' policies only")
        ] = None,
        output: Annotated[str, typer.Option("-o", "--output", help="text | json")] = "text",
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Turn policy audit mode on or off: drops are let through and reported as AUDIT."""
        if mode not in MODES:
            raise fail(f"unknown mode {mode!r} (on, off, status)", 2)
        cfg = node_config(state_dir, run_dir)
        settings = AuditSettings.load(cfg.state_dir)
        if mode != "status":
            on = mode == "on"
            if namespace:
                ns = set(settings.namespaces)
                ns = ns | set(namespace) if on else ns - set(namespace)
                settings = AuditSettings(settings.node, frozenset(ns))
            else:
                settings = AuditSettings(on, settings.namespaces)
            settings.save(cfg.state_dir)
        applied = _apply_live(cfg, settings) if mode != "status" else _read_live(cfg)
        if applied is not None:
            settings = AuditSettings(bool(applied["node"]), frozenset(applied["namespaces"]))
        if output == "json":
            print(
                json.dumps(
                    {
                        "node": settings.node,
                        "namespaces": sorted(settings.namespaces),
                        "applied_by_agent": applied is not None,
                    },
                    sort_keys=True,
                )
            )
            return
        console.print(
            f"policy audit mode: node {'on' if settings.node else 'off'}"
            + (f"; namespaces: {', '.join(sorted(settings.namespaces))}" if settings.namespaces else "")
        )
        if applied is None and mode != "status":
            err_console.print("note: no agent is running; saved, the next `cilia up` applies it")


def _read_live(cfg: object) -> dict[str, object] | None:
    """The running agent's settings in force, None if no agent runs."""
    client = agent_client(cfg)  # type: ignore[arg-type]
    if not client.is_up():
        return None
    try:
        return client.audit()
    except AgentAPIError:  # an agent without audit mode: the saved settings are all there is
        return None


def _apply_live(cfg: object, settings: AuditSettings) -> dict[str, object] | None:
    """Tell a running agent; the settings it has in force, None if no agent runs."""
    client = agent_client(cfg)  # type: ignore[arg-type]
    if not client.is_up():
        return None
    try:
        return client.set_audit(settings.node, sorted(settings.namespaces))
    except (AgentUnavailable, AgentAPIError) as e:
        raise fail(f"saved, but the agent did not apply it: {e}") from e
