"""Several nodes on this machine: ``cilia up --nodes N`` / ``cilia down`` for them, ``cilia node list``.

``up`` creates the node namespaces and the underlay (:mod:`cilia.lab.nodes_lab`), starts the
lab's etcd (:mod:`cilia.lab.etcd_keeper`) unless endpoints are given, records the cluster's
settings in the base state directory (so ``apply``, ``get``, ``label`` … use the shared store)
and starts one agent per node inside its namespace (:func:`cilia.agent.cluster.member_config`).
``down`` stops every agent and tears each node down from inside its namespace, then stops etcd
and removes the namespaces, the bridge and the pins.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from cilia.agent import process
from cilia.agent.client import AgentAPIError, AgentClient, AgentUnavailable
from cilia.agent.cluster import member_configs
from cilia.agent.config import AgentConfig
from cilia.agent.leader import holder_of
from cilia.agent.views import Table
from cilia.cli import progress
from cilia.cli.common import RunDirOpt, StateDirOpt, err_console, fail, node_config, open_node_store
from cilia.datapath.bpf import loader
from cilia.lab import etcd_keeper, nodes_lab
from cilia.lab.errors import LabError
from cilia.store.nodes import ClusterView


def etcd_dir(cfg: AgentConfig) -> Path:
    return cfg.state_dir / "etcd"


def _pin_base(cfg: AgentConfig) -> Path:
    pins = cfg.pin_root.rstrip("/")
    return Path(pins[: -len("/v1")] if pins.endswith("/v1") else pins)


def cluster_up(cfg: AgentConfig, nodes: int, endpoints: list[str]) -> dict[str, Any]:
    """Bring up ``nodes`` nodes on one etcd (see the module docstring); what was started.
    Idempotent: on a cluster that is up, it starts only what is not running (an agent that died)."""
    if cfg.datapath != "bpf":
        raise fail("several nodes need the bpf datapath (agents run in node namespaces)")
    if member_configs(cfg) and cfg.cluster_size != nodes:
        raise fail(f"a cluster of {cfg.cluster_size} nodes is set up here (`cilia down` first)")
    loopback = [e for e in endpoints if e.rsplit(":", 1)[0] in ("localhost", "[::1]") or e.startswith("127.")]
    if loopback:
        raise fail(f"etcd endpoints {', '.join(loopback)}: agents run in node namespaces, which have "
                   f"their own loopback; let etcd listen on 0.0.0.0 and give "
                   f"{nodes_lab.BRIDGE_ADDRESS}:PORT (the root namespace on the underlay), or omit "
                   "--etcd-endpoints to start the lab's etcd")
    existing = nodes_lab.existing_nodes()
    wanted = [nodes_lab.node_netns(i) for i in range(nodes)]
    if existing and existing != wanted:
        raise fail(f"node namespaces {', '.join(existing)} exist (`cilia down` first)")
    try:
        if not existing:
            nodes_lab.create_nodes(nodes)
        if not endpoints and member_configs(cfg):
            # Again on a cluster set up here: the etcd it was given, unless it was the lab's own.
            given = [e for e in cfg.etcd_endpoint_list if not e.startswith(nodes_lab.BRIDGE_ADDRESS + ":")]
            endpoints = given
        if not endpoints:
            endpoints = etcd_keeper.start(etcd_dir(cfg), nodes_lab.BRIDGE_ADDRESS)
    except LabError as e:
        if not existing:
            with contextlib.suppress(Exception):  # broad: the set-up's LabError is the one to report
                nodes_lab.remove_nodes()
        raise fail(str(e)) from e
    base = replace(cfg, store="etcd", etcd_endpoints=",".join(endpoints), cluster_size=nodes,
                   node_name="", netns="")
    base.save()
    started = []
    try:
        for m in member_configs(base):
            m.save()
            # on a terminal: a bar of the pods each agent reports created
            bar = progress.PodProgress(node=m.node_name) if progress.wanted() else None
            try:
                pid = process.start_background(m, timeout=60, progress=bar)
            finally:
                if bar is not None:
                    bar.close()
            started.append({"node": m.node_name, "pid": pid, "netns": m.netns, "state_dir": str(m.state_dir)})
    except process.AgentStartError as e:
        err_console.print(f"[red]error:[/red] {e}")
        cluster_down(base)
        raise typer.Exit(1) from e
    return {"nodes": started, "etcd": endpoints}


def _node_down(m: AgentConfig, purge: bool) -> dict[str, Any]:
    """``cilia down`` of one node, run inside its namespace (its links and filters live there)."""
    argv = [sys.executable, "-m", "cilia.cli.main", "down", "--state-dir", str(m.state_dir),
            "--run-dir", str(m.run_dir), "-o", "json", *(["--purge"] if purge else [])]
    if Path(f"/run/netns/{m.netns}").exists():
        argv = ["nsenter", f"--net=/run/netns/{m.netns}", "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=180,
                          env={**os.environ, "CILIA_PIN_ROOT": m.pin_root})
    try:
        return dict(json.loads(proc.stdout))
    except ValueError:
        return {"errors": [f"down {m.node_name}: exit {proc.returncode}: {proc.stderr[-500:]}"]}


def cluster_down(cfg: AgentConfig, purge: bool = False) -> dict[str, Any]:
    """Stop every node's agent, tear each node down, stop etcd, remove namespaces, bridge, pins."""
    report: dict[str, Any] = {"stopped": [], "removed": [], "errors": [], "leftovers": []}
    members = member_configs(cfg)
    for m in members:  # stop all first: no agent recreates pods while others go
        pid = process.stop(m)
        if pid:
            report["stopped"].append(f"agent {m.node_name} pid {pid}")
    with ThreadPoolExecutor(max_workers=max(1, len(members))) as pool:  # nodes are independent
        results = list(pool.map(lambda m: _node_down(m, purge), members))
    for r in results:
        report["removed"] += r.get("removed", [])
        report["errors"] += r.get("errors", [])
        report["leftovers"] += r.get("leftovers", [])
    stopped = etcd_keeper.stop(etcd_dir(cfg))
    if stopped:
        report["stopped"].append(f"etcd keeper pid {stopped[0]} and members {stopped[1:]}")
    try:
        report["removed"] += nodes_lab.remove_nodes()
    except LabError as e:
        report["errors"].append(str(e))
    for m in members:
        # A node whose own `down` failed (a timeout, a crash) may have left its pins; its namespace
        # is gone now, and with it every link its programs were attached to.
        left = Path(m.pin_root).exists() and any(Path(m.pin_root).iterdir())
        if left and not nodes_lab.node_exists(m.node_index):
            try:
                if loader.unpin_all(m.pin_root):
                    report["removed"].append(f"pins of {m.node_name} (its own down did not remove them)")
            except OSError as e:
                report["errors"].append(f"unpin {m.pin_root}: {e}")
    pins = _pin_base(cfg)
    for m in members:
        node_pins = Path(m.pin_root).parent
        with contextlib.suppress(OSError):
            Path(m.pin_root).rmdir()
            node_pins.rmdir()
    with contextlib.suppress(OSError):
        pins.rmdir()  # only if empty: a single node may still use its own pins there
    for m in members:
        if Path(m.pin_root).exists():
            report["leftovers"].append(f"pin directory {m.pin_root}")
    report["leftovers"] += nodes_lab.leftovers()
    if etcd_keeper.read(etcd_dir(cfg)) is not None:
        report["leftovers"].append("etcd keeper process")
    if purge:
        shutil.rmtree(cfg.state_dir / "nodes", ignore_errors=True)
        shutil.rmtree(etcd_dir(cfg), ignore_errors=True)
    if report["errors"] or report["leftovers"]:
        # keep the cluster's settings: `cilia down` again retries every node
        report["errors"].append("the cluster's settings are kept: run `cilia down` again to retry")
        return report
    # The base directory goes back to a single node's settings.
    replace(cfg, store="sqlite", etcd_endpoints="", cluster_size=0).save()
    return report


