"""Services on the node: ClusterIPs from 198.18.255.0/24 (IPv6: 2001:2:0:ff::/120) and the
load-balancing table the datapath translates with.

* A Service gets a ClusterIP when the agent first sees it: claimed in the store (kind ``ipam``, key
  ``<ip>`` → owner ``service:<ns>/<name>`` plus ``service-<ns>_<name>`` → ip, one transaction) and
  written into the stored object's ``spec.clusterIP``, as the Kubernetes API server does, so
  ``cilia get svc`` shows it. A requested ``spec.clusterIP`` inside the range is honoured when free;
  ``None`` (headless) gets none.
* IP families as the API server gives them (:mod:`cilia.k8s.ipfamilies`): a ``PreferDualStack`` or
  ``RequireDualStack`` Service gets an IPv4 and an IPv6 ClusterIP (IPv6 records ``svc6-<ip>`` and
  ``service6-<ns>_<name>``), ``SingleStack`` one of its family; the stored object gets
  ``clusterIP``/``clusterIPs``/``ipFamilies``/``ipFamilyPolicy`` filled in. An IPv6 frontend's
  backends are the pods' IPv6 addresses (their IPv4 addresses' twins on other nodes), or the
  IPv6 addresses of a selector-less Service's Endpoints.
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
from cilia.datapath.dualstack import ipv6_of
from cilia.datapath.maps.lb import Backend, Frontend
from cilia.k8s.ipfamilies import IPV4, IPV6, REQUIRE_DUAL, SINGLE, family_of
from cilia.k8s.objects import ServicePort
from cilia.store import ConflictError, Delete, Expect, Kind, Put, Store, StoreError
from cilia.store.files import write_json

log = logging.getLogger("cilia.agent")

SERVICE_RANGE = ipaddress.IPv4Network("198.18.255.0/24")
SERVICE_RANGE6 = ipaddress.IPv6Network("2001:2:0:ff::/120")  # inside the lab's IPv6 range 2001:2::/48
HEADLESS = "None"
LB_PROTOCOLS = ("TCP", "UDP")
TABLE_NAME = "services.json"


class ServiceIPError(AgentError):
    """No ClusterIP could be given to a Service (range exhausted, store conflict)."""


def _owner(svc: PodKey) -> str:
    return f"service:{svc.namespace}/{svc.name}"


def _owner_key_name(svc: PodKey, family: str = IPV4) -> str:
    return f"service{'6' if family == IPV6 else ''}-{svc.namespace}_{svc.name}"


def _ip_key_name(ip: str) -> str:
    # an IPv6 record must not start with a digit: the pods' IPAM reads those as IPv4 addresses
    return f"svc6-{ip}" if ":" in ip else ip


class ClusterIPs:
    """ClusterIP allocation of one family, persisted in the store next to the pods' IPAM records."""

    def __init__(self, store: Store, family: str = IPV4) -> None:
        self.store = store
        self.family = family
        self.range: ipaddress.IPv4Network | ipaddress.IPv6Network = (
            SERVICE_RANGE6 if family == IPV6 else SERVICE_RANGE)

    def lookup(self, svc: PodKey) -> str | None:
        rec = self.store.get(Kind.IPAM.key("", _owner_key_name(svc, self.family)))
        return str(rec.value["ip"]) if rec else None

    def allocations(self) -> dict[str, str]:
        """ClusterIP -> owner (``service:ns/name``), of this family."""
        out = {}
        for rec in self.store.list(Kind.IPAM):
            owner = str(rec.value.get("owner", ""))
            name = rec.key.name
            if owner.startswith("service:") and name.startswith("svc6-") == (self.family == IPV6):
                out[name.removeprefix("svc6-")] = owner
        return out

    def allocate(self, svc: PodKey, requested: str | None = None) -> str:
        """The Service's ClusterIP: its existing one, the requested one if free, else the lowest free."""
        for _ in range(20):
            have = self.lookup(svc)
            if have is not None:
                return have
            taken = set(self.allocations())
            candidates = [str(a) for a in self.range.hosts() if str(a) not in taken]
            if requested and requested in candidates:
                candidates.insert(0, requested)
            if not candidates:
                raise ServiceIPError(f"no free ClusterIP left in {self.range} for {svc}")
            ip = candidates[0]
            ip_key = Kind.IPAM.key("", _ip_key_name(ip))
            owner_key = Kind.IPAM.key("", _owner_key_name(svc, self.family))
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
            self.store.txn([Delete(Kind.IPAM.key("", _ip_key_name(ip)), True),
                            Delete(Kind.IPAM.key("", _owner_key_name(svc, self.family)), True)])


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
    cluster_ips: tuple[str, ...] = ()  # every family's ClusterIP, primary first

    def to_json(self) -> dict[str, Any]:
        # the second family's ClusterIP (dual stack) is named where it appears; IPv4-only rows stay as before
        out: dict[str, Any] = {"namespace": self.namespace, "name": self.name, "clusterIP": self.cluster_ip}
        if len(self.cluster_ips) > 1 or (self.cluster_ips and self.cluster_ips[0] != self.cluster_ip):
            out["clusterIPs"] = list(self.cluster_ips)
        out["ports"] = [
            {**({"clusterIP": p.frontend.ip} if p.frontend.ip != self.cluster_ip else {}),
             "port": p.frontend.port, "protocol": p.frontend.protocol, "targetPort": p.target,
             "backends": [str(b) for b in p.backends]}
            for p in self.ports
        ]
        return out


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


