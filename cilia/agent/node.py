"""A node's parts wired together (store, pod runtime, datapath, flow reader), and ``cilia down``'s
teardown with a check that nothing is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cilia.agent.config import AgentConfig
from cilia.agent.datapaths import SimNodeDatapath, open_bpf_datapath
from cilia.agent.endpoints import EndpointTable
from cilia.agent.flows import Flow, flow_from_event
from cilia.agent.interfaces import NodeDatapath, PodRuntime
from cilia.agent.runtime import AddressOnlyRuntime, LabRuntime
from cilia.lab.ipam import gateway
from cilia.lab.node import Lab
from cilia.store import Store, open_store

if TYPE_CHECKING:
    from cilia.agent.daemon import Agent

log = logging.getLogger("cilia.agent")


def make_lab(cfg: AgentConfig, store: Store) -> Lab:
    """The lab as the agent, ``exec`` and ``logs`` all see it (same run and log directories)."""
    return Lab(store, node_index=cfg.node_index, run_dir=cfg.lab_run_dir, log_dir=cfg.logs_dir)


@dataclass
class Node:
    cfg: AgentConfig
    store: Store
    runtime: PodRuntime
    datapath: NodeDatapath
    gateway: str
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start_flows(self, agent: Agent) -> None:
        """Decode the datapath's events into the agent's flow ring, in a background thread."""
        read = getattr(self.datapath, "read_events", None)
        if read is None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    read(lambda ev: agent.flow_ring.add(flow_of(ev, agent)), 200)
                except Exception:  # the reader must not kill the agent; the log says what broke
                    log.exception("reading datapath events")
                    time.sleep(1)

        t = threading.Thread(target=loop, name="cilia-flows", daemon=True)
        t.start()
        self._threads.append(t)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.datapath.close()
        self.store.close()


def flow_of(ev: Any, agent: Agent) -> Flow:
    """One datapath event as a flow record of this agent's endpoints."""
    pods = {e.ip: str(e.pod) for e in agent.reconciler.endpoints}
    return flow_from_event(ev, agent.flow_ring.next_seq(), pods, getattr(agent.datapath, "rules_for", None))


def open_node(cfg: AgentConfig) -> Node:
    store = open_store(cfg.state_dir)
    gw = str(gateway(cfg.node_index))
    if cfg.datapath == "sim":
        return Node(
            cfg, store, AddressOnlyRuntime(store, cfg.sim_pods_path, cfg.node_index), SimNodeDatapath(), gw
        )
    dp = open_bpf_datapath(cfg.pin_root, cfg.datapath_state_dir)
    return Node(cfg, store, LabRuntime(make_lab(cfg, store)), dp, gw)


# --------------------------------------------------------------------------- teardown


@dataclass
class TeardownReport:
    removed: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"removed": self.removed, "leftovers": self.leftovers, "errors": self.errors}


def _links() -> set[str]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {str(link.get("ifname")) for link in ipr.link("dump")}


def _netns_names() -> set[str]:
    from cilia.lab import netns

    return set(netns.names())


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
    store = open_store(cfg.state_dir) if cfg.store_path.exists() else None
    workload_pid = None
    try:
        if store is not None and cfg.datapath != "sim" and os.geteuid() == 0:
            lab = make_lab(cfg, store)
            with contextlib.suppress(Exception):
                for p in lab._records():  # the lab's own crash-safe records of what it created
                    created_netns.add(p.netns)
                    created_links.add(p.host_ifname)
            workload_pid = lab.workloads.pid()
            try:
                lab.teardown()
                report.removed += [f"pod namespace {n}" for n in sorted(created_netns)]
            except Exception as e:
                report.errors.append(f"lab teardown: {e}")
        if cfg.datapath == "bpf" and Path(cfg.pin_root).exists():
            try:
                from cilia.datapath.bpf.sync import Datapath

                Datapath(pin_root=cfg.pin_root, state_dir=cfg.datapath_state_dir).teardown()
                report.removed.append(f"bpf pins {cfg.pin_root}")
            except Exception as e:
                report.errors.append(f"datapath teardown: {e}")
    finally:
        if store is not None:
            store.close()
    for path in (cfg.socket_path, cfg.pid_path, cfg.endpoints_path, cfg.sim_pods_path):
        if path.exists() or path.is_symlink():
            path.unlink()
            report.removed.append(str(path))
    if purge:
        for path in cfg.state_dir.glob("store.db*"):
            path.unlink()
        for path in (cfg.events_path, cfg.log_path):
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
    from cilia.agent import process

    out = []
    if os.geteuid() == 0:
        out += [f"network namespace {n}" for n in sorted(netns_names & _netns_names())]
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
