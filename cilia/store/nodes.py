"""Node registry and the shared ipcache: which nodes are up, and which IP has which identity.

Each agent joins with one etcd lease (:func:`join`): its node record and its endpoints'
IP → identity entries are attached to it (keys in :mod:`cilia.store.etcd_keys`), so when the
agent stops renewing the lease, etcd deletes them all in one revision and every other node's
:class:`ClusterView` drops them. A view merges the other nodes' entries with one entry per remote
node's underlay address carrying the reserved ``remote-node`` identity, which is what a node's
ipcache needs to enforce policy on traffic from elsewhere (Cilium's kvstore ipcache).

Lab addressing (:meth:`NodeInfo.lab`): node ``i`` (0‥14) owns pods ``198.18.<16·i>.0/20`` (as
:mod:`cilia.lab.ipam`) and the underlay address ``198.18.254.<i + 1>`` (``.0`` would be the
network address of the lab's underlay /24).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any, NamedTuple, Protocol

from cilia.store.backend import Backend, RawEvent, RawOp
from cilia.store.errors import CompactedError, StoreError
from cilia.store.etcd_keys import (
    IPCACHE_PREFIX,
    NODES_PREFIX,
    ipcache_key,
    node_key,
    split,
)
from cilia.store.records import EventType

# Cilium's reserved identity of every other node (pkg/identity/numericidentity.go); the store
# layer sits below cilia.identity, so the number is repeated here.
REMOTE_NODE_IDENTITY = 6
LAB_NODES = 15
DEFAULT_TTL = 15


class NodeInfo(NamedTuple):
    """A node as the cluster sees it."""

    name: str
    index: int
    address: str  # underlay address other nodes reach it at
    pod_cidr: str

    @classmethod
    def lab(cls, name: str, index: int) -> NodeInfo:
        """Lab addressing for node ``index`` (module docstring)."""
        if not 0 <= index < LAB_NODES:
            raise StoreError(f"node index {index} out of range 0..{LAB_NODES - 1}")
        return cls(name, index, f"198.18.254.{index + 1}", f"198.18.{16 * index}.0/20")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index, "address": self.address, "podCIDR": self.pod_cidr}

    @classmethod
    def from_json(cls, v: Mapping[str, Any]) -> NodeInfo:
        return cls(str(v["name"]), int(v["index"]), str(v["address"]), str(v["podCIDR"]))


class IPCacheEntry(NamedTuple):
    """One address and its security identity; ``pod`` is ``ns/name`` (empty for a node address)."""

    ip: str
    identity: int
    node: str
    pod: str = ""


class IPCacheChange(NamedTuple):
    """An address appeared (``old`` None), changed, or went away (``new`` None)."""

    ip: str
    old: IPCacheEntry | None
    new: IPCacheEntry | None


class LeasedBackend(Protocol):
    """What registration needs beyond :class:`Backend`: puts attached to a lease (etcd)."""

    def commit(self, ops: list[RawOp], leases: Mapping[str, int] | None = None) -> int: ...


class LeaseLike(Protocol):
    id: int
    alive: bool

    def revoke(self) -> None: ...


def _dump(v: Mapping[str, Any]) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


class NodeRegistration:
    """This node's record and published endpoints, all on the node's lease."""

    def __init__(self, backend: LeasedBackend, node: NodeInfo, lease: LeaseLike) -> None:
        self.backend = backend
        self.node = node
        self.lease = lease
        self._published: dict[str, IPCacheEntry] = {}
        self._lock = threading.Lock()

    def register(self) -> int:
        """Write (or rewrite) the node record; returns the store revision."""
        IPv4Address(self.node.address)
        IPv4Network(self.node.pod_cidr)
        key = node_key(self.node.name)
        op = RawOp("put", key, _dump(self.node.to_json()))
        return self.backend.commit([op], leases={key: self.lease.id})

    def publish(self, ip: str, identity: int, pod: str = "") -> int:
        """Publish (or update) one local endpoint's address and identity."""
        return self.publish_many([(ip, identity, pod)])

    def publish_many(self, entries: Iterable[tuple[str, int, str]]) -> int:
        """Publish several endpoints in one transaction."""
        ops: list[RawOp] = []
        leases: dict[str, int] = {}
        new: dict[str, IPCacheEntry] = {}
        for ip, identity, pod in entries:
            addr = str(IPv4Address(ip))
            entry = IPCacheEntry(addr, int(identity), self.node.name, pod)
            key = ipcache_key(self.node.name, addr)
            ops.append(RawOp("put", key, _dump(entry._asdict())))
            leases[key] = self.lease.id
            new[addr] = entry
        if not ops:
            return self.backend.commit([])
        rev = self.backend.commit(ops, leases=leases)
        with self._lock:
            self._published.update(new)
        return rev

    def withdraw(self, ip: str) -> int:
        """Remove one local endpoint's entry (missing is fine)."""
        addr = str(IPv4Address(ip))
        rev = self.backend.commit([RawOp("delete", ipcache_key(self.node.name, addr), flag=True)])
        with self._lock:
            self._published.pop(addr, None)
        return rev

    def published(self) -> dict[str, IPCacheEntry]:
        with self._lock:
            return dict(self._published)

    def rejoin(self, lease: LeaseLike) -> int:
        """After the old lease was lost: attach the record and every entry to ``lease`` again."""
        self.lease = lease
        self.register()
        entries = [(e.ip, e.identity, e.pod) for e in self.published().values()]
        return self.publish_many(entries)

    def leave(self) -> None:
        """Revoke the lease: the record and every entry disappear at once."""
        self.lease.revoke()