def node_rows(cfg: AgentConfig) -> list[dict[str, Any]]:
    """Registered nodes with their agents' state (the nodes of ``cilia up --nodes``)."""
    store = open_node_store(cfg)
    try:
        registered = ClusterView(store.backend).nodes()
        holder = holder_of(store.backend)
    finally:
        store.close()
    rows = []
    for m in member_configs(cfg):
        info = registered.get(m.node_name)
        status: dict[str, Any] = {}
        with contextlib.suppress(AgentUnavailable, AgentAPIError):
            status = AgentClient(m.socket_path, timeout=5.0).status()
        rows.append({
            "name": m.node_name, "index": m.node_index, "registered": info is not None,
            "address": info.address if info else nodes_lab.underlay_address(m.node_index),
            "podCIDR": info.pod_cidr if info else "", "netns": m.netns,
            "agent": status.get("pid", 0), "ready": bool(status.get("ready")),
            "endpoints": status.get("endpoints", 0), "identities": status.get("identities", 0),
            "controller": holder is not None and holder.node == m.node_name,
        })  # fmt: skip
    return rows


def render_nodes(rows: list[dict[str, Any]], output: str = "table") -> str:
    """``cilia node list``'s output for :func:`node_rows`: kubectl-style plain columns (never cut
    to the terminal's width) or ``{"items": rows}`` as JSON."""
    if output == "json":
        return json.dumps({"items": rows}, sort_keys=True) + "\n"
    headers = ("NAME", "ADDRESS", "POD CIDR", "REGISTERED", "AGENT", "ENDPOINTS", "IDENTITIES",
               "CONTROLLER")
    cells = tuple(
        (r["name"], r["address"], r["podCIDR"] or "<none>", "yes" if r["registered"] else "no",
         f"pid {r['agent']}" if r["ready"] else "down", str(r["endpoints"]), str(r["identities"]),
         "yes" if r["controller"] else "no")
        for r in rows
    )
    return Table(headers, cells).render()


def register(app: typer.Typer) -> None:
    node_app = typer.Typer(help="The nodes of a several-node lab (cilia up --nodes N).", no_args_is_help=True)
    app.add_typer(node_app, name="node")

    @node_app.command("list")
    def list_cmd(
        state_dir: StateDirOpt = None,
        run_dir: RunDirOpt = None,
        output: Annotated[str, typer.Option("-o", "--output", help="table | json")] = "table",
    ) -> None:
        """Show every node: underlay address, pod CIDR, agent, endpoints, and which node runs the
        Deployment controller."""
        if output not in ("table", "json"):
            raise fail(f"unknown output format {output!r} (table, json)", 2)
        cfg = node_config(state_dir, run_dir)
        if not member_configs(cfg):
            raise fail("no several-node lab here (start one with `cilia up --nodes N`)")
        print(render_nodes(node_rows(cfg), output), end="")
