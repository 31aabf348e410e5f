"""``cilia agent`` / ``up`` / ``down`` / ``status``: the local node's lifecycle.

The node is put together and taken apart in :mod:`cilia.lab.node_setup`; the options and helpers
the other node verbs share are in :mod:`cilia.cli.common`.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import typer

from cilia.agent import daemon, process
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
from cilia.cli.progress import PodProgress, wanted
from cilia.lab.node_setup import open_node, teardown

# The node's settings that both `agent` and `up` take: one list, added to each command by
# `with_node_flags`; the command receives them as one NodeFlags.
NODE_FLAGS: dict[str, Any] = {
    "node_index": Annotated[int | None, typer.Option(help="Pods get 198.18.<16·i>.0/20 (0).")],
    "enforcement_mode": Annotated[str | None, typer.Option(help="default | always | never")],
    "allow_localhost": Annotated[str | None, typer.Option(help="always | policy")],
    "datapath": Annotated[str | None, typer.Option(help="bpf (kernel) | sim (no kernel, no netns)")],
    "metrics_addr": Annotated[str | None, typer.Option(
        "--metrics-addr", help="Serve Prometheus metrics on HOST:PORT, e.g. 127.0.0.1:9962.")],
    "tofqdns_min_ttl": Annotated[int | None, typer.Option(
        "--tofqdns-min-ttl", min=0,
        help="Least seconds an address learned from a DNS answer stays allowed (0: the answer's TTL).")],
    "host_firewall": Annotated[bool | None, typer.Option(
        "--host-firewall/--no-host-firewall",
        help="Enforce host policies (CCNP nodeSelector) on the node's own traffic on its lab devices.")],
}


@dataclass(frozen=True)
class NodeFlags:
    """The node settings given on the command line (None: not given)."""

    node_index: int | None = None
    enforcement_mode: str | None = None
    allow_localhost: str | None = None
    datapath: str | None = None
    metrics_addr: str | None = None
    tofqdns_min_ttl: int | None = None
    host_firewall: bool | None = None

    def overrides(self, *leave_out: str) -> dict[str, Any]:
        """The flags as :func:`cilia.cli.common.node_config` overrides, without ``leave_out``."""
        return {k: v for k, v in asdict(self).items() if k not in leave_out}


def with_node_flags(fn: Callable[..., None]) -> Callable[..., None]:
    """The command ``fn`` with the options of :data:`NODE_FLAGS` in place of its ``flags: NodeFlags``
    parameter (typer reads the signature); ``fn`` is called with them as one :class:`NodeFlags`."""
    sig = inspect.signature(fn, eval_str=True)
    params: list[inspect.Parameter] = []
    for p in sig.parameters.values():
        if p.name == "flags":
            params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a)
                       for n, a in NODE_FLAGS.items()]
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(fn)
    def command(**kwargs: Any) -> None:
        flags = NodeFlags(**{n: kwargs.pop(n) for n in NODE_FLAGS})
        fn(flags=flags, **kwargs)

    command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return command


def _observe(agent: Any, cfg: AgentConfig) -> Any:
    """The agent's flow sink: the observe pipeline (flows naming their rules, ring + durable flow
    log, metrics), and the metrics endpoint when ``--metrics-addr`` is set."""
    from cilia.observe.agentview import pipeline_for, serve_metrics
    from cilia.observe.metrics import NodeMetrics

    metrics = NodeMetrics()
    if cfg.metrics_addr:
        serve_metrics(agent, metrics, cfg.metrics_addr)
    return pipeline_for(agent, metrics)


def register(app: typer.Typer) -> None:
    @app.command("agent")
    @with_node_flags
    def agent_cmd(
        state_dir: StateDirOpt = None, run_dir: RunDirOpt = None, flags: NodeFlags = NodeFlags()
    ) -> None:
        """Run the node agent in the foreground (``cilia up`` runs it in the background)."""
        cfg = node_config(state_dir, run_dir, **flags.overrides())
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save()
        raise typer.Exit(daemon.run(open_node(cfg), flow_sink=lambda agent: _observe(agent, cfg)))

    @app.command("up")
    @with_node_flags
    def up_cmd(
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        flags: NodeFlags = NodeFlags(),
        output: OutputStrOpt = "text",
        nodes: Annotated[int | None, typer.Option(
            "--nodes", help="Several nodes: N node namespaces, one agent each, on etcd.")] = None,
        store: Annotated[str | None, typer.Option(
            "--store", help="sqlite (one node) | etcd (implied by --nodes)")] = None,
        etcd_endpoints: Annotated[str | None, typer.Option(
            "--etcd-endpoints", help="host:port,... of an etcd to use (default: start a local one)")] = None,
    ) -> None:
        """Start the local node: the agent in the background; waits until it is ready."""
        from cilia.agent import process

        # the cluster's base settings: each node's index and metrics address are its own
        base = node_config(state_dir, run_dir, **flags.overrides("node_index", "metrics_addr"))
        if nodes is None and member_configs(base):  # the cluster set up here, as it was
            nodes = base.cluster_size
        if nodes is not None or store == "etcd":
            from cilia.cli.commands.cluster import cluster_up

            eps = [e.strip() for e in (etcd_endpoints or "").split(",") if e.strip()]
            started = cluster_up(base, nodes or 1, eps)
            if output == "json":
                print(json.dumps(started, sort_keys=True))
                return
            for n in started["nodes"]:
                console.print(f"node {n['node']} up: agent pid {n['pid']} in {n['netns']}")
            console.print(f"  etcd:  {','.join(started['etcd'])}")
            console.print(f"  state: {base.state_dir}/nodes")
            return

        cfg = node_config(state_dir, run_dir, **flags.overrides())
        already = process.read_pid(cfg)
        bar = PodProgress() if wanted() else None  # on a terminal: the agent's per-pod reports
        try:
            pid = process.start_background(cfg, progress=bar)
        except process.AgentStartError as e:
            raise fail(str(e)) from e
        finally:
            if bar is not None:
                bar.close()
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
        output: OutputStrOpt = "text",
    ) -> None:
        """Stop the agent and remove every pod, link, pin, socket and process cilia created."""
        cfg = node_config(state_dir, run_dir)
        if member_configs(cfg):  # several nodes (cilia up --nodes N)
            from cilia.cli.commands.cluster import cluster_down

            creport = cluster_down(cfg, purge=purge)
            if output == "json":
                print(json.dumps(creport, sort_keys=True))
            else:
                for line in creport["stopped"]:
                    console.print(f"stopped {line}")
                for line in creport["removed"]:
                    console.print(f"  removed {line}")
                for line in creport["errors"]:
                    err_console.print(f"[yellow]warning:[/yellow] {line}")
                for line in creport["leftovers"]:
                    err_console.print(f"[red]left behind:[/red] {line}")
                if not creport["leftovers"] and not creport["errors"]:
                    console.print("all nodes are down; nothing left behind")
            if creport["leftovers"] or creport["errors"]:
                raise typer.Exit(1)
            return
        pid = process.stop(cfg)
        report = teardown(cfg, purge=purge)
        if output == "json":
            print(json.dumps({"stopped_pid": pid, **report.to_json()}, sort_keys=True))
        else:
            if pid:
                console.print(f"stopped agent pid {pid}")
            for line in report.removed:
                console.print(f"  removed {line}")
            for line in report.errors:
                err_console.print(f"[yellow]warning:[/yellow] {line}")
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
        output: OutputStrOpt = "text",
    ) -> None:
        """Show whether the node agent runs, and what it manages."""
        cfg = node_config(state_dir, run_dir)
        if member_configs(cfg):  # several nodes: each node's agent
            per_node: dict[str, Any] = {}
            for m in member_configs(cfg):
                try:
                    per_node[m.node_name] = agent_client(m).status()
                except (AgentUnavailable, AgentAPIError) as e:
                    per_node[m.node_name] = {"ready": False, "error": str(e)}
            if output == "json":
                print(json.dumps({"nodes": per_node}, sort_keys=True))
            else:
                for name, st in per_node.items():
                    state = f"pid {st['pid']}, {st['endpoints']} endpoints" if st.get("ready") else st.get(
                        "error", "not ready")
                    console.print(f"{name:>8}: {state}")
            if not all(st.get("ready") for st in per_node.values()):
                raise typer.Exit(1)
            return
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
