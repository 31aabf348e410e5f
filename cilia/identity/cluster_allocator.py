"""Identity allocation shared by every node of a cluster, on the etcd store.

Same label set → same number on every node; a new label set gets a free number chosen at
random in the cluster-local range ``[256, 65535]`` and claimed with one create-if-absent
transaction on both its by-labels and by-id keys (:func:`cilia.store.identities.allocate_ops`;
etcd-notes.md: a shared counter livelocks under contention). The same transaction writes this
node's reference ``/cilia/cluster/v1/identityrefs/<id>/<node>`` attached to the node's lease, so
a node that dies stops holding identities when its lease expires. A transaction that timed out
may have been applied, so every retry first re-reads by-labels: it then finds its own number.

An identity no node references is deleted by :meth:`ClusterAllocator.collect_garbage` (any agent
may run it) once it has been seen unreferenced and unchanged for ``grace`` seconds, in a
transaction that also requires its reference prefix to be still empty: a node attaching a
reference at that moment either makes the delete fail or, having lost, sees its own reference
transaction fail and allocates again. This mirrors Cilium's kvstore allocator (master key per
id, one "slave" key per node using it, GC in two rounds).

As in Cilium, reserved identities and local-scope label sets (only ``cidr``/``fqdn``/
``cidrgroup``/``reserved`` labels) never go to etcd: each node numbers them itself
(:class:`~cilia.identity.allocator.LocalAllocator`, ``0x01000001`` …), since their meaning is
local to the node's selectors and they are never carried between nodes.

Every node learns identities allocated elsewhere from a watch of the ``identities`` kind;
subscribers get ADDED/REMOVED events for them, like those of the local allocator.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from cilia.identity.allocator import (
    EventKind,
    IdentityEvent,
    IdentityExhaustedError,
    LocalAllocator,
    Subscriber,
    is_local_scope,
    reserved_identity_for,
)
from cilia.identity.errors import IdentityError
from cilia.identity.labels import Labels
from cilia.store import CompactedError, ConflictError, Kind, Store, StoreError
from cilia.store import identities as stored
from cilia.store.backend import RawOp
from cilia.store.etcd import LeaseNotFoundError
from cilia.store.etcd_keys import REFS_PREFIX, ref_key, refs_prefix, split
from cilia.store.records import Event, EventType, Expect, Op, Put

_log = logging.getLogger(__name__)

MIN_ID = 256
MAX_ID = 65535
DEFAULT_GRACE = 300.0


class ClusterAllocatorError(IdentityError, StoreError):
    """An allocation could not be completed (etcd unavailable for too long, or no free number)."""


class LeaseLike(Protocol):
    id: int
    alive: bool


def _raw_ops(ops: list[Op]) -> list[RawOp]:
    out = []
    for op in ops:
        if isinstance(op, Expect):
            out.append(RawOp("expect", op.key.path(), revision=op.mod_revision))
        elif isinstance(op, Put):
            value = json.dumps(op.value, sort_keys=True, separators=(",", ":"))
            out.append(RawOp("put", op.key.path(), value))
        else:
            out.append(RawOp("delete", op.key.path(), flag=op.missing_ok))
    return out


class ClusterAllocator:
    """An :class:`~cilia.identity.allocator.IdentityAllocator` shared through etcd (module docstring).

    ``store`` must be on the etcd backend (:func:`cilia.store.etcd.open_etcd_store`); ``lease``
    is the node's lease (the one its registration uses). Call :meth:`close` when done.
    """

    def __init__(self, store: Store, node: str, lease: LeaseLike, *, grace: float = DEFAULT_GRACE,
                 rng: random.Random | None = None, attempts: int = 200, retry_for: float = 30.0) -> None:
        self.store = store
        self.backend: Any = store.backend
        if not hasattr(self.backend, "commit_if_prefix_empty"):
            raise ClusterAllocatorError("the cluster allocator needs the etcd store backend")
        self.node = node
        self.lease = lease
        self.grace = grace
        self._rng = rng or random.Random()
        self._attempts = attempts
        self._retry_for = retry_for
        self._local = LocalAllocator()
        self._lock = threading.RLock()
        self._synced = threading.Condition(self._lock)
        self._alloc_lock = threading.Lock()
        self._by_id: dict[int, Labels] = {}
        self._by_labels: dict[Labels, int] = {}
        self._revs: dict[int, int] = {}  # store revision each identity was written at
        self._refs: dict[int, int] = {}  # this node's uses per identity
        self._used: dict[int, Labels] = {}  # labels of those (kept if the identity vanishes)
        self._stale: dict[int, tuple[float, int]] = {}  # GC: first seen unreferenced, mod revision
        self._subscribers: list[Subscriber] = []
        self._next_revision = 0
        self._closed = threading.Event()
        with self._lock:
            self._relist()
        self._thread = threading.Thread(target=self._follow, name=f"cilia-idwatch-{node}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ queries

    def lookup(self, identity: int) -> Labels | None:
        with self._lock:
            found = self._by_id.get(identity)
        return found if found is not None else self._local.lookup(identity)

    def by_labels(self, labels: Labels) -> int | None:
        with self._lock:
            found = self._by_labels.get(labels)
        return found if found is not None else self._local.by_labels(labels)

    def identities(self) -> Mapping[int, Labels]:
        """Every identity this node knows: reserved, its local-scope ones, and the cluster's."""
        with self._lock:
            return {**self._local.identities(), **self._by_id}

    def references(self) -> dict[int, int]:
        """This node's reference count per cluster identity."""
        with self._lock:
            return dict(self._refs)

    # ------------------------------------------------------------------ allocation

    def allocate(self, labels: Labels) -> int:
        """The identity of ``labels``; the cluster's if it has one, else a newly claimed number."""
        if reserved_identity_for(labels) is not None or is_local_scope(labels):
            with self._lock:
                return self._local.allocate(labels)
        with self._alloc_lock:
            with self._lock:
                n = self._by_labels.get(labels)
                if n is not None and n in self._refs:
                    self._refs[n] += 1
                    return n
            n = self._claim(labels)
            with self._lock:
                self._refs[n] = self._refs.get(n, 0) + 1
                self._used[n] = labels
                self._learn(n, labels)
            return n

    def _claim(self, labels: Labels) -> int:
        """Refer to the cluster's identity of ``labels``, creating it if there is none.

        One transaction in the common cases: a label set this node knows from the watch gets
        its reference guarded by the by-labels key's revision; an unknown one is created at
        once (create-if-absent). A conflict or a timeout re-reads by-labels before trying again.
        """
        strs = labels.strings()
        lkey = stored.labels_key(strs)
        tried: set[int] = set()
        deadline = time.monotonic() + self._retry_for
        last: Exception | None = None
        with self._lock:
            n0 = self._by_labels.get(labels)
            known = (n0, self._revs[n0]) if n0 is not None and n0 in self._revs else None
        reread = False
        for _ in range(self._attempts):
            if time.monotonic() > deadline:
                break
            fresh = None
            try:
                if reread:
                    reread = False
                    rec = self.store.get(lkey)
                    if rec is not None:
                        if rec.value["labels"] != strs:
                            raise ClusterAllocatorError(f"{lkey}: hash collision between {strs} and "
                                                        f"{rec.value['labels']}")
                        known = (int(rec.value["id"]), rec.mod_revision)
                if known is not None:
                    n, rev = known
                    known = None
                    # Refer to it only while it still exists unchanged (GC may be deleting it).
                    self._commit([RawOp("expect", lkey.path(), revision=rev)], n)
                    return n
                fresh = self._pick(tried)
                rev = self._commit(_raw_ops(stored.allocate_ops(fresh, strs)), fresh)
                with self._lock:
                    self._revs[fresh] = rev
                return fresh
            except ConflictError as e:
                last = e
                reread = True
                if fresh is not None:
                    tried.add(fresh)
            except ClusterAllocatorError:
                raise
            except LeaseNotFoundError as e:
                raise ClusterAllocatorError(f"node {self.node}: its lease {self.lease.id:x} is gone; "
                                            f"grant a new one and call relink()") from e
            except StoreError as e:  # unavailable: the txn may have been applied; re-read first
                last = e
                reread = True
                time.sleep(0.05)
        raise ClusterAllocatorError(f"could not allocate an identity for {strs}: {last}")

    def _commit(self, ops: list[RawOp], n: int) -> int:
        rk = ref_key(n, self.node)
        return int(self.backend.commit([*ops, RawOp("put", rk, json.dumps({"node": self.node}))],
                                       leases={rk: self.lease.id}))

    def _pick(self, tried: set[int]) -> int:
        with self._lock:
            taken = self._by_id.keys()
            if len(taken) + len(tried) >= MAX_ID - MIN_ID + 1:
                raise IdentityExhaustedError(f"no free identity left in {MIN_ID}..{MAX_ID}")
            while True:
                n = self._rng.randint(MIN_ID, MAX_ID)
                if n not in taken and n not in tried:
                    return n

    def release(self, labels: Labels) -> bool:
        """Drop one of this node's references; at the last one, remove the node's reference key.
        Returns True then. The identity itself goes later, by :meth:`collect_garbage`."""
        if reserved_identity_for(labels) is not None or is_local_scope(labels):
            with self._lock:
                return self._local.release(labels)
        with self._alloc_lock:
            with self._lock:
                n = self._by_labels.get(labels)
                if n is None or n not in self._refs:
                    return False
                self._refs[n] -= 1
                if self._refs[n] > 0:
                    return False
                del self._refs[n]
                del self._used[n]
            self.backend.commit([RawOp("delete", ref_key(n, self.node), flag=True)])
            return True

    def relink(self, lease: LeaseLike) -> dict[int, int]:
        """After the node's lease was lost: refer again, on ``lease``, to every identity in use.
        An identity garbage-collected meanwhile gets a new number: returns ``{old: new}`` for those."""
        moved: dict[int, int] = {}
        with self._alloc_lock:
            self.lease = lease
            with self._lock:
                used = dict(self._used)
            for n, labels in sorted(used.items()):
                got = self._claim(labels)
                if got != n:
                    with self._lock:
                        self._refs[got] = self._refs.pop(n)
                        self._used[got] = self._used.pop(n)
                        self._learn(got, labels)
                    moved[n] = got
        return moved

    # ------------------------------------------------------------------ garbage collection

    def collect_garbage(self) -> list[int]:
        """One GC round: delete identities unreferenced and unchanged for ``grace`` seconds.
        Returns the numbers deleted (by this call)."""
        snap = self.store.snapshot(Kind.IDENTITIES)
        _, refs = self.backend.range(REFS_PREFIX)
        referenced = {int(split(r.key, REFS_PREFIX)[0]) for r in refs}
        now = time.monotonic()
        deleted: list[int] = []
        present = set()
        for rec in snap.records:
            n = int(rec.value["id"])
            present.add(n)
            if n in referenced:
                self._stale.pop(n, None)
                continue
            seen = self._stale.get(n)
            if seen is None or seen[1] != rec.mod_revision:
                self._stale[n] = (now, rec.mod_revision)
                continue
            if now - seen[0] < self.grace:
                continue
            lkey = stored.labels_key(rec.value["labels"])
            ops = [RawOp("expect", rec.key.path(), revision=rec.mod_revision),
                   RawOp("expect", lkey.path(), revision=rec.mod_revision),
                   RawOp("delete", rec.key.path()), RawOp("delete", lkey.path())]
            if self.backend.commit_if_prefix_empty(refs_prefix(n), ops) is not None:
                deleted.append(n)
            self._stale.pop(n, None)
        for n in list(self._stale):
            if n not in present:
                del self._stale[n]
        return sorted(deleted)

    # ------------------------------------------------------------------ events

    def subscribe(self, callback: Subscriber, replay: bool = True) -> Callable[[], None]:
        """Call ``callback`` for every identity change (local and cluster) from now on; with
        ``replay``, first an ADDED event for every known identity. Returns ``unsubscribe``.
        Callbacks run on the allocating thread or the watch thread, under the allocator's lock."""
        with self._lock:
            if replay:
                for n, labels in sorted(self.identities().items()):
                    callback(IdentityEvent(EventKind.ADDED, n, labels))
            self._subscribers.append(callback)
            stop_local = self._local.subscribe(callback, replay=False)

        def unsubscribe() -> None:
            with self._lock:
                stop_local()
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until the watch has applied everything committed before this call."""
        target = self.store.revision
        with self._synced:
            return self._synced.wait_for(lambda: self._next_revision > target, timeout)

    def _learn(self, n: int, labels: Labels) -> None:
        old = self._by_id.get(n)
        if old == labels:
            return
        if old is not None:
            self._forget(n)
        self._by_id[n] = labels
        self._by_labels[labels] = n
        self._emit(IdentityEvent(EventKind.ADDED, n, labels))

    def _forget(self, n: int) -> None:
        self._revs.pop(n, None)
        labels = self._by_id.pop(n, None)
        if labels is None:
            return
        if self._by_labels.get(labels) == n:
            del self._by_labels[labels]
        self._emit(IdentityEvent(EventKind.REMOVED, n, labels))

    def _emit(self, event: IdentityEvent) -> None:
        for cb in list(self._subscribers):
            cb(event)

    def _relist(self) -> None:
        snap = self.store.snapshot(Kind.IDENTITIES)
        now = {int(r.value["id"]): Labels.parse(r.value["labels"]) for r in snap.records}
        for n in sorted(set(self._by_id) - set(now)):
            self._forget(n)
        for n, labels in sorted(now.items()):
            self._learn(n, labels)
        self._revs.update({int(r.value["id"]): r.mod_revision for r in snap.records})
        self._next_revision = snap.revision + 1
        self._synced.notify_all()

    def _apply(self, ev: Event) -> None:
        n = int(ev.value["id"])
        if ev.type is EventType.PUT:
            self._learn(n, Labels.parse(ev.value["labels"]))
            self._revs[n] = ev.revision
        elif self._by_id.get(n) is not None:
            self._forget(n)

    def _follow(self) -> None:
        watch = self.store.watch(self._next_revision, Kind.IDENTITIES)
        while not self._closed.is_set():
            try:
                events = watch.drain()
                with self._lock:
                    for ev in events:
                        self._apply(ev)
                    self._next_revision = max(self._next_revision, watch.next_revision)
                    self._synced.notify_all()
                if not events:
                    self.backend.wait(watch.next_revision - 1, 0.5)
            except CompactedError:
                with self._lock:
                    self._relist()
                watch = self.store.watch(self._next_revision, Kind.IDENTITIES)
            except StoreError as e:  # etcd unreachable: keep the cache, resume from the same revision
                _log.warning("identity watch on %s: %s", self.node, e)
                self._closed.wait(0.5)

    def close(self) -> None:
        """Stop the watch thread (references stay until the lease is revoked or expires)."""
        self._closed.set()
        self._thread.join(20)
