"""The world: test hosts outside the cluster, reachable from pods only through the node.

Each world host is a network namespace ``cilia-world<i>-<name>`` (node index ``i``) with one
address from ``198.19.0.0/16`` and a veth to the node (node side ``ciliaw<hash>``), routed like a
pod's: the node side holds the node's gateway address (/32) and a /32 route to the host; the host
routes everything via that gateway. One namespace per host, not one shared namespace, so every host
has its own source address (a client started by ``world exec`` speaks as that host) and two hosts
can serve the same port. Servers are the lab's built-in workloads (the same workload daemon as the
pods: HTTP on TCP ports, echo on UDP). No route leads off the machine: the node forwards only
between the namespaces the lab created.

Like pods, each host has a record under ``<run_dir>/world``, written right after its namespace
exists, so a crash half-way still leaves the exact names to remove.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import re
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from cilia.lab import dns_process, netns, veth
from cilia.lab.errors import LabError
from cilia.lab.names import IFNAMSIZ, NETNS_MAX
from cilia.lab.node import Lab
from cilia.lab.workloads import PodWorkload
from cilia.store.files import write_json

WORLD_RANGE = ipaddress.IPv4Network("198.19.0.0/16")
HOST_IF_PREFIX = "ciliaw"
DNS_HOST = "dns"  # the world host running the lab's DNS server (cilia.lab.dns)
WORKLOAD_KEY_PREFIX = "world:"  # workload daemon keys; pods use "ns/name", which cannot clash
_NAME = re.compile(r"\A[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?\Z")  # \Z: "$" also takes "web\n"


class WorldError(LabError):
    """A world host operation failed; the message names the host and the step."""


@dataclass(frozen=True)
class WorldPort:
    port: int
    protocol: str = "TCP"  # TCP | UDP

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"

    @classmethod
    def parse(cls, text: str) -> WorldPort:
        """``80``, ``80/TCP`` or ``53/udp``."""
        num, _, proto = text.partition("/")
        proto = (proto or "TCP").upper()
        try:
            port = int(num)
        except ValueError:
            raise WorldError(f"port {text!r}: expected PORT[/TCP|UDP]") from None
        if not 1 <= port <= 65535 or proto not in ("TCP", "UDP"):
            raise WorldError(f"port {text!r}: expected 1..65535 and TCP or UDP")
        return cls(port, proto)


@dataclass(frozen=True)
class WorldHost:
    name: str
    ip: str
    ports: tuple[WorldPort, ...]
    netns: str
    host_ifname: str
    host_ifindex: int
    gateway: str
    log_path: str

    def workload(self) -> PodWorkload:
        return PodWorkload(
            key=WORKLOAD_KEY_PREFIX + self.name, name=self.name, netns=self.netns, log_path=self.log_path,
            tcp_ports=tuple(p.port for p in self.ports if p.protocol == "TCP"),
            udp_ports=tuple(p.port for p in self.ports if p.protocol == "UDP"),
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ports"] = [str(p) for p in self.ports]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WorldHost:
        return cls(**{**d, "ports": tuple(WorldPort.parse(p) for p in d["ports"])})


def world_netns_name(node_index: int, name: str) -> str:
    return f"cilia-world{node_index}-{name}"[:NETNS_MAX]


def world_ifname(node_index: int, name: str) -> str:
    digest = hashlib.sha256(f"world{node_index}/{name}".encode()).hexdigest()
    return HOST_IF_PREFIX + digest[: IFNAMSIZ - len(HOST_IF_PREFIX)]


def check_address(ip: str) -> ipaddress.IPv4Address:
    """A world host's address: an IPv4 address in 198.19.0.0/16 (not its network/broadcast)."""
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        raise WorldError(f"world host address {ip!r} is not an IPv4 address") from None
    if addr not in WORLD_RANGE or addr in (WORLD_RANGE.network_address, WORLD_RANGE.broadcast_address):
        raise WorldError(f"world host address {ip} is outside {WORLD_RANGE} (the lab's world range)")
    return addr


