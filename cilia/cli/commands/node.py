"""``cilia agent`` / ``up`` / ``down`` / ``status``: the local node's lifecycle.

Also where a node is composed (the agent over the lab's pods and the eBPF datapath, or over
address-only pods and the simulated one) and taken apart (``down``), and the small helpers the
other node verbs share (state/run dir options, the agent client, waiting for the agent).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from pyroute2 import IPRoute
from rich.console import Console

from cilia.agent import daemon, process
from cilia.agent.client import AgentAPIError, AgentClient, AgentTimeout, AgentUnavailable
from cilia.agent.cluster import ClusterMember, member_configs, open_agent_store
from cilia.agent.config import AgentConfig, ConfigError
from cilia.agent.datapaths import SimNodeDatapath, open_bpf_datapath
from cilia.agent.desired import PodKey
from cilia.agent.endpoints import EndpointTable
from cilia.agent.interfaces import BeforeAddress, PodRuntime, RuntimePod
from cilia.agent.node import Node
from cilia.agent.runtime import AddressOnlyRuntime
from cilia.agent.services import TABLE_NAME as SERVICES_TABLE
from cilia.lab import dns as lab_dns
from cilia.lab import netns
from cilia.lab.errors import PodNotFoundError
from cilia.lab.ipam import Ipam, gateway
from cilia.lab.node import Lab
from cilia.lab.node import Pod as LabPod
from cilia.lab.world import World
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
    """The node's store (the SQLite file in the state directory, or the cluster's etcd)."""
    try:
        return open_agent_store(cfg)
    except StoreError as e:
        raise fail(str(e), 2) from e


def agent_client(cfg: AgentConfig) -> AgentClient:
    return AgentClient(cfg.socket_path)


def wait_for_agent(cfg: AgentConfig, revision: int, timeout: float = 600.0, quiet: bool = False) -> bool:
    """Wait until the running agent has reconciled ``revision`` and its own follow-up work (pods of
    new Deployments, identities); a spinner shows progress on a terminal. False (with a note) if
    no agent runs or it did not catch up within ``timeout``."""
    members = member_configs(cfg)
    if members:  # several nodes: each agent reconciles the shared store
        return all([wait_for_agent(m, revision, timeout, quiet) for m in members])
    client = agent_client(cfg)
    deadline = time.monotonic() + timeout
    spinner = err_console.status("waiting for the agent") if not quiet and err_console.is_terminal else None
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
                    err_console.print(f"[yellow]note:[/yellow] stored, but {e}")
                return False
            if reached >= revision and status.get("caught_up"):
                if status.get("last_error") and not quiet:
                    err_console.print(f"[yellow]warning:[/yellow] the agent reported: {status['last_error']} "
                                      "(it retries; see `cilia get events` and its log)")
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


# --------------------------------------------------------------------------- composition
# The agent depends only on the interfaces of a pod runtime and a datapath; this is where a node is
# put together from the lab's network-namespace pods (or address-only pods) and the eBPF (or
# simulated) datapath, and where `cilia down` takes it apart again.


def make_lab(cfg: AgentConfig, store: Store) -> Lab:
    """The lab as the agent, ``exec`` and ``logs`` all see it (same run and log directories)."""
    return Lab(store, node_index=cfg.node_index, run_dir=cfg.lab_run_dir, log_dir=cfg.logs_dir)


def _runtime_pod(p: LabPod) -> RuntimePod:
    return RuntimePod(PodKey(p.namespace, p.name), p.ip, p.host_ifindex, p.host_ifname, p.netns)


class LabRuntime:
    """:class:`cilia.agent.interfaces.PodRuntime` over :class:`cilia.lab.node.Lab`."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self._dns_error = ""

    def existing(self) -> dict[PodKey, RuntimePod]:
        pods = {PodKey(p.namespace, p.name): _runtime_pod(p) for p in self.lab.list_pods()}
        if not self.lab.workloads.running():  # the workload daemon died (e.g. the machine rebooted)
            if pods:
                self.lab.restore_workloads()
            World(self.lab).restore_workloads()  # world hosts' servers run in the same daemon
        self._keep_dns()
        return pods

    def _keep_dns(self) -> None:
        """The node's DNS server runs from the node's start on (every pod's resolv.conf names it);
        at each runtime check it is started again if it died. A failure is the agent's warning,
        not a reason to stop managing pods."""
        try:
            lab_dns.keep_running(World(self.lab))
            self._dns_error = ""
        except Exception as e:
            if str(e) != self._dns_error:  # once per distinct failure, not at every check
                logging.getLogger(__name__).warning("the lab's DNS server is not running: %s", e)
            self._dns_error = str(e)

    def create(self, manifest: dict[str, Any], before_address: BeforeAddress) -> RuntimePod:
        return _runtime_pod(self.lab.create_pod(manifest, lambda p: before_address(_runtime_pod(p))))

    def delete(self, pod: PodKey) -> None:
        with contextlib.suppress(PodNotFoundError):  # already gone: deleting is idempotent
            self.lab.delete_pod(pod.namespace, pod.name)

    def teardown(self) -> None:
        self.lab.teardown()


