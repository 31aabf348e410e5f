"""A simulated node for toFQDNs tests without a kernel: the real Reconciler, FqdnState and DNS
cache on the memory store and the simulated datapath, with an injected clock; and the objects the
tests apply to it (a client pod, a DNS rule, toFQDNs policies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cilia.agent.datapaths import SimNodeDatapath
from cilia.agent.endpoints import EndpointTable
from cilia.agent.fqdn import FqdnState, expire, restore
from cilia.agent.reconcile import Reconciler
from cilia.agent.runtime import AddressOnlyRuntime
from cilia.lab.ipam import Ipam
from cilia.store import Store, key_for_object, open_store


def _obj(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    api = "cilium.io/v2" if kind == "CiliumNetworkPolicy" else "v1"
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "default",
                                                         "labels": labels or {}}, "spec": spec}


DNS_RULE = {"toCIDR": ["198.19.0.53/32"], "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}],
                                                        "rules": {"dns": [{"matchPattern": "*"}]}}]}


def policy(*fqdns: dict[str, str], extra: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return _obj("CiliumNetworkPolicy", "fqdn", {
        "endpointSelector": {"matchLabels": {"app": "client"}},
        "egress": [DNS_RULE, {"toFQDNs": list(fqdns)}, *extra]})


POLICY = policy({"matchName": "api.example.com"}, {"matchPattern": "*.example.com"})
CLIENT = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": "default",
                                                          "labels": {"app": "client"}}, "spec": {}}


class Node:
    """Store, pods and datapath survive :meth:`restart` (as pins and netns do); the reconciler and
    the fqdn state are rebuilt, the latter from its file."""

    def __init__(self, tmp: Path, min_ttl: int = 0) -> None:
        self.tmp, self.min_ttl = tmp, min_ttl
        self.store: Store = open_store(backend="memory")
        ipam = Ipam(self.store, 0)
        self.runtime = AddressOnlyRuntime(tmp / "p.json", ipam.allocate, ipam.release_owner, ipam.gateway)
        self.dp = SimNodeDatapath()
        self.now = 1000.0
        self.restart()

    def restart(self) -> None:
        eps = EndpointTable(self.tmp / "eps.json")
        self.rec = Reconciler(self.store, self.runtime, self.dp, endpoints=eps)
        self.state = self.rec.fqdn = FqdnState.for_node(self.tmp, self.min_ttl)
        self.state.clock = lambda: self.now
        restore(self.rec, self.state)
        self.watch = self.store.watch(self.rec.start() + 1)

    def apply(self, *objs: dict[str, Any]) -> None:
        for obj in objs:
            self.store.put(key_for_object(obj, "default"), obj)
        for _ in range(5):
            evs = self.watch.drain()
            if not evs:
                return
            self.rec.handle(evs)

    def allowed(self, ip: str, port: int = 80) -> bool:
        c = next(e for e in self.rec.endpoints if e.pod.name == "client")
        return self.dp.flow({c.ip: c.id}, c.ip, ip, 6, port).allowed

    def labels(self, ip: str) -> list[str] | None:
        ident = self.state.identities.get(ip)
        return None if ident is None else self.rec.allocator.identities()[ident].strings()

    def expire(self, at: float, in_use: set[str] = frozenset()) -> dict[str, int | None]:  # type: ignore[assignment]
        self.now = at
        return expire(self.rec, self.state, in_use=lambda: set(in_use))
