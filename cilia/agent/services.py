"""Services on the node: ClusterIPs from 198.18.255.0/24 and the load-balancing table the datapath
translates with.

* A Service gets a ClusterIP when the agent first sees it: claimed in the store (kind ``ipam``, key
  ``<ip>`` → owner ``service:<ns>/<name>`` plus ``service-<ns>_<name>`` → ip, one transaction) and
  written into the stored object's ``spec.clusterIP``, as the Kubernetes API server does, so
  ``cilia get svc`` shows it. A requested ``spec.clusterIP`` inside the range is honoured when free;
  ``None`` (headless) gets none.
* Backends: for a Service with a selector, the running pods of its namespace whose labels match
  (each pod's endpoint address, or on several nodes the address another node published for it;
  a named ``targetPort`` is looked up in the pod's container ports);
  for a selector-less Service, the addresses of its Endpoints/EndpointSlice (e.g. world hosts),
  on the Service's target port.
* The datapath gets the table ClusterIP:port/proto → backends (:meth:`NodeDatapath.sync_services`;
  the simulated datapath keeps it without translating) and translates on the client pod's egress
  path, before conntrack and policy, so policy decides on the backend, as in Cilium. The table is
  also saved as JSON next to the endpoint table for ``cilia svc``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cilia.agent.desired import DesiredState, PodKey
from cilia.agent.endpoints import EndpointTable
from cilia.agent.errors import AgentError
from cilia.agent.interfaces import NodeDatapath
from cilia.datapath.maps.lb import Backend, Frontend
from cilia.k8s.objects import ServicePort
from cilia.store import ConflictError, Delete, Expect, Kind, Put, Store, StoreError
from cilia.store.files import write_json

log = logging.getLogger("cilia.agent")

SERVICE_RANGE = ipaddress.IPv4Network("198.18.255.0/24")
HEADLESS = "None"
LB_PROTOCOLS = ("TCP", "UDP")
TABLE_NAME = "services.json"


class ServiceIPError(AgentError):
    """No ClusterIP could be given to a Service (range exhausted, store conflict)."""


def _owner(svc: PodKey) -> str:
    return f"service:{svc.namespace}/{svc.name}"


def _owner_key_name(svc: PodKey) -> str:
    return f"service-{svc.namespace}_{svc.name}"


class ClusterIPs:
    """ClusterIP allocation, persisted in the store next to the pods' IPAM records."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def lookup(self, svc: PodKey) -> str | None:
        rec = self.store.get(Kind.IPAM.key("", _owner_key_name(svc)))
        return str(rec.value["ip"]) if rec else None

    def allocations(self) -> dict[str, str]:
        """ClusterIP -> owner (``service:ns/name``)."""
        out = {}
        for rec in self.store.list(Kind.IPAM):
            owner = str(rec.value.get("owner", ""))
            if owner.startswith("service:"):
                out[rec.key.name] = owner
        return out

    def allocate(self, svc: PodKey, requested: str | None = None) -> str:
        """The Service's ClusterIP: its existing one, the requested one if free, else the lowest free."""
        for _ in range(20):
            have = self.lookup(svc)
            if have is not None:
                return have
            taken = set(self.allocations())
            candidates = [str(a) for a in SERVICE_RANGE.hosts() if str(a) not in taken]
            if requested and requested in candidates:
                candidates.insert(0, requested)
            if not candidates:
                raise ServiceIPError(f"no free ClusterIP left in {SERVICE_RANGE} for {svc}")
            ip = candidates[0]
            ip_key, owner_key = Kind.IPAM.key("", ip), Kind.IPAM.key("", _owner_key_name(svc))
            try:
                self.store.txn([Expect(ip_key, 0), Expect(owner_key, 0),
                                Put(ip_key, {"owner": _owner(svc)}), Put(owner_key, {"ip": ip})])
                return ip
            except ConflictError:
                continue  # someone else took it meanwhile
        raise ServiceIPError(f"ClusterIP for {svc}: too much contention")

    def release(self, svc: PodKey) -> None:
        ip = self.lookup(svc)
        if ip is not None:
            self.store.txn([Delete(Kind.IPAM.key("", ip), True),
                            Delete(Kind.IPAM.key("", _owner_key_name(svc)), True)])


@dataclass(frozen=True)
class ServicePortView:
    frontend: Frontend
    target: str  # the target port as written (number or name)
    backends: tuple[Backend, ...]


@dataclass(frozen=True)
class ServiceView:
    """One Service as the datapath load-balances it."""

    namespace: str
    name: str
    cluster_ip: str
    ports: tuple[ServicePortView, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace, "name": self.name, "clusterIP": self.cluster_ip,
            "ports": [{"port": p.frontend.port, "protocol": p.frontend.protocol, "targetPort": p.target,
                       "backends": [str(b) for b in p.backends]} for p in self.ports],
        }


def _target(port: ServicePort) -> int | str:
    t = port.target_port
    if t is None:
        return port.port
    if isinstance(t, str) and t.isdigit():
        return int(t)
    return t


def _named_port(raw_pod: Mapping[str, Any], name: str, protocol: str) -> int | None:
    for c in (raw_pod.get("spec") or {}).get("containers") or ():
        for p in c.get("ports") or ():
            if p.get("name") == name and str(p.get("protocol", "TCP")).upper() == protocol:
                return int(p["containerPort"])
    return None


def _pod_address(pk: PodKey, endpoints: EndpointTable, remote: Mapping[PodKey, str]) -> str:
    ep = endpoints.get(pk)
    return ep.ip if ep is not None and ep.ip else remote.get(pk, "")