class World:
    """World hosts of one node, beside the lab's pods (same run/log dirs and workload daemon)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.node_index = lab.ipam.node_index
        self.gateway = str(lab.ipam.gateway)

    @property
    def _dir(self) -> Path:
        return self.lab.run_dir / "world"

    def _record_path(self, name: str) -> Path:
        return self._dir / f"{name}.json"

    def _write(self, host: WorldHost) -> None:
        write_json(self._record_path(host.name), host.to_json(), durable=False, indent=1)

    def _records(self) -> list[WorldHost]:
        try:
            files = sorted(self._dir.glob("*.json"))
        except FileNotFoundError:
            return []
        return [WorldHost.from_json(json.loads(f.read_text())) for f in files]

    def get(self, name: str) -> WorldHost | None:
        if not _NAME.match(name):  # never a path outside the records ("../x")
            return None
        path = self._record_path(name)
        return WorldHost.from_json(json.loads(path.read_text())) if path.exists() else None

    def list(self) -> list[WorldHost]:
        """World hosts whose namespace exists now."""
        existing = set(netns.names())
        return [h for h in self._records() if h.netns in existing]

    def log_path(self, name: str) -> Path:
        return self.lab.log_dir / "_world" / f"{name}.log"

    # ------------------------------------------------------------------ lifecycle

    def add(self, name: str, ip: str, ports: Sequence[WorldPort] = ()) -> WorldHost:
        """Create a world host at ``ip`` serving ``ports``; on failure nothing is left behind."""
        if not _NAME.match(name):
            raise WorldError(f"world host name {name!r}: lower-case letters, digits and '-', at most 40")
        addr = check_address(ip)
        if self.get(name) is not None:
            raise WorldError(f"world host {name} already exists")
        for h in self._records():
            if h.ip == str(addr):
                raise WorldError(f"address {addr} is taken by world host {h.name}")
        rec = WorldHost(name, str(addr), tuple(dict.fromkeys(ports)), world_netns_name(self.node_index, name),
                        world_ifname(self.node_index, name), 0, self.gateway, str(self.log_path(name)))
        with IPRoute() as ipr:
            if ipr.link_lookup(ifname=rec.host_ifname):
                raise WorldError(f"world host {name}: link {rec.host_ifname} exists already (run teardown)")
            if any(r.get("dst_len") == 32 and r.get_attr("RTA_DST") == str(addr)
                   for r in ipr.get_routes(family=socket.AF_INET)):
                raise WorldError(f"address {addr} is routed on this machine already (another node's world?)")
        self.lab._ensure_forwarding()
        netns.create(rec.netns)  # exclusive: from here on the namespace is ours
        made_link: list[bool] = []
        try:
            self._write(rec)
            rec = self._plumb(rec, made_link)
            self._write(rec)
            if not rec.workload().empty:
                self.lab.workloads.ensure_started()
                self.lab.workloads.add(rec.workload())
            return rec
        except BaseException as e:  # any failure, Ctrl-C too: roll the half-made host back, then re-raise
            with contextlib.suppress(Exception):  # best effort: the original error is what the user sees
                self._destroy(rec, own_link=bool(made_link))
            if isinstance(e, LabError):
                raise
            raise WorldError(f"add world host {name}: {e}") from e

    def _plumb(self, rec: WorldHost, made_link: list[bool]) -> WorldHost:
        idx = veth.add_pair(rec.host_ifname, rec.netns)
        made_link.append(True)
        v6 = veth.ipv6_available()  # and the IPv6 twin of its address (cilia.datapath.dualstack)
        veth.address_host_side(idx, rec.gateway, rec.ip, ipv6=v6)
        veth.configure_peer(rec.netns, rec.ip, rec.gateway, ipv6=v6)
        return replace(rec, host_ifindex=idx)

    def delete(self, name: str) -> None:
        rec = self.get(name)
        if rec is None:
            raise WorldError(f"world host {name} not found")
        self._destroy(rec)

    def _destroy(self, rec: WorldHost, own_link: bool = True) -> None:
        errors: list[str] = []
        if rec.name == DNS_HOST:
            # the DNS server process keeps the namespace alive: stop it first
            dns_process.stop(self.lab.run_dir)
        if self.lab.workloads.pid() is not None:
            try:
                self.lab.workloads.remove(rec.workload().key)
            except LabError as e:
                errors.append(str(e))
        errors += veth.remove(rec.host_ifname, rec.netns, own_link)
        veth.remove_log(rec.log_path)
        if errors:
            raise WorldError(f"delete world host {rec.name}: " + "; ".join(errors))
        self._record_path(rec.name).unlink(missing_ok=True)

    def restore_workloads(self) -> int:
        """Re-register every host's servers with the workload daemon (after it restarted)."""
        loads = [w for w in (h.workload() for h in self.list()) if not w.empty]
        if loads:
            self.lab.workloads.ensure_started()
        for w in loads:
            self.lab.workloads.add(w)
        return len(loads)

    def teardown(self) -> list[str]:
        """Remove every world host (also half-created ones); returns the namespaces removed."""
        removed, errors = [], []
        for rec in self._records():
            try:
                self._destroy(rec)
                removed.append(rec.netns)
            except LabError as e:
                errors.append(str(e))
        with contextlib.suppress(OSError):
            self._dir.rmdir()
        if errors:
            raise WorldError("world teardown: " + "; ".join(errors))
        return removed

    def created(self) -> tuple[set[str], set[str]]:
        """Namespaces and host links of every recorded world host (for leftover checks)."""
        recs = self._records()
        return {r.netns for r in recs}, {r.host_ifname for r in recs}

    # ------------------------------------------------------------------ exec

    def _nsenter(self, name: str, argv: Sequence[str]) -> list[str]:
        rec = self.get(name)
        if rec is None or not netns.exists(rec.netns):
            raise WorldError(f"world host {name} not found")
        if not argv:
            raise WorldError("world exec: no command given")
        return ["nsenter", f"--net={netns.path_of(rec.netns)}", "--", *argv]

    def exec(self, name: str, argv: Sequence[str], timeout: float | None = None) -> int:
        """Run ``argv`` as world host ``name`` with this process's stdio; its exit code."""
        return subprocess.run(self._nsenter(name, argv), timeout=timeout, check=False).returncode

    def run(
        self, name: str, argv: Sequence[str], timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Like :meth:`exec`, capturing stdout and stderr as text."""
        return subprocess.run(self._nsenter(name, argv), timeout=timeout, check=False,
                              capture_output=True, text=True)
