"""Node datapaths for the agent: the kernel one (:class:`cilia.datapath.bpf.sync.Datapath`, used as
is) and :class:`SimNodeDatapath`, which holds the same state in memory and decides packets with
:mod:`cilia.datapath.sim` (the kernel's lookup, mirrored in Python).

A :class:`SimNodeDatapath` outlives a :class:`~cilia.agent.reconcile.Reconciler` the way pinned
maps outlive an agent process, so restart recovery can be exercised without root.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from cilia.agent.interfaces import NodeDatapath
from cilia.datapath import sim
from cilia.datapath.capabilities import Capability
from cilia.datapath.ipcache import IPCache
from cilia.datapath.maps.events import PolicyEvent
from cilia.datapath.maps.lb import Backend, Frontend
from cilia.policy.mapstate import MapState
from cilia.policy.types import Entry, Key, RuleRef


class SimNodeDatapath:
    """In-memory node datapath: endpoints by ifindex, a policy per endpoint, an ipcache. The calls
    of the capabilities it lacks (no events, conntrack, service translation, DNS redirects or
    audit flags in its lookup) record what they were given and do nothing else."""

    capabilities: frozenset[Capability] = frozenset()

    def __init__(self) -> None:
        self.endpoints: dict[int, tuple[int, int]] = {}  # ifindex -> (endpoint id, identity)
        self.policies: dict[int, dict[Key, Entry]] = {}
        self.prefixes: dict[str, int] = {}
        self.audit: set[int] = set()  # endpoints in policy audit mode
        self.services: dict[Frontend, tuple[Backend, ...]] = {}
        self.redirects: dict[int, tuple[str, int]] = {}  # endpoint id -> DNS proxy
        self.local: dict[str, int] = {}  # pod address -> its device (host routing: recorded only)
        self.log: list[tuple[str, ...]] = []  # operations in order, for ordering checks

    @staticmethod
    def _norm(prefix: str) -> str:
        return str(ipaddress.ip_network(prefix, strict=False))

    def attach(self, ifindex: int, endpoint_id: int, identity: int) -> None:
        self.endpoints[ifindex] = (endpoint_id, identity)
        self.log.append(("attach", str(ifindex), str(endpoint_id), str(identity)))

    def endpoint_ids(self) -> dict[int, int]:
        return {ifindex: eid for ifindex, (eid, _) in self.endpoints.items()}

    def detach(self, ifindex: int) -> None:
        self.endpoints.pop(ifindex, None)
        self.local = {ip: i for ip, i in self.local.items() if i != ifindex}
        self.log.append(("detach", str(ifindex)))

    def set_local_endpoint(self, ip: str, ifindex: int) -> None:
        self.local[ip] = ifindex

    def set_policy(self, endpoint_id: int, mapstate: MapState | Mapping[Key, Entry]) -> None:
        self.policies[endpoint_id] = dict(mapstate.items())
        self.log.append(("set_policy", str(endpoint_id)))

    def apply_diff(self, endpoint_id: int, old: MapState, new: MapState) -> None:
        cur = self.policies.setdefault(endpoint_id, {})
        for k, _ in old.items():
            if k not in new:
                cur.pop(k, None)
        for k, e in new.items():
            cur[k] = e
        self.log.append(("apply_diff", str(endpoint_id)))

    def remove_policy(self, endpoint_id: int) -> None:
        self.policies.pop(endpoint_id, None)
        self.log.append(("remove_policy", str(endpoint_id)))

    def upsert_ipcache(self, prefix: str, identity: int) -> None:
        self.prefixes[self._norm(prefix)] = identity
        self.log.append(("ipcache", prefix, str(identity)))

    def delete_ipcache(self, prefix: str) -> None:
        self.prefixes.pop(self._norm(prefix), None)
        self.log.append(("ipcache-delete", prefix))

    def sync_ipcache(self, entries: Mapping[str, int]) -> None:
        self.prefixes = {self._norm(p): i for p, i in entries.items()}
        self.log.append(("ipcache-sync",))

    def update_identity(
        self,
        prefixes: Iterable[str],
        identity: int,
        diffs: Mapping[int, tuple[MapState, MapState]],
        endpoint_id: int | None = None,
    ) -> None:
        prefixes = list(prefixes)
        self.log.append(("update_identity", *prefixes, str(identity), str(endpoint_id)))
        for ep, (old, new) in diffs.items():
            cur = self.policies.setdefault(ep, {})
            for k, _ in old.items():
                if k not in new:
                    cur.pop(k, None)
            cur.update(new.items())
        for p in prefixes:
            self.prefixes[self._norm(p)] = identity
        if endpoint_id is not None:
            for ifindex, (eid, _) in list(self.endpoints.items()):
                if eid == endpoint_id:
                    self.endpoints[ifindex] = (eid, identity)

    def set_audit(self, endpoint_id: int, on: bool) -> None:
        (self.audit.add if on else self.audit.discard)(endpoint_id)

    def rules_for(self, cookie: int) -> frozenset[RuleRef] | None:
        return None  # no events, so no cookies

    def sync_services(self, want: Mapping[Frontend, Sequence[Backend]]) -> None:
        self.services = {f: tuple(b) for f, b in want.items()}

    def set_dns_redirect(self, endpoint_id: int, proxy: tuple[str, int] | None) -> None:
        if proxy is None:
            self.redirects.pop(endpoint_id, None)
        else:
            self.redirects[endpoint_id] = proxy

    def dns_redirects(self) -> dict[int, tuple[str, int]]:
        return dict(self.redirects)

    def dns_origin(
        self, client: tuple[str, int], proxy: tuple[str, int], proto: int = 17
    ) -> tuple[str, int] | None:
        return None  # nothing is redirected

    def conntrack_gc(self) -> int:
        return 0

    def conntrack_peers(self) -> set[str]:
        return set()

    def read_events(self, callback: Callable[[PolicyEvent], None], timeout_ms: int = 100) -> int:
        time.sleep(timeout_ms / 1000)  # no events ever come
        return 0

    def close(self) -> None:
        pass

    def teardown(self) -> None:
        self.endpoints.clear()
        self.policies.clear()
        self.prefixes.clear()
        self.audit.clear()
        self.services.clear()
        self.redirects.clear()
        self.local.clear()

    # ------------------------------------------------------------------ deciding packets

    def flow(
        self, endpoint_ips: Mapping[str, int], src_ip: str, dst_ip: str, proto: int, dport: int
    ) -> sim.FlowVerdict:
        """Decide one packet with the sim lookup; ``endpoint_ips`` maps local pod IPs to endpoint ids."""
        cache = IPCache()
        for p, i in self.prefixes.items():
            cache.upsert(p, i)
        dp = sim.Datapath(cache)
        by_id = {eid: ident for eid, ident in self.endpoints.values()}
        for ip, eid in endpoint_ips.items():
            if eid in by_id:
                dp.upsert_endpoint(sim.SimEndpoint(eid, ip, by_id[eid], self.policies.get(eid, {})))
        dp.set_services(self.services)
        return dp.flow(src_ip, dst_ip, proto, dport)


def open_bpf_datapath(pin_root: str, state_dir: Path) -> NodeDatapath:
    """The kernel datapath, opened (programs loaded, maps pinned or re-opened)."""
    from cilia.datapath.bpf.sync import Datapath  # loads libbpf: only when the kernel one is wanted

    return Datapath(pin_root=pin_root, state_dir=state_dir).open()
