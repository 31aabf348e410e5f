"""``cilia audit on|off|status``: policy audit mode for the node (or for namespaces with ``-n``).

In audit mode drops are let through and reported with verdict AUDIT (``cilia observe --verdict
AUDIT``). Per policy, the annotation ``cilia.io/audit: "true"`` does the same for the drops only that
policy would cause (see :mod:`cilia.observe.audit`); so does the annotation on a Namespace for all
its policies. The setting is kept in ``audit.json`` in the state directory (a starting agent reads
it) and a running agent applies it at once (``POST /v1/audit``).

On a cluster set up here (``cilia up --nodes N``) the command applies to, and reports, every node's
agent; ``--node NODE`` picks nodes for the node switch, which is per node as in Cilium (its
``PolicyAuditMode`` is an agent option). ``-n NS`` always applies to every node: which namespaces
are audited is a cluster-wide fact, as the Namespace annotation (kept in the shared store) is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from cilia.agent.client import AgentAPIError, AgentUnavailable
from cilia.agent.cluster import member_configs
from cilia.agent.config import AgentConfig
from cilia.cli.common import (
    OutputStrOpt,
    RunDirOpt,
    StateDirOpt,
    agent_client,
    console,
    err_console,
    fail,
    node_config,
)
from cilia.cli.nameopts import namespaces_option
from cilia.observe.audit import AuditSettings

MODES = ("on", "off", "status")


class AuditApplyError(RuntimeError):
    """Saved in the node's state directory, but its running agent did not apply it."""


@dataclass(frozen=True)
class NodeAudit:
    """One node's audit settings after the command, and whether its agent has them in force."""

    settings: AuditSettings
    applied_by_agent: bool

    def to_json(self) -> dict[str, Any]:
        return {"node": self.settings.node, "namespaces": sorted(self.settings.namespaces),
                "applied_by_agent": self.applied_by_agent} | ({"host": True} if self.settings.host else {})

    def describe(self) -> str:
        s = self.settings
        return f"policy audit mode: node {'on' if s.node else 'off'}" + (
            f"; namespaces: {', '.join(sorted(s.namespaces))}" if s.namespaces else ""
        ) + ("; host endpoint on" if s.host else "")


def audit_node(cfg: AgentConfig, mode: str, namespaces: list[str], host: bool = False) -> NodeAudit:
    """``cilia audit MODE [-n NS]`` on one node: saved in its state directory and told to its agent
    (raises :class:`AuditApplyError` when the agent runs but does not apply it)."""
    settings = AuditSettings.load(cfg.state_dir)
    if mode != "status":
        on = mode == "on"
        if host:  # the host endpoint alone (Cilium: PolicyAuditMode on the host endpoint)
            settings = AuditSettings(settings.node, settings.namespaces, on)
        elif namespaces:
            ns = set(settings.namespaces)
            ns = ns | set(namespaces) if on else ns - set(namespaces)
            settings = AuditSettings(settings.node, frozenset(ns), settings.host)
        else:
            settings = AuditSettings(on, settings.namespaces, settings.host)
        settings.save(cfg.state_dir)
    applied = _apply_live(cfg, settings) if mode != "status" else _read_live(cfg)
    if applied is not None:
        settings = AuditSettings(bool(applied["node"]), frozenset(applied["namespaces"]),
                                 bool(applied.get("host", False)))
    return NodeAudit(settings, applied is not None)


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit_cmd(
        mode: Annotated[str, typer.Argument(help="on | off | status")],
        namespace: Annotated[
            list[str] | None,
            typer.Option(
                "--namespace", "-n", help="Audit these namespaces' policies only", callback=namespaces_option
            ),
        ] = None,
        node: Annotated[
            list[str] | None,
            typer.Option("--node", help="On a cluster: only this node's switch (default: every node)"),
        ] = None,
        host: Annotated[bool, typer.Option(
            "--host", help="The host endpoint alone (host firewall): its drops only reported.")] = False,
        output: OutputStrOpt = "text",
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
    ) -> None:
        """Turn policy audit mode on or off: drops are let through and reported as AUDIT.

        On a cluster set up here (cilia up --nodes N): every node, or the nodes given with --node."""
        if mode not in MODES:
            raise fail(f"unknown mode {mode!r} (on, off, status)", 2)
        cfg = node_config(state_dir, run_dir)
        members = member_configs(cfg)
        if not members:
            if node:
                raise fail("--node needs a cluster set up here (cilia up --nodes N)", 2)
            try:
                result = audit_node(cfg, mode, namespace or [], host)
            except AuditApplyError as e:
                raise fail(str(e)) from e
            if output == "json":
                print(json.dumps(result.to_json(), sort_keys=True))
                return
            console.print(result.describe())
            if not result.applied_by_agent and mode != "status":
                err_console.print("note: no agent is running; saved, the next `cilia up` applies it")
            return
        names = [m.node_name for m in members]
        unknown = sorted(set(node or ()) - set(names))
        if unknown:
            raise fail(f"no node {', '.join(unknown)} in this cluster ({', '.join(names)})", 2)
        if node and namespace and mode != "status":
            raise fail("namespace audit (-n) applies to every node: which namespaces are audited is "
                       "cluster-wide, like their cilia.io/audit annotation; leave out --node", 2)
        results: dict[str, NodeAudit] = {}
        errors: list[str] = []
        for m in members:
            if node and m.node_name not in node:
                continue
            try:
                results[m.node_name] = audit_node(m, mode, namespace or [], host)
            except AuditApplyError as e:
                errors.append(f"{m.node_name}: {e}")
        if output == "json":
            print(json.dumps({"nodes": {n: r.to_json() for n, r in results.items()}}, sort_keys=True))
        else:
            for name, r in results.items():
                console.print(f"{name}: {r.describe()}")
            idle = [n for n, r in results.items() if not r.applied_by_agent]
            if idle and mode != "status":
                err_console.print(f"note: no agent is running on {', '.join(idle)}; saved, the next "
                                  "`cilia up` applies it")  # fmt: skip
        if errors:
            raise fail("; ".join(errors))


def _read_live(cfg: AgentConfig) -> dict[str, Any] | None:
    """The running agent's settings in force, None if no agent runs."""
    client = agent_client(cfg)
    if not client.is_up():
        return None
    try:
        return client.audit()
    except AgentAPIError:  # an agent without audit mode: the saved settings are all there is
        return None


def _apply_live(cfg: AgentConfig, settings: AuditSettings) -> dict[str, Any] | None:
    """Tell a running agent; the settings it has in force, None if no agent runs."""
    client = agent_client(cfg)
    if not client.is_up():
        return None
    try:
        return client.set_audit(settings.node, sorted(settings.namespaces), settings.host)
    except (AgentUnavailable, AgentAPIError) as e:
        raise AuditApplyError(f"saved, but the agent did not apply it: {e}") from e