def join(backend: Any, node: NodeInfo, ttl: int = DEFAULT_TTL) -> NodeRegistration:
    """Grant a lease of ``ttl`` seconds on an etcd backend and register ``node`` with it."""
    reg = NodeRegistration(backend, node, backend.grant_lease(ttl))
    reg.register()
    return reg


class ClusterView:
    """The other nodes and their endpoints, merged into one remote ipcache, kept by a watch.

    :meth:`poll` applies what changed since the last call; :meth:`follow` does so on a thread.
    An address published by two nodes (a pod that moved) maps to the newest entry.
    """

    def __init__(self, backend: Backend, local_node: str = "") -> None:
        self.backend = backend
        self.local_node = local_node
        self._nodes: dict[str, NodeInfo] = {}
        self._entries: dict[tuple[str, str], tuple[int, IPCacheEntry]] = {}  # (node, ip) -> (rev, entry)
        self._merged: dict[str, IPCacheEntry] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._relist()

    def nodes(self) -> dict[str, NodeInfo]:
        """Every registered node (this one included), by name."""
        with self._lock:
            return dict(self._nodes)

    def ipcache(self) -> dict[str, IPCacheEntry]:
        """The merged remote ipcache, by address."""
        with self._lock:
            return dict(self._merged)

    def poll(self, timeout: float = 0.0) -> list[IPCacheChange]:
        """Apply new events (waiting up to ``timeout`` for some) and return the ipcache changes."""
        with self._lock:
            try:
                events = self._events()
                if not events and timeout > 0:
                    self.backend.wait(self._next - 1, timeout)
                    events = self._events()
            except CompactedError:
                self._relist_locked()
                return self._remerge()
            for ev in events:
                self._apply(ev.type, ev.key, ev.value, ev.revision)
            return self._remerge()

    def follow(self, callback: Callable[[list[IPCacheChange]], None],
               step: float = 0.5) -> Callable[[], None]:
        """Call ``callback`` with each batch of changes from a background thread; returns ``stop``."""
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                try:
                    changes = self.poll(step)
                except StoreError:
                    stop.wait(step)  # etcd unreachable: keep the last view, try again
                    continue
                if changes:
                    callback(changes)

        t = threading.Thread(target=run, name="cilia-cluster-view", daemon=True)
        t.start()

        def halt() -> None:
            stop.set()
            t.join(step + 20)

        return halt

    # ------------------------------------------------------------------ internals

    def _events(self) -> list[RawEvent]:
        rev = self.backend.revision()
        out = [e for p in (NODES_PREFIX, IPCACHE_PREFIX) for e in self.backend.events(p, self._next)]
        out.sort(key=lambda e: e.revision)
        self._next = max(rev, self._next - 1) + 1
        return out

    def _relist(self) -> None:
        with self._lock:
            self._relist_locked()
            self._remerge()

    def _relist_locked(self) -> None:
        rev_n, nodes = self.backend.range(NODES_PREFIX)
        rev_i, entries = self.backend.range(IPCACHE_PREFIX)
        self._nodes.clear()
        self._entries.clear()
        for r in nodes:
            self._apply(EventType.PUT, r.key, r.value, r.mod_revision)
        for r in entries:
            self._apply(EventType.PUT, r.key, r.value, r.mod_revision)
        # Replaying events between the two reads is harmless: each sets or deletes one key.
        self._next = min(rev_n, rev_i) + 1

    def _apply(self, kind: EventType, key: str, value: str, rev: int) -> None:
        if key.startswith(NODES_PREFIX):
            (name,) = split(key, NODES_PREFIX)
            if kind is EventType.PUT:
                self._nodes[name] = NodeInfo.from_json(json.loads(value))
            else:
                self._nodes.pop(name, None)
        elif key.startswith(IPCACHE_PREFIX):
            node, ip = split(key, IPCACHE_PREFIX)
            if kind is EventType.PUT:
                self._entries[(node, ip)] = (rev, IPCacheEntry(**json.loads(value)))
            else:
                self._entries.pop((node, ip), None)

    def _remerge(self) -> list[IPCacheChange]:
        merged: dict[str, IPCacheEntry] = {}
        newest: dict[str, int] = {}
        for name, info in self._nodes.items():
            if name != self.local_node:
                merged[info.address] = IPCacheEntry(info.address, REMOTE_NODE_IDENTITY, name)
        for (node, ip), (rev, entry) in self._entries.items():
            # Entries of an unregistered node are not trusted: its lease is gone or not there yet.
            if node == self.local_node or node not in self._nodes:
                continue
            if ip not in newest or rev > newest[ip]:
                newest[ip] = rev
                merged[ip] = entry
        old = self._merged
        changes = [IPCacheChange(ip, old.get(ip), merged.get(ip))
                   for ip in sorted(old.keys() | merged.keys()) if old.get(ip) != merged.get(ip)]
        self._merged = merged
        return changes

