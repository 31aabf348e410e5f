"""MapState → kernel: the :class:`Datapath` that owns the pinned maps and keeps them in sync.

Ordering guarantee of every change (full sync, diff, identity change): no packet that both the old
and the new policy deny is ever allowed in between. Changes go in four phases — upsert new/changed
denies, upsert new/changed allows, delete stale allows, delete stale denies — and an identity change
moves the ipcache entry between the upserts and the deletes. Any failure (a full map, a rejected
update) clears the endpoint's POLICY_READY flag, so the datapath drops everything for it, and raises
:class:`SyncError`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

from cilia.datapath.bpf import loader
from cilia.datapath.bpf.cookies import CookieTable
from cilia.datapath.bpf.libbpf import BpfError
from cilia.datapath.bpf.pins import NoDatapathError, open_pinned
from cilia.datapath.bpf.veth_macs import veth_macs
from cilia.datapath.capabilities import ALL as ALL_CAPABILITIES
from cilia.datapath.errors import DatapathError
from cilia.datapath.maps import ct as ctmap
from cilia.datapath.maps import dns as dnsmap
from cilia.datapath.maps import lb
from cilia.datapath.maps import lxc as lxcmap
from cilia.datapath.maps import policy as policymap
from cilia.datapath.maps.config import ConfigMap, DatapathConfig
from cilia.datapath.maps.ct import CtEntry, CtMap
from cilia.datapath.maps.dns import DnsMaps
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo, EndpointsMap
from cilia.datapath.maps.events import EventsReader, PolicyEvent
from cilia.datapath.maps.ipcache import IpcacheMap
from cilia.datapath.maps.lb import Backend, Frontend, LbMap
from cilia.datapath.maps.lxc import LocalEndpoint, LxcMap
from cilia.datapath.maps.metrics import MetricRow, MetricsMap
from cilia.datapath.maps.policy import PolicyMap, PolicyValue
from cilia.policy.types import Entry, Key, RuleRef

MapState = Mapping[Key, Entry]
DEFAULT_STATE_DIR = "/var/lib/cilia/datapath"  # the agent's state dir + datapath/
V = TypeVar("V")


class SyncError(DatapathError, RuntimeError):
    """A policy sync failed; the endpoint was left fail-closed (its traffic is dropped)."""

    def __init__(self, endpoint_id: int, what: str, cause: Exception | None = None) -> None:
        self.endpoint_id = endpoint_id
        msg = f"endpoint {endpoint_id}: {what}" + (f": {cause}" if cause else "")
        super().__init__(msg + " (endpoint left fail-closed: all its traffic is dropped)")


class PolicyMapFullError(SyncError):
    """The endpoint's MapState has more entries than the per-endpoint limit."""


class Phase(NamedTuple, Generic[V]):
    name: str
    upserts: dict[Key, V]
    deletes: list[Key]


def plan(old: Mapping[Key, V], new: Mapping[Key, V], is_deny: Callable[[V], bool]) -> list[Phase[V]]:
    """The four ordered phases that turn ``old`` into ``new`` (empty phases included)."""
    changed = {k: v for k, v in new.items() if old.get(k) != v}
    return phases(changed, {k: is_deny(v) for k, v in old.items() if k not in new}, is_deny)


def phases(changed: Mapping[Key, V], stale: Mapping[Key, bool],
           is_deny: Callable[[V], bool]) -> list[Phase[V]]:
    """Upsert ``changed`` denies, then allows; delete ``stale`` (key → was a deny) allows, then denies."""
    return [
        Phase("upsert denies", {k: v for k, v in changed.items() if is_deny(v)}, []),
        Phase("upsert allows", {k: v for k, v in changed.items() if not is_deny(v)}, []),
        Phase("delete allows", {}, sorted(k for k, deny in stale.items() if not deny)),
        Phase("delete denies", {}, sorted(k for k, deny in stale.items() if deny)),
    ]


def _is_deny(v: tuple[int, ...]) -> bool:
    return bool(v[2] & policymap.F_DENY)


class SyncStats(NamedTuple):
    upserted: int
    deleted: int