def _pod_address(pk: PodKey, endpoints: EndpointTable, remote: Mapping[PodKey, str], family: str) -> str:
    ep = endpoints.get(pk)
    if ep is not None and ep.ip:
        return ep.ip6 if family == IPV6 else ep.ip
    addr = remote.get(pk, "")
    return ipv6_of(addr) if addr and family == IPV6 else addr  # another node's pod: its twin


def service_views(
    desired: DesiredState, endpoints: EndpointTable, cluster_ips: Mapping[PodKey, str | tuple[str, ...]],
    remote: Mapping[PodKey, str] | None = None,
) -> list[ServiceView]:
    """Every Service with a ClusterIP, its TCP/UDP ports and their backends (sorted), one frontend
    per ClusterIP (family). ``remote``: the addresses of pods running on other nodes (several
    nodes), backends like local ones."""
    remote = remote or {}
    out = []
    for key, svc in sorted(desired.services.items()):
        got = cluster_ips.get(key)
        if not got:
            continue
        ips = (got,) if isinstance(got, str) else tuple(got)
        selector = dict(svc.selector) if svc.selector else None
        ports = []
        for ip in ips:
            family = family_of(ip)
            if selector is not None:
                pods = [pk for pk, pod in desired.pods.items() if pk.namespace == key.namespace
                        and all(pod.label_map.get(k) == v for k, v in selector.items())]
                addrs: list[tuple[str, PodKey | None]] = sorted(
                    (pod_ip, pk) for pk in pods if (pod_ip := _pod_address(pk, endpoints, remote, family)))
            else:
                addrs = [(a, None) for a in desired.service_endpoints.get(key, ()) if family_of(a) == family]
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
        out.append(ServiceView(key.namespace, key.name, ips[0], tuple(ports), ips))
    return out


def lb_table(views: list[ServiceView]) -> dict[Frontend, tuple[Backend, ...]]:
    return {p.frontend: p.backends for v in views for p in v.ports}


class ServiceLB:
    """Keeps ClusterIPs, the stored ``spec.clusterIP`` and the datapath's service table in step with
    the desired state. :meth:`sync` is cheap when nothing changed."""

    def __init__(self, store: Store, table_path: Path | None = None) -> None:
        self.store = store
        self.ips = ClusterIPs(store)
        self.ips6 = ClusterIPs(store, IPV6)
        self.table_path = table_path
        self.applied: dict[Frontend, tuple[Backend, ...]] | None = None
        self.views: list[ServiceView] = []
        # ClusterIPs given out (and stored) by this agent, primary family first
        self._known: dict[PodKey, tuple[str, ...]] = {}
        self._services_seen: dict[PodKey, tuple[str, ...]] | None = None

    def _cluster_ips(self, desired: DesiredState) -> dict[PodKey, tuple[str, ...]]:
        out: dict[PodKey, tuple[str, ...]] = {}
        for key, svc in sorted(desired.services.items()):
            if svc.cluster_ip == HEADLESS:
                continue
            ips = self._known.get(key)
            if ips is None or svc.addresses != ips:  # new, or the stored object lost its ClusterIPs
                got = []
                for family in svc.families:
                    alloc = self.ips6 if family == IPV6 else self.ips
                    requested = next((a for a in svc.addresses if _in_range(a, alloc.range)), None)
                    try:
                        got.append(alloc.allocate(key, requested))
                    except (ServiceIPError, StoreError) as e:
                        log.warning("service %s (%s): %s", key, family, e)
                if not got:
                    continue
                ips = tuple(got)
                if svc.addresses != ips:
                    self._store_cluster_ip(key, ips, svc.ip_family_policy)
            out[key] = ips
        # Releasing lists every address record: only when the Services or their families changed.
        families = {k: s.families for k, s in desired.services.items() if s.cluster_ip != HEADLESS}
        if families != self._services_seen:
            for family, alloc in ((IPV4, self.ips), (IPV6, self.ips6)):
                wanted = {_owner(k) for k, fams in families.items() if family in fams}
                for ip, owner in alloc.allocations().items():
                    if owner not in wanted:
                        ns, _, name = owner.removeprefix("service:").partition("/")
                        alloc.release(PodKey(ns, name))
                        log.info("service %s gone (or not %s): ClusterIP %s released", owner, family, ip)
            self._services_seen = families
        self._known = out
        return out

    def _store_cluster_ip(self, key: PodKey, ips: tuple[str, ...], policy: str | None) -> None:
        rec = self.store.get(Kind.SERVICES.key(key.namespace, key.name))
        if rec is None:
            return
        spec = dict(rec.value.get("spec") or {})
        spec["clusterIP"] = ips[0]
        # as the API server fills them in
        spec["clusterIPs"] = list(ips)
        spec["ipFamilies"] = [family_of(ip) for ip in ips]
        spec["ipFamilyPolicy"] = policy or (REQUIRE_DUAL if len(ips) > 1 else SINGLE)
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


def _in_range(ip: str | None, net: ipaddress.IPv4Network | ipaddress.IPv6Network = SERVICE_RANGE) -> bool:
    try:
        return ip is not None and ipaddress.ip_address(ip) in net
    except (ValueError, TypeError):
        return False


def read_table(path: Path) -> list[dict[str, Any]]:
    """The service table the agent saved (empty if none yet)."""
    try:
        return list(json.loads(path.read_text() or "[]"))
    except FileNotFoundError:
        return []