def open_node(cfg: AgentConfig) -> Node:
    """The node's parts: store, pod runtime and datapath (``bpf``: lab pods + eBPF; ``sim``:
    address-only pods + the simulated datapath)."""
    store = open_agent_store(cfg)
    member = ClusterMember(cfg, store) if cfg.store == "etcd" and cfg.node_name else None
    gw = gateway(cfg.node_index)
    if cfg.datapath == "sim":
        ipam = Ipam(store, cfg.node_index)
        runtime: PodRuntime = AddressOnlyRuntime(cfg.sim_pods_path, ipam.allocate, ipam.release_owner, gw)
        return Node(cfg, store, runtime, SimNodeDatapath(), str(gw), cluster=member)
    datapath = open_bpf_datapath(cfg.pin_root, cfg.datapath_state_dir)
    return Node(cfg, store, LabRuntime(make_lab(cfg, store)), datapath, str(gw), cluster=member)


@dataclass
class TeardownReport:
    removed: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"removed": self.removed, "leftovers": self.leftovers, "errors": self.errors}


def _links() -> set[str]:
    with IPRoute() as ipr:
        return {str(link.get("ifname")) for link in ipr.link("dump")}


def _remove_remaining(names: set[str], links: set[str], report: TeardownReport) -> None:
    """Second pass, by the exact names this node recorded: links and namespaces the lab's teardown
    could not remove (a busy device, a namespace still held open) are retried once, after a pause."""
    left_links = links & _links()
    left_netns = names & set(netns.names())
    if not left_links and not left_netns:
        return
    time.sleep(0.5)
    with IPRoute() as ipr:
        for name in sorted(left_links):
            for idx in ipr.link_lookup(ifname=name):
                try:
                    ipr.link("del", index=idx)
                except Exception as e:
                    report.errors.append(f"delete link {name}: {e}")
    for name in sorted(left_netns):
        try:
            netns.remove(name)
        except Exception as e:
            report.errors.append(f"remove network namespace {name}: {e}")


def teardown(cfg: AgentConfig, purge: bool = False) -> TeardownReport:
    """Remove every pod, link, pin, socket and process this node created (the agent must be
    stopped first), then check that none of them is left."""
    cfg = cfg.with_saved()
    report = TeardownReport()
    created_netns: set[str] = set()
    created_links: set[str] = set()
    for ep in EndpointTable(cfg.endpoints_path if cfg.endpoints_path.exists() else None):
        if ep.netns:
            created_netns.add(ep.netns)
        if ep.host_ifname:
            created_links.add(ep.host_ifname)
    store = (open_agent_store(cfg) if cfg.store == "etcd" else
             open_store(cfg.state_dir) if cfg.store_path.exists() else None)
    workload_pid = None
    try:
        if store is not None and cfg.datapath != "sim" and os.geteuid() == 0:
            lab = make_lab(cfg, store)
            with contextlib.suppress(Exception):
                for p in lab._records():  # the lab's own crash-safe records of what it created
                    created_netns.add(p.netns)
                    created_links.add(p.host_ifname)
            workload_pid = lab.workloads.pid()
            world = World(lab)
            world_netns, world_links = world.created()
            try:
                report.removed += [f"world host namespace {n}" for n in world.teardown()]
            except Exception as e:
                report.errors.append(f"world teardown: {e}")
            try:
                lab.teardown()
            except Exception as e:
                report.errors.append(f"lab teardown: {e}")
            _remove_remaining(created_netns, created_links, report)
            report.removed += [f"pod namespace {n}" for n in sorted(created_netns - set(netns.names()))]
            created_netns |= world_netns  # checked for leftovers below
            created_links |= world_links
        if cfg.datapath == "bpf" and Path(cfg.pin_root).exists():
            try:
                from cilia.datapath.bpf.sync import Datapath  # loads libbpf: only when needed

                Datapath(pin_root=cfg.pin_root, state_dir=cfg.datapath_state_dir).teardown()
                report.removed.append(f"bpf pins {cfg.pin_root}")
            except Exception as e:
                report.errors.append(f"datapath teardown: {e}")
    finally:
        if store is not None:
            store.close()
    try:
        from cilia.agent.l7proxy import teardown as proxy_teardown

        report.removed += proxy_teardown(cfg.run_dir, cfg.node_index)  # a crashed agent's HAProxy, files
    except Exception as e:
        report.errors.append(f"http proxy teardown: {e}")
    services_table = cfg.endpoints_path.with_name(SERVICES_TABLE)  # the agent's load-balancing table
    for path in (cfg.socket_path, cfg.pid_path, cfg.endpoints_path, cfg.sim_pods_path, services_table):
        if path.exists() or path.is_symlink():
            path.unlink()
            report.removed.append(str(path))
    if purge:
        for path in cfg.state_dir.glob("store.db*"):
            path.unlink()
        for path in (cfg.events_path, cfg.settings_path):  # the agent log stays, for a post-mortem
            path.unlink(missing_ok=True)
        shutil.rmtree(cfg.logs_dir, ignore_errors=True)
        shutil.rmtree(cfg.datapath_state_dir, ignore_errors=True)
        report.removed.append(f"state in {cfg.state_dir}")
    for d in (cfg.lab_run_dir, cfg.run_dir):
        with contextlib.suppress(OSError):
            d.rmdir()
    report.leftovers = leftovers(cfg, created_netns, created_links, workload_pid)
    return report


