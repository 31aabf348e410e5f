"""A node put together and taken apart: the agent over the lab's network-namespace pods and the eBPF
datapath (or over address-only pods and the simulated datapath), and everything the node created
removed again (``cilia down``).

The agent depends only on the interfaces of a pod runtime and a datapath (:mod:`cilia.agent.interfaces`);
this is where they are chosen and joined, below the CLI, so that commands and tests share one assembly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from cilia.agent import process
from cilia.agent.cluster import ClusterMember, open_agent_store
from cilia.agent.config import AgentConfig
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
from cilia.lab.guard_devices import GuardDevices, lab_guard_devices
from cilia.lab.ipam import Ipam, gateway
from cilia.lab.node import Lab
from cilia.lab.node import Pod as LabPod
from cilia.lab.world import World
from cilia.store import Store, open_store


def make_lab(cfg: AgentConfig, store: Store) -> Lab:
    """The lab as the agent, ``exec`` and ``logs`` all see it (same run and log directories)."""
    return Lab(store, node_index=cfg.node_index, run_dir=cfg.lab_run_dir, log_dir=cfg.logs_dir)


def _runtime_pod(p: LabPod) -> RuntimePod:
    return RuntimePod(PodKey(p.namespace, p.name), p.ip, p.host_ifindex, p.host_ifname, p.netns, p.ip6)


class LabRuntime:
    """:class:`cilia.agent.interfaces.PodRuntime` over :class:`cilia.lab.node.Lab`."""

    def __init__(self, lab: Lab, guard: GuardDevices | None = None) -> None:
        self.lab = lab
        self.guard = guard  # the datapath's guard on world hosts and the underlay (kernel datapath)
        self._dns_error = ""

    def existing(self) -> dict[PodKey, RuntimePod]:
        pods = {PodKey(p.namespace, p.name): _runtime_pod(p) for p in self.lab.list_pods()}
        if not self.lab.workloads.running():  # the workload daemon died (e.g. the machine rebooted)
            if pods:
                self.lab.restore_workloads()
            World(self.lab).restore_workloads()  # world hosts' servers run in the same daemon
        self._keep_dns()
        if self.guard is not None:  # after the DNS host: it is guarded from its start
            self.guard.sync()
        return pods

    def _keep_dns(self) -> None:
        """The node's DNS server runs from the node's start on (every pod's resolv.conf names it);
        at each runtime check it is started again if it died. A failure is the agent's warning,
        not a reason to stop managing pods."""
        try:
            lab_dns.keep_running(World(self.lab))
            self._dns_error = ""
        except Exception as e:  # broad: any failure is a warning here, the runtime check must go on
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
    lab = make_lab(cfg, store)
    guard = GuardDevices(datapath, lambda: lab_guard_devices(lab, underlay=member is not None))  # type: ignore[arg-type]
    return Node(cfg, store, LabRuntime(lab, guard), datapath, str(gw), cluster=member,
                host_devices=lambda: set(lab_guard_devices(lab, underlay=member is not None)))


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
                except Exception as e:  # broad: reported; teardown goes on with the other links
                    report.errors.append(f"delete link {name}: {e}")
    for name in sorted(left_netns):
        try:
            netns.remove(name)
        except Exception as e:  # broad: reported; teardown goes on with the other namespaces
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
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # a torn or foreign record
                for p in lab._records():  # the lab's own crash-safe records of what it created
                    created_netns.add(p.netns)
                    created_links.add(p.host_ifname)
            workload_pid = lab.workloads.pid()
            world = World(lab)
            world_netns, world_links = world.created()
            try:
                report.removed += [f"world host namespace {n}" for n in world.teardown()]
            except Exception as e:  # broad: reported; the pods, pins and files are removed all the same
                report.errors.append(f"world teardown: {e}")
            try:
                lab.teardown()
            except Exception as e:  # broad: reported; the second pass below retries what is left
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
            except Exception as e:  # broad: reported (libbpf, pins, files); `down` lists what is left
                report.errors.append(f"datapath teardown: {e}")
    finally:
        if store is not None:
            store.close()
    try:
        from cilia.agent.l7proxy import teardown as proxy_teardown

        report.removed += proxy_teardown(cfg.run_dir, cfg.node_index)  # a crashed agent's HAProxy, files
    except Exception as e:  # broad: reported; the node's sockets and state are removed all the same
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
