"""The node lab: kubelet + CNI for this machine. Pods are network namespaces joined to the node
by a veth pair, routed (no bridge), as Cilium's veth datapath does:

* pod side ``eth0``: the pod's /32, a scope-link route to the gateway and ``198.18.0.0/15`` via
  the gateway: no default route, so nothing a pod sends is addressed outside the lab;
* node side ``lxc<hash>``: the gateway address (/32, the same on every veth) and a /32 route to
  the pod in the node's namespace; IPv4 forwarding on while the lab runs, with the lab's nftables
  guard (:mod:`cilia.lab.guard`) dropping anything forwarded from a lab device out of the lab.

``create_pod`` calls ``before_address`` once the veth exists and before the pod has an address,
so a datapath attached there sees the pod's very first packet. Each pod has a record under
``<run_dir>/pods``, written as soon as its namespace exists (created exclusively) and before
anything else, so a crash half-way still leaves the exact names to remove; nothing is ever
removed by prefix, and nothing the lab did not create is removed at all.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from cilia.datapath.dualstack import ipv6_of
from cilia.k8s.names import namespace_errors, object_name_errors
from cilia.lab import guard, netns, podfiles, veth
from cilia.lab.errors import LabError, PodExistsError, PodNotFoundError
from cilia.lab.ipam import LAB_RANGE, Ipam
from cilia.lab.names import host_ifname, netns_name
from cilia.lab.security import RunAs
from cilia.lab.spec import Container, ContainerPort, PodSpec
from cilia.lab.workloadd import LOG_NAME, WorkloadClient
from cilia.lab.workloads import PodWorkload
from cilia.store import Store, state_dir
from cilia.store.files import write_json

DEFAULT_RUN_DIR = Path("/run/cilia/lab")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
LINK_GONE_TIMEOUT = 10.0
NAME_MAX = 255  # bytes of one file name (the pod's record and log files are named after it)


@dataclass(frozen=True)
class Pod:
    """A pod on this node. Also what ``before_address`` receives (the address is not on it yet)."""

    namespace: str
    name: str
    netns: str
    host_ifname: str
    host_ifindex: int
    ip: str
    gateway: str
    log_path: str
    spec: PodSpec = field(compare=False)
    ip6: str = ""  # the IPv6 twin of ``ip`` (cilia.datapath.dualstack), "" on an IPv4-only node

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def workload(self) -> PodWorkload:
        return PodWorkload(
            key=self.key, name=self.name, netns=self.netns, log_path=self.log_path,
            tcp_ports=self.spec.served_ports("TCP"), udp_ports=self.spec.served_ports("UDP"),
            commands=self.spec.commands(), privileges=self.spec.command_privileges(),
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"]["labels"] = dict(self.spec.labels)
        for c, spec_c in zip(d["spec"]["containers"], self.spec.containers, strict=True):
            c["security"] = spec_c.security.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Pod:
        s = d["spec"]
        spec = PodSpec(
            namespace=s["namespace"], name=s["name"], labels=dict(s["labels"]),
            containers=tuple(
                Container(c["name"], tuple(ContainerPort(p["port"], p["protocol"]) for p in c["ports"]),
                          tuple(c["command"]), tuple(c["args"]), RunAs.from_json(c.get("security")))
                for c in s["containers"]
            ),
        )
        return cls(**{**d, "spec": spec})


BeforeAddress = Callable[[Pod], None]


class Lab:
    """Pods as network namespaces on this node, their addresses and their workloads."""

    def __init__(self, store: Store, *, node_index: int = 0, run_dir: Path | None = None,
                 log_dir: Path | None = None) -> None:
        self.store = store
        self.ipam = Ipam(store, node_index)
        self.run_dir = Path(run_dir or DEFAULT_RUN_DIR).absolute()
        self.log_dir = Path(log_dir or state_dir() / "logs").absolute()
        self.workloads = WorkloadClient(self.run_dir)
        self._guarded = False

    # ------------------------------------------------------------------ records

    @property
    def _pods_dir(self) -> Path:
        return self.run_dir / "pods"

    def _record_path(self, namespace: str, name: str) -> Path:
        return self._pods_dir / f"{namespace}_{name}.json"

    def _write(self, pod: Pod) -> None:
        write_json(self._record_path(pod.namespace, pod.name), pod.to_json(), durable=False, indent=1)

    def _records(self) -> list[Pod]:
        try:
            files = sorted(self._pods_dir.glob("*.json"))
        except FileNotFoundError:
            return []
        return [Pod.from_json(json.loads(f.read_text())) for f in files]

    def get_pod(self, namespace: str, name: str) -> Pod | None:
        if namespace_errors(namespace) or object_name_errors("Pod", name):  # never a path outside the records
            return None
        try:
            return Pod.from_json(json.loads(self._record_path(namespace, name).read_text()))
        except FileNotFoundError:
            return None
        except OSError as e:  # ENAMETOOLONG: no such pod can have been created
            if e.errno == errno.ENAMETOOLONG:
                return None
            raise

    def list_pods(self) -> list[Pod]:
        """Pods whose namespace and veth exist on the system now."""
        # libc's netlink walk of this namespace's interfaces: names only, no attribute parsing (a
        # pyroute2 dump of ~1,000 links cost an agent more than its reconcile work, every 10 s).
        links = {name for _, name in socket.if_nameindex()}
        existing = set(netns.names())
        return [p for p in self._records() if p.netns in existing and p.host_ifname in links]

    def log_path(self, namespace: str, name: str) -> Path:
        return self.log_dir / namespace / f"{name}.log"

    # ------------------------------------------------------------------ lifecycle

    def create_pod(
        self, pod: PodSpec | Mapping[str, Any], before_address: BeforeAddress | None = None
    ) -> Pod:
        """Create a pod (a PodSpec or a Pod manifest) and start its workloads.

        On any failure everything created so far is removed again and :class:`LabError` raised.
        """
        spec = pod if isinstance(pod, PodSpec) else PodSpec.from_manifest(pod)
        self._check_names(spec)  # before anything exists: nothing to roll back
        if self.get_pod(spec.namespace, spec.name) is not None:
            raise PodExistsError(f"pod {spec.key} already exists on this node")
        ns_name = netns_name(spec.namespace, spec.name)
        if netns.exists(ns_name):
            ns_name = netns_name(spec.namespace, spec.name, hashed=True)
        host = host_ifname(spec.namespace, spec.name)
        with IPRoute() as ipr:
            if netns.exists(ns_name) or ipr.link_lookup(ifname=host):
                raise LabError(f"pod {spec.key}: {ns_name} or {host} exists already (left by a crash? "
                               "run teardown)")
        self._ensure_forwarding()
        ip = self.ipam.allocate(spec.key)
        rec = Pod(spec.namespace, spec.name, ns_name, host, 0, str(ip), str(self.ipam.gateway),
                  str(self.log_path(spec.namespace, spec.name)), spec,
                  ipv6_of(ip) if veth.ipv6_available() else "")
        try:
            netns.create(rec.netns)  # exclusive: from here on the namespace is ours
        except BaseException:  # broad: give the address back whatever happened, then re-raise
            self.ipam.release_owner(spec.key)
            raise
        made_link: list[bool] = []
        try:
            self._write(rec)  # before creating anything else: the exact names to clean up
            rec = self._plumb(rec, before_address, made_link)
            self._write(rec)
            if not rec.workload().empty:
                self.workloads.ensure_started()
                self.workloads.add(rec.workload())
            return rec
        except BaseException as e:  # broad: remove the half-made pod whatever happened, then re-raise
            with contextlib.suppress(Exception):  # the creation's error is the one to report
                self._destroy(rec, own_link=bool(made_link))
            if isinstance(e, LabError):
                raise
            raise LabError(f"create pod {spec.key}: {e}") from e

    def _check_names(self, spec: PodSpec) -> None:
        """Refuse a pod whose namespace or name Kubernetes would refuse (``..`` would reach outside
        the log directory) or whose record or log file name the filesystem cannot hold."""
        problems = [f"namespace {spec.namespace!r}: {m}" for m in namespace_errors(spec.namespace)]
        problems += [f"name {spec.name!r}: {m}" for m in object_name_errors("Pod", spec.name)]
        if not problems:
            files = (self._record_path(spec.namespace, spec.name), self.log_path(spec.namespace, spec.name))
            for path in files:
                if len(path.name.encode()) > NAME_MAX:
                    problems.append(f"namespace and name too long for the lab's file {path.name[:40]}…"
                                    f" ({len(path.name.encode())} bytes; the filesystem holds {NAME_MAX})")
        if problems:
            raise LabError(f"pod {spec.key[:300]}: " + "; ".join(problems))

    def _plumb(self, rec: Pod, before_address: BeforeAddress | None, made_link: list[bool]) -> Pod:
        idx = veth.add_pair(rec.host_ifname, rec.netns)
        made_link.append(True)
        rec = replace(rec, host_ifindex=idx)
        self._write(rec)
        if before_address is not None:
            before_address(rec)
        veth.address_host_side(idx, rec.gateway, rec.ip, ipv6=bool(rec.ip6))
        veth.configure_peer(rec.netns, rec.ip, rec.gateway, routes=(str(LAB_RANGE),),  # and no default
                            ipv6=bool(rec.ip6))
        podfiles.write(rec.netns, rec.namespace, rec.name, rec.ip, podfiles.dns_address(self.ipam.node_index),
                       rec.ip6)
        return rec

    def delete_pod(self, namespace: str, name: str) -> None:
        """Stop the pod's workloads and remove its namespace, veth, route and address."""
        rec = self.get_pod(namespace, name)
        if rec is None:
            raise PodNotFoundError(f"pod {namespace}/{name} not found on this node")
        self._destroy(rec)

    def _destroy(self, rec: Pod, own_link: bool = True) -> None:
        """Remove the pod. ``own_link`` is False when creating the veth failed: a link with that
        name then belongs to someone else and stays."""
        errors: list[str] = []
        if self.workloads.pid() is not None:
            try:
                self.workloads.remove(rec.key)
            except LabError as e:
                errors.append(str(e))
        errors += veth.remove(rec.host_ifname, rec.netns, own_link)
        podfiles.remove(rec.netns)
        self.ipam.release_owner(rec.key)
        veth.remove_log(rec.log_path)
        if errors:
            raise LabError(f"delete pod {rec.key}: " + "; ".join(errors))
        self._record_path(rec.namespace, rec.name).unlink(missing_ok=True)

    def restore_workloads(self) -> int:
        """(Re)register every pod's workloads with the daemon, e.g. after it restarted; returns the count."""
        loads = [w for w in (p.workload() for p in self.list_pods()) if not w.empty]
        if loads:
            self.workloads.ensure_started()
        for w in loads:
            self.workloads.add(w)
        return len(loads)

    def teardown(self) -> None:
        """Remove every pod this lab created, stop the workload daemon, restore ip_forward."""
        errors = []
        records = self._records()
        self.workloads.stop()  # every workload at once, and no socket keeps a namespace alive
        for rec in records:
            with contextlib.suppress(OSError):
                netns.remove(rec.netns)
        # The kernel destroys unreferenced namespaces in batches, each taking its pod's veth with
        # it: far faster than deleting veths one by one. Whatever is left is deleted explicitly.
        self._wait_links_gone({r.host_ifname for r in records}, LINK_GONE_TIMEOUT)
        for rec in records:
            try:
                self._destroy(rec)
            except LabError as e:
                errors.append(str(e))
        self._restore_forwarding()
        (self.run_dir / LOG_NAME).unlink(missing_ok=True)
        for d in (self._pods_dir, self.run_dir):
            with contextlib.suppress(OSError):
                d.rmdir()
        if errors:
            raise LabError("teardown: " + "; ".join(errors))

    @staticmethod
    def _wait_links_gone(names: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with IPRoute() as ipr:
            while names and time.monotonic() < deadline:
                names &= {link.get("ifname") for link in ipr.link("dump")}
                if names:
                    time.sleep(0.05)

    # ------------------------------------------------------------------ exec

    def _nsenter(self, namespace: str, name: str, argv: Sequence[str]) -> list[str]:
        rec = self.get_pod(namespace, name)
        if rec is None or not netns.exists(rec.netns):
            raise PodNotFoundError(f"pod {namespace}/{name} not found on this node")
        if not argv:
            raise LabError("exec: no command given")
        return [*netns.exec_argv(rec.netns), *argv]

    def exec_in_pod(
        self, namespace: str, name: str, argv: Sequence[str], timeout: float | None = None
    ) -> int:
        """Run ``argv`` in the pod (its network namespace, and a private mount namespace with its
        resolv.conf and hosts) with this process's stdio, as root (``kubectl exec`` runs as the
        container's user: see docs/differences.md); its exit code."""
        return subprocess.run(self._nsenter(namespace, name, argv), timeout=timeout, check=False).returncode

    def run_in_pod(self, namespace: str, name: str, argv: Sequence[str],
                   timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Like :meth:`exec_in_pod`, capturing stdout and stderr as text."""
        return subprocess.run(self._nsenter(namespace, name, argv), timeout=timeout, check=False,
                              capture_output=True, text=True)

    # ------------------------------------------------------------------ forwarding

    @property
    def _saved_forward(self) -> Path:
        return self.run_dir / "ip_forward.saved"

    def _ensure_forwarding(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        before = IP_FORWARD.read_text()
        # "x": only the first lab process to turn forwarding on records what it was before.
        with contextlib.suppress(FileExistsError), open(self._saved_forward, "x") as f:
            f.write(before)
        if not self._guarded:  # before forwarding is on: nothing is ever forwarded unguarded
            guard.install(self.run_dir)
            self._guarded = True
        IP_FORWARD.write_text("1\n")

    def _restore_forwarding(self) -> None:
        guard.remove(self.run_dir)
        self._guarded = False
        if self._saved_forward.exists():
            IP_FORWARD.write_text(self._saved_forward.read_text())
            self._saved_forward.unlink()