def leftovers(
    cfg: AgentConfig, netns_names: set[str], links: set[str], workload_pid: int | None
) -> list[str]:
    """What of this node still exists: namespaces and links it created, pins, socket, processes."""
    out = []
    if os.geteuid() == 0:
        out += [f"network namespace {n}" for n in sorted(netns_names & set(netns.names()))]
        out += [f"link {n}" for n in sorted(links & _links())]
    pins = Path(cfg.pin_root)
    if pins.exists():
        out += [f"pin {p}" for p in sorted(pins.rglob("*"))] or [f"pin directory {pins}"]
    if cfg.socket_path.exists():
        out.append(f"socket {cfg.socket_path}")
    pid = process.read_pid(cfg)
    if pid is not None:
        out.append(f"agent process {pid}")
    if workload_pid is not None and Path(f"/proc/{workload_pid}").exists():
        with contextlib.suppress(OSError):
            if b"cilia.lab.workloadd" in Path(f"/proc/{workload_pid}/cmdline").read_bytes():
                out.append(f"workload daemon process {workload_pid}")
    return out


MetricsAddrOpt = Annotated[
    str | None,
    typer.Option("--metrics-addr", help="Serve Prometheus metrics on HOST:PORT, e.g. 127.0.0.1:9962."),
]
NodeIndexOpt = Annotated[int | None, typer.Option(help="Pods get 198.18.<16·i>.0/20 (0).")]
EnforcementOpt = Annotated[str | None, typer.Option(help="default | always | never")]
LocalhostOpt = Annotated[str | None, typer.Option(help="always | policy")]
DatapathOpt = Annotated[str | None, typer.Option(help="bpf (kernel) | sim (no kernel, no netns)")]
MinTtlOpt = Annotated[int | None, typer.Option(
    "--tofqdns-min-ttl", min=0,
    help="Least seconds an address learned from a DNS answer stays allowed (0: the answer's TTL).")]


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
    def agent_cmd(
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        node_index: NodeIndexOpt = None,
        enforcement_mode: EnforcementOpt = None,
        allow_localhost: LocalhostOpt = None,
        datapath: DatapathOpt = None,
        metrics_addr: MetricsAddrOpt = None,
        tofqdns_min_ttl: MinTtlOpt = None,
    ) -> None:
        """Run the node agent in the foreground (``cilia up`` runs it in the background)."""
        cfg = node_config(
            state_dir,
            run_dir,
            node_index=node_index,
            enforcement_mode=enforcement_mode,
            allow_localhost=allow_localhost,
            datapath=datapath,
            metrics_addr=metrics_addr,
            tofqdns_min_ttl=tofqdns_min_ttl,
        )
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save()
        raise typer.Exit(daemon.run(open_node(cfg), flow_sink=lambda agent: _observe(agent, cfg)))

    @app.command("up")
    def up_cmd(
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        node_index: NodeIndexOpt = None,
        enforcement_mode: EnforcementOpt = None,
        allow_localhost: LocalhostOpt = None,
        datapath: DatapathOpt = None,
        metrics_addr: MetricsAddrOpt = None,
        tofqdns_min_ttl: MinTtlOpt = None,
        output: Annotated[str, typer.Option("-o", "--output", help="text | json")] = "text",
        nodes: Annotated[int | None, typer.Option(
            "--nodes", help="Several nodes: N node namespaces, one agent each, on etcd.")] = None,
        store: Annotated[str | None, typer.Option(
            "--store", help="sqlite (one node) | etcd (implied by --nodes)")] = None,
        etcd_endpoints: Annotated[str | None, typer.Option(
            "--etcd-endpoints", help="host:port,... of an etcd to use (default: start a local one)")] = None,
    ) -> None:
        """Start the local node: the agent in the background; waits until it is ready."""
        from cilia.agent import process

        base = node_config(state_dir, run_dir, enforcement_mode=enforcement_mode,
                           allow_localhost=allow_localhost, datapath=datapath,
                           tofqdns_min_ttl=tofqdns_min_ttl)
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

        cfg = node_config(
            state_dir,
            run_dir,
            node_index=node_index,
            enforcement_mode=enforcement_mode,
            allow_localhost=allow_localhost,
            datapath=datapath,
            metrics_addr=metrics_addr,
            tofqdns_min_ttl=tofqdns_min_ttl,
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
        output: Annotated[str, typer.Option("-o", "--output", help="text | json")] = "text",
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