def service_views(
    desired: DesiredState, endpoints: EndpointTable, cluster_ips: Mapping[PodKey, str],
    remote: Mapping[PodKey, str] | None = None,
) -> list[ServiceView]:
    """Every Service with a ClusterIP, its TCP/UDP ports and their backends (sorted). ``remote``:
    the addresses of pods running on other nodes (several nodes), backends like local ones."""
    remote = remote or {}
    out = []
    for key, svc in sorted(desired.services.items()):
        ip = cluster_ips.get(key)
        if ip is None:
            continue
        selector = dict(svc.selector) if svc.selector else None
        if selector is not None:
            pods = [pk for pk, pod in desired.pods.items() if pk.namespace == key.namespace
                    and all(pod.label_map.get(k) == v for k, v in selector.items())]
            addrs = sorted((pod_ip, pk) for pk in pods if (pod_ip := _pod_address(pk, endpoints, remote)))
        else:
            addrs = [(a, None) for a in desired.service_endpoints.get(key, ())]
        ports = []
        for sp in svc.ports:
            if sp.protocol not in LB_PROTOCOLS:
                continue
            target = _target(sp)
            backends = []
            for addr, pk in addrs:
                if isinstance(target, int):
                    backends.append(Backend(addr, target))
                elif pk is not None:
                    named = _named_port(desired.raw_pods.get(pk, {}), target, sp.protocol)
                    if named is not None:
                        backends.append(Backend(addr, named))
            fe = Frontend(ip, sp.port, sp.protocol)
            ports.append(ServicePortView(fe, str(target), tuple(sorted(set(backends)))))
        out.append(ServiceView(key.namespace, key.name, ip, tuple(ports)))
    return out


def lb_table(views: list[ServiceView]) -> dict[Frontend, tuple[Backend, ...]]:
    return {p.frontend: p.backends for v in views for p in v.ports}


class ServiceLB:
    """Keeps ClusterIPs, the stored ``spec.clusterIP`` and the datapath's service table in step with
    the desired state. :meth:`sync` is cheap when nothing changed."""

    def __init__(self, store: Store, table_path: Path | None = None) -> None:
        self.store = store
        self.ips = ClusterIPs(store)
        self.table_path = table_path
        self.applied: dict[Frontend, tuple[Backend, ...]] | None = None
        self.views: list[ServiceView] = []
        self._known: dict[PodKey, str] = {}  # ClusterIPs given out (and stored) by this agent
        self._services_seen: set[PodKey] | None = None

    def _cluster_ips(self, desired: DesiredState) -> dict[PodKey, str]:
        out: dict[PodKey, str] = {}
        for key, svc in sorted(desired.services.items()):
            if svc.cluster_ip == HEADLESS:
                continue
            ip = self._known.get(key)
            if ip is None or svc.cluster_ip != ip:  # new, or the stored object lost its ClusterIP
                requested = svc.cluster_ip if _in_range(svc.cluster_ip) else None
                try:
                    ip = self.ips.allocate(key, requested)
                except (ServiceIPError, StoreError) as e:
                    log.warning("service %s: %s", key, e)
                    continue
                if svc.cluster_ip != ip:
                    self._store_cluster_ip(key, ip)
            out[key] = ip
        # Releasing lists every address record: only when the set of Services changed.
        if set(desired.services) != self._services_seen:
            wanted = {_owner(k) for k, s in desired.services.items() if s.cluster_ip != HEADLESS}
            for ip, owner in self.ips.allocations().items():
                if owner not in wanted:
                    ns, _, name = owner.removeprefix("service:").partition("/")
                    self.ips.release(PodKey(ns, name))
                    log.info("service %s gone: ClusterIP %s released", owner, ip)
            self._services_seen = set(desired.services)
        self._known = out
        return out

    def _store_cluster_ip(self, key: PodKey, ip: str) -> None:
        rec = self.store.get(Kind.SERVICES.key(key.namespace, key.name))
        if rec is None:
            return
        spec = dict(rec.value.get("spec") or {})
        spec["clusterIP"] = ip
        # Only over the version we read: a user's concurrent change wins, and comes back as an event.
        with contextlib.suppress(ConflictError):
            self.store.txn([Expect(rec.key, rec.mod_revision), Put(rec.key, {**rec.value, "spec": spec})])

    def sync(self, desired: DesiredState, endpoints: EndpointTable, datapath: NodeDatapath,
             remote: Mapping[PodKey, str] | None = None) -> bool:
        """Bring ClusterIPs and the datapath's table up to date; True if the table changed.
        ``remote``: other nodes' pod addresses (:func:`service_views`)."""
        self.views = service_views(desired, endpoints, self._cluster_ips(desired), remote)
        want = lb_table(self.views)
        if want == self.applied:
            return False
        datapath.sync_services(want)  # the simulated datapath keeps it without translating
        self.applied = want
        self._save()
        return True

    def _save(self) -> None:
        if self.table_path is None:
            return
        write_json(self.table_path, [v.to_json() for v in self.views], indent=1)


def _in_range(ip: str | None) -> bool:
    try:
        return ip is not None and ipaddress.IPv4Address(ip) in SERVICE_RANGE
    except ValueError:
        return False


def read_table(path: Path) -> list[dict[str, Any]]:
    """The service table the agent saved (empty if none yet)."""
    try:
        return list(json.loads(path.read_text() or "[]"))
    except FileNotFoundError:
        return []