def _value_tuple(v: PolicyValue) -> tuple[int, ...]:
    return (v.cookie, v.proxy_port, v.flags, v.lpm_prefix, v.proxy_priority, v.auth_type)


class Datapath:
    """The kernel datapath of one node: pinned maps under ``pin_root``, programs on host veths."""

    capabilities = ALL_CAPABILITIES  # the agent's NodeDatapath protocol, all of it (agent/interfaces.py)

    def __init__(self, pin_root: str = loader.DEFAULT_PIN_ROOT,
                 state_dir: str | os.PathLike[str] | None = None,
                 max_entries_per_endpoint: int = policymap.DEFAULT_MAX_PER_ENDPOINT,
                 config: DatapathConfig | None = None, object_path: str | None = None) -> None:
        self.pin_root = pin_root
        self.state_dir = Path(state_dir or DEFAULT_STATE_DIR)
        self.max_entries_per_endpoint = max_entries_per_endpoint
        self.config = config or DatapathConfig()
        self.object_path = object_path
        self.coll: loader.Collection | None = None
        # what the kernel holds per endpoint, as PolicyValue field tuples
        self._installed: dict[int, dict[Key, tuple[int, ...]]] = {}
        self._all_read = False  # the whole policy map was read once into _installed
        self._unknown: set[int] = set()  # endpoints whose installed entries must be re-read
        self._synced: set[int] = set()  # endpoints whose last full sync in this process succeeded
        self._reader: EventsReader | None = None
        # endpoint id -> its devices, as attached by this process (a relabel must not read the
        # whole endpoints map to find one entry: 500 map lookups on a busy node)
        self._devices: dict[int, set[int]] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> Datapath:
        """Load the programs and open (or create) the pinned maps."""
        self.coll = loader.load(self.pin_root, self.object_path)
        m = self.coll.maps
        self.ipcache = IpcacheMap(m["cilia_ipcache4"], m["cilia_ipcache6"])
        self.endpoints = EndpointsMap(m["cilia_endpoints"])
        # an object without it (a baseline revision in bench-prog-cost): no local endpoint map
        self.lxc: LxcMap | None = LxcMap(m[lxcmap.MAP]) if lxcmap.MAP in m else None
        self.policy = PolicyMap(m["cilia_policy"])
        self.ct = CtMap(m[ctmap.MAP], m.get(ctmap.MAP4))  # no cilia_ct4: an older object (IPv4 in cilia_ct)
        self.metrics_map = MetricsMap(m["cilia_metrics"])
        self.config_map = ConfigMap(m["cilia_config"])
        # an object without the IPv6 service maps (a baseline revision in bench-prog-cost): IPv4 only
        self.lb = LbMap(m[lb.MAP], m[lb.CT_MAP], m[lb.REV_MAP],
                        m.get(lb.MAP6), m.get(lb.CT_MAP6), m.get(lb.REV_MAP6))
        self.dns = DnsMaps(m[dnsmap.MAP], m[dnsmap.REV_MAP])
        # the service lookups stay on while the (pinned) maps hold a frontend, e.g. across a restart
        self.config_map.set(self.config, services=bool(self.lb.dump()))
        self.cookies = CookieTable(self.state_dir / "cookies.json")
        return self

    def close(self) -> None:
        """Release this process's handles; programs and pins stay (enforcement continues)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self.coll is not None:
            self.coll.close()
            self.coll = None

    def __enter__(self) -> Datapath:
        return self.open() if self.coll is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _coll(self) -> loader.Collection:
        if self.coll is None:
            raise RuntimeError("datapath is not open (call open())")
        return self.coll

    # -- endpoints -------------------------------------------------------------------------------
    def attach(self, ifindex: int, endpoint_id: int, identity: int,
               flags: EndpointFlags = EndpointFlags.ENFORCE_INGRESS | EndpointFlags.ENFORCE_EGRESS) -> None:
        """Register the endpoint on its host veth and attach the programs (atomic replace).

        The endpoint drops all traffic until its first successful :meth:`set_policy` (before or
        after this call), unless the pinned state already has it ready (a restarted process
        re-attaching: no lapse, no outage).
        """
        coll = self._coll()
        prev = self.endpoints.get(ifindex)
        was_ready = prev is not None and prev.endpoint_id == endpoint_id and bool(
            prev.flags & EndpointFlags.POLICY_READY)
        ready = EndpointFlags.POLICY_READY if was_ready or endpoint_id in self._synced else EndpointFlags(0)
        flags = (flags & ~EndpointFlags.POLICY_READY) | ready
        if prev is not None and prev.endpoint_id != endpoint_id and self.lxc is not None:
            self.lxc.delete_device(ifindex)  # another endpoint's addresses: never routed to this one
        self.endpoints.set(EndpointInfo(ifindex, endpoint_id, identity, flags))
        if prev is not None and prev.endpoint_id != endpoint_id:
            self._devices.get(prev.endpoint_id, set()).discard(ifindex)
        self._devices.setdefault(endpoint_id, set()).add(ifindex)
        loader.attach(coll, ifindex)

    def endpoint_ids(self) -> dict[int, int]:
        """ifindex -> endpoint id, as the pinned endpoints map holds them (it outlives the agent)."""
        self._coll()
        return {int(e.ifindex): int(e.endpoint_id) for e in self.endpoints.dump()}

    def detach(self, ifindex: int) -> None:
        """Remove the programs from the device (its traffic is no longer enforced) and forget it."""
        loader.detach(ifindex, destroy_qdisc=True, pin_root=self.pin_root)
        if self.lxc is not None:
            self.lxc.delete_device(ifindex)
        self.endpoints.delete(ifindex)
        for devices in self._devices.values():
            devices.discard(ifindex)

    def set_local_endpoint(self, ip: str, ifindex: int, pod_mac: str | None = None,
                           host_mac: str | None = None) -> None:
        """Register the pod address ``ip`` on its host veth ``ifindex`` for eBPF host routing
        (cilia_lxc): packets to it then go to that device's peer without a fib lookup, while the
        device's endpoint (attach it first) is ready. The MACs (the pod's eth0, the host veth)
        default to the veth pair's own, read by netlink."""
        self._coll()
        if self.lxc is None:
            raise DatapathError(f"set_local_endpoint {ip}: the datapath object has no {lxcmap.MAP} map")
        ep = self.endpoints.get(ifindex)
        if ep is None:
            raise DatapathError(f"set_local_endpoint {ip}: device {ifindex} is not attached")
        if pod_mac is None or host_mac is None:
            peer, own = veth_macs(ifindex)
            pod_mac, host_mac = pod_mac or peer, host_mac or own
        self.lxc.set(LocalEndpoint(ip, ifindex, ep.endpoint_id, pod_mac, host_mac))

    def delete_local_endpoint(self, ip: str) -> bool:
        """Forget the address for host routing (its packets take the fib lookup again)."""
        self._coll()
        return self.lxc is not None and self.lxc.delete(ip)

    def local_endpoints(self) -> list[LocalEndpoint]:
        """The cilia_lxc entries (address → device, endpoint, MACs)."""
        self._coll()
        return self.lxc.dump() if self.lxc is not None else []

    def _entries(self, endpoint_id: int) -> list[EndpointInfo]:
        """The endpoints map's entries of an endpoint: from the devices this process attached it
        to, else (attached by an earlier process) by reading the whole map."""
        known = self._devices.get(endpoint_id)
        if known:
            found = [e for e in map(self.endpoints.get, sorted(known))
                     if e is not None and e.endpoint_id == endpoint_id]
            if found:
                return found
        return self.endpoints.by_endpoint(endpoint_id)

    def _set_flags(self, endpoint_id: int, set_: EndpointFlags, clear: EndpointFlags) -> None:
        for e in self._entries(endpoint_id):
            self.endpoints.set(e._replace(flags=(e.flags & ~clear) | set_))

    def set_audit(self, endpoint_id: int, on: bool) -> None:
        """Policy audit mode: drops become allows flagged ``audited`` in events."""
        f = EndpointFlags.AUDIT
        self._set_flags(endpoint_id, f if on else EndpointFlags(0), EndpointFlags(0) if on else f)

    def set_enforcement(self, endpoint_id: int, ingress: bool, egress: bool) -> None:
        on = EndpointFlags(0)
        if ingress:
            on |= EndpointFlags.ENFORCE_INGRESS
        if egress:
            on |= EndpointFlags.ENFORCE_EGRESS
        self._set_flags(endpoint_id, on, EndpointFlags.enforcing() & ~on)

    def _fail_closed(self, endpoint_id: int) -> None:
        self._synced.discard(endpoint_id)
        self._installed.pop(endpoint_id, None)  # unknown now: the next sync re-reads the kernel
        self._unknown.add(endpoint_id)
        # if even this fails there is nothing more to do; the caller gets the original error
        with contextlib.suppress(BpfError):
            self._set_flags(endpoint_id, EndpointFlags(0), EndpointFlags.POLICY_READY)

    # -- policy ----------------------------------------------------------------------------------
    def installed(self, endpoint_id: int) -> dict[Key, tuple[int, ...]]:
        """The endpoint's entries as the kernel holds them: read in one pass over the whole map the
        first time (so a restarted process reconciles what is pinned), then tracked."""
        cur = self._installed.get(endpoint_id)
        if cur is not None:
            return cur
        if not self._all_read:
            for e in self.policy.dump():
                self._installed.setdefault(e.endpoint_id, {})[e.key] = self._kernel_value(e)
            self._all_read = True
            self._unknown.clear()
        elif endpoint_id in self._unknown:  # after a failed sync: what did land is unknown
            entries = self.policy.dump(endpoint_id)
            self._installed[endpoint_id] = {e.key: self._kernel_value(e) for e in entries}
            self._unknown.discard(endpoint_id)
        return self._installed.setdefault(endpoint_id, {})

    @staticmethod
    def _kernel_value(e: policymap.PolicyMapEntry) -> tuple[int, ...]:
        entry = Entry(e.deny, frozenset(), e.proxy_port, e.proxy_priority, e.auth_type)
        return _value_tuple(policymap.make_value(e.key, entry, e.cookie))

    def _check_size(self, endpoint_id: int, size: int) -> None:
        if size > self.max_entries_per_endpoint:
            self._fail_closed(endpoint_id)
            raise PolicyMapFullError(endpoint_id, f"policy needs {size} entries, the limit is "
                                                  f"{self.max_entries_per_endpoint} per endpoint")

    def _desired(self, endpoint_id: int, mapstate: Mapping[Key, Entry]) -> dict[Key, tuple[int, ...]]:
        """Kernel values of the entries (validated; their rule cookies allocated and saved)."""
        try:
            out = {k: _value_tuple(policymap.make_value(k, e, self.cookies.cookie_for(e.rules)))
                   for k, e in mapstate.items()}
            for k in mapstate:
                policymap.make_key(endpoint_id, k)
        except ValueError as e:
            self._fail_closed(endpoint_id)
            raise SyncError(endpoint_id, "invalid policy key", e) from e
        self.cookies.save()  # before the kernel can report a cookie
        return out

    def _apply(self, endpoint_id: int, phases: list[Phase[tuple[int, ...]]], batch: bool) -> SyncStats:
        cur = self.installed(endpoint_id)
        up = dele = 0
        for ph in phases:
            try:
                if batch and len(ph.upserts) > 1:
                    self._batch_upsert(endpoint_id, ph.upserts)
                else:
                    for k, v in ph.upserts.items():
                        self.policy.m.update(policymap.make_key(endpoint_id, k), PolicyValue(*v, 0))
                if batch and len(ph.deletes) > 1:
                    self.policy.delete_many(endpoint_id, ph.deletes)
                else:
                    for k in ph.deletes:
                        self.policy.delete(endpoint_id, k)
            except BpfError as e:
                self._fail_closed(endpoint_id)
                raise SyncError(endpoint_id, f"policy sync failed in phase '{ph.name}'", e) from e
            cur.update(ph.upserts)
            for k in ph.deletes:
                cur.pop(k, None)
            up += len(ph.upserts)
            dele += len(ph.deletes)
        return SyncStats(up, dele)

    def _batch_upsert(self, endpoint_id: int, items: dict[Key, tuple[int, ...]]) -> None:
        n = len(items)
        keys = (policymap.PolicyKey * n)(*(policymap.make_key(endpoint_id, k) for k in items))
        vals = (PolicyValue * n)(*(PolicyValue(*v, 0) for v in items.values()))
        self.policy.m.update_batch(keys, vals, n)

    def _mark_ready(self, endpoint_id: int) -> None:
        self._synced.add(endpoint_id)
        self._set_flags(endpoint_id, EndpointFlags.POLICY_READY, EndpointFlags(0))

    def set_policy(self, endpoint_id: int, mapstate: MapState) -> SyncStats:
        """Full sync: make the kernel hold exactly ``mapstate`` for the endpoint (batch ops), then
        mark it ready. Reconciles whatever is pinned (e.g. after a restart) in the safe order."""
        self._coll()
        self._check_size(endpoint_id, len(mapstate))
        desired = self._desired(endpoint_id, mapstate)
        stats = self._apply(endpoint_id, plan(self.installed(endpoint_id), desired, _is_deny), batch=True)
        self._mark_ready(endpoint_id)
        return stats

    def _diff_phases(self, endpoint_id: int, old: MapState, new: MapState) -> list[Phase[tuple[int, ...]]]:
        self._check_size(endpoint_id, len(new))
        get = old.get
        changed = {k: e for k, e in new.items() if get(k) != e}
        stale = {k: e.deny for k, e in old.items() if k not in new}
        return phases(self._desired(endpoint_id, changed), stale, _is_deny)

    def apply_diff(self, endpoint_id: int, old: MapState, new: MapState) -> SyncStats:
        """Incremental change old → new (the caller's view of what is installed) with single
        updates in the safe order; the work is proportional to the difference."""
        self._coll()
        return self._apply(endpoint_id, self._diff_phases(endpoint_id, old, new), batch=False)

    def remove_policy(self, endpoint_id: int) -> SyncStats:
        """Delete the endpoint's entries (its traffic then hits default deny)."""
        return self._apply(endpoint_id, plan(self.installed(endpoint_id), {}, _is_deny), batch=True)

    def policy_entries(self, endpoint_id: int | None = None) -> list[policymap.PolicyMapEntry]:
        return self.policy.dump(endpoint_id)

    def rules_for(self, cookie: int) -> frozenset[RuleRef] | None:
        return self.cookies.rules_for(cookie)

    # -- identities ------------------------------------------------------------------------------
    def upsert_ipcache(self, prefix: str, identity: int) -> None:
        self._coll()
        self.ipcache.upsert(prefix, identity)

    def delete_ipcache(self, prefix: str) -> bool:
        self._coll()
        return self.ipcache.delete(prefix)

    def sync_ipcache(self, entries: Mapping[str, int]) -> None:
        """Full sync of the ipcache (batch insert, then delete prefixes no longer wanted)."""
        import ipaddress

        want = {str(ipaddress.ip_network(p, strict=False)): i for p, i in entries.items()}
        self.ipcache.upsert_many(list(want.items()))
        for e in self.ipcache.dump():
            if e.prefix not in want:
                self.ipcache.delete(e.prefix)

    def update_identity(self, prefixes: Iterable[str], identity: int,
                        diffs: Mapping[int, tuple[MapState, MapState]],
                        endpoint_id: int | None = None) -> None:
        """A workload changed identity: its prefixes move to ``identity`` and the policies of the
        endpoints in ``diffs`` change old → new. Upserts of every endpoint go first, then the
        ipcache (and the local endpoint's own identity, if ``endpoint_id``), then the deletes."""
        self._coll()
        plans: dict[int, list[Phase[tuple[int, ...]]]] = {}
        for ep, (old, new) in diffs.items():
            plans[ep] = self._diff_phases(ep, old, new)
        for ep, phases in plans.items():
            self._apply(ep, phases[:2], batch=False)
        for p in prefixes:
            self.ipcache.upsert(p, identity)
        if endpoint_id is not None:
            for e in self._entries(endpoint_id):
                self.endpoints.set(e._replace(identity=identity))
        for ep, phases in plans.items():
            self._apply(ep, phases[2:], batch=False)

    # -- services ------------------------------------------------------------------------------
    def sync_services(self, want: Mapping[Frontend, Sequence[Backend]]) -> None:
        """Full sync of the service frontends and their backends (the datapath's DNAT)."""
        self._coll()
        # the lookups go on before the first frontend is written and off after the last is gone:
        # a frontend is never in the maps while the datapath skips them
        if want:
            if not self.config_map.services():
                self.config_map.set(self.config, services=True)
            self.lb.sync(want)
            return
        self.lb.sync(want)
        if self.config_map.services():
            self.config_map.set(self.config, services=False)

    def service_frontend(self, src: str, dst: str, sport: int, dport: int,
                         proto: int) -> tuple[str, int] | None:
        """The ClusterIP:port the connection (client → backend tuple) was translated from, if any
        (the flow pipeline's ``destination_service``)."""
        return self.lb.frontend_of(src, dst, sport, dport, proto) if self.coll is not None else None

    def services(self) -> dict[Frontend, tuple[Backend, ...]]:
        self._coll()
        return self.lb.dump()

    def set_dns_redirect(self, endpoint_id: int, proxy: tuple[str, int] | None) -> None:
        """Redirect the endpoint's allowed DNS queries to the DNS proxy at ``proxy`` (None: stop)."""
        self._coll()
        self.dns.set_redirect(endpoint_id, proxy)

    def dns_redirects(self) -> dict[int, tuple[str, int]]:
        """endpoint id -> the DNS proxy its queries go to, as the map holds them."""
        self._coll()
        return self.dns.redirects()

    def dns_origin(self, client: tuple[str, int], proxy: tuple[str, int],
                   proto: int = 17) -> tuple[str, int] | None:
        """The DNS server a redirected query from ``client`` (UDP 17 or TCP 6) was addressed to."""
        self._coll()
        return self.dns.origin(client, proxy, proto)

    # -- conntrack, events, metrics ----------------------------------------------------------------
    def flush_ct(self, endpoint_id: int | None = None,
                 predicate: Callable[[CtEntry], bool] | None = None) -> int:
        """Delete conntrack entries (of an endpoint, and/or matching ``predicate``)."""
        self._coll()
        return self.ct.flush(lambda e: (endpoint_id is None or e.endpoint_id == endpoint_id)
                             and (predicate is None or predicate(e)))

    def conntrack_gc(self) -> int:
        """Delete the expired conntrack entries; how many."""
        self._coll()
        return self.ct.gc()

    def conntrack_peers(self) -> set[str]:
        """Addresses that are a peer of a live (unexpired) conntrack entry."""
        self._coll()
        return {ip for e in self.ct.dump() if e.expires_in_s > 0 for ip in (e.src, e.dst)}

    def read_events(self, callback: Callable[[PolicyEvent], None], timeout_ms: int = 100) -> int:
        """Poll the event ring buffer once; ``callback`` gets each decoded event."""
        if self._reader is None:
            self._sink: Callable[[PolicyEvent], None] = callback
            self._reader = EventsReader(self._coll().maps["cilia_events"], lambda ev: self._sink(ev))
        self._sink = callback
        return self._reader.poll(timeout_ms)

    def metrics(self) -> list[MetricRow]:
        self._coll()
        return self.metrics_map.dump()

    # -- teardown --------------------------------------------------------------------------------
    def teardown(self) -> None:
        """Detach from every registered device, remove the clsact qdiscs, pins and cookie table."""
        if self.coll is not None:
            devices = [e.ifindex for e in self.endpoints.dump()]
            self.close()
        else:
            # from the pins alone: no program load (and no compiler) needed to clean up
            try:
                pinned = open_pinned(self.pin_root, self.state_dir)
            except NoDatapathError:
                devices = []
            else:
                devices = [e.ifindex for e in pinned.endpoints.dump()]
                pinned.close()
        for ifindex in devices:
            loader.detach(ifindex, destroy_qdisc=True)
        loader.unpin_all(self.pin_root)
        (self.state_dir / "cookies.json").unlink(missing_ok=True)
        self._installed.clear()
        self._all_read = False
