"""Numeric security identities for label sets (semantics.md §3.1).

* Reserved identities 1–11 are fixed (:mod:`cilia.identity.reserved`); a label set with
  ``reserved:host`` is the host (1) whatever else it carries, ``reserved:remote-node`` is 6 (7 with
  ``reserved:kube-apiserver``), as Cilium's ``LookupReservedIdentityByLabels``.
* Label sets made only of ``cidr``/``fqdn``/``cidrgroup``/``reserved`` labels are local-scope:
  ``0x01000001`` …
* Everything else is cluster-scope: ``256`` … ``65535`` for cluster id 0
  (``cluster_id << 16`` … for others).

Numbers are deterministic: the smallest free number of the scope, so the same sequence of
allocations gives the same numbers, and :meth:`LocalAllocator.restore` reloads a previous mapping.
Allocations are reference-counted; subscribers get an :class:`IdentityEvent` for every identity
that appears or disappears, so a selector cache can follow incrementally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol, runtime_checkable

from cilia.identity.errors import IdentityError
from cilia.identity.labels import (
    SOURCE_CIDR,
    SOURCE_CIDRGROUP,
    SOURCE_FQDN,
    SOURCE_RESERVED,
    Labels,
)
from cilia.identity.reserved import (
    LABEL_HOST,
    LABEL_KUBE_APISERVER,
    LABEL_REMOTE_NODE,
    RESERVED_LABELS,
    ReservedIdentity,
)

MIN_CLUSTER_IDENTITY = 256
CLUSTER_ID_SHIFT = 16
LOCAL_SCOPE = 1 << 24
MIN_LOCAL_IDENTITY = LOCAL_SCOPE | 1
MAX_LOCAL_IDENTITY = LOCAL_SCOPE | 0xFFFFFF
_LOCAL_SOURCES = frozenset({SOURCE_CIDR, SOURCE_FQDN, SOURCE_RESERVED, SOURCE_CIDRGROUP})


class IdentityExhaustedError(IdentityError, RuntimeError):
    """No free number is left in an identity scope."""


class IdentityConflictError(IdentityError, ValueError):
    """A restored mapping that contradicts the allocator's state or ranges."""


class EventKind(StrEnum):
    ADDED = "added"
    REMOVED = "removed"


class IdentityEvent(NamedTuple):
    """An identity appeared (``ADDED``) or disappeared (``REMOVED``). A change of a reserved
    identity's labels (the host gaining ``reserved:kube-apiserver``) is REMOVED then ADDED."""

    kind: EventKind
    identity: int
    labels: Labels


Subscriber = Callable[[IdentityEvent], None]


@runtime_checkable
class IdentityAllocator(Protocol):
    """What the engine needs from an allocator; an etcd-backed one implements the same."""

    def allocate(self, labels: Labels) -> int: ...

    def release(self, labels: Labels) -> bool: ...

    def lookup(self, identity: int) -> Labels | None: ...

    def by_labels(self, labels: Labels) -> int | None: ...

    def identities(self) -> Mapping[int, Labels]: ...

    def subscribe(self, callback: Subscriber, replay: bool = True) -> Callable[[], None]: ...


def reserved_identity_for(labels: Labels) -> int | None:
    """The reserved identity a label set maps to, or None (Cilium's
    ``LookupReservedIdentityByLabels`` with node-selector labels and CIDR-selects-nodes off)."""
    if not any(lb.source == SOURCE_RESERVED for lb in labels):
        return None
    if LABEL_HOST in labels:
        return ReservedIdentity.HOST
    if LABEL_REMOTE_NODE in labels:
        if LABEL_KUBE_APISERVER in labels:
            return ReservedIdentity.KUBE_APISERVER
        return ReservedIdentity.REMOTE_NODE
    if len(labels) != 1:
        return None
    for rid, lbls in RESERVED_LABELS.items():
        if lbls == labels:
            return int(rid)
    return None


def is_local_scope(labels: Labels) -> bool:
    """True for label sets made only of cidr/fqdn/cidrgroup/reserved labels (``ScopeForLabels``)."""
    return len(labels) > 0 and all(lb.source in _LOCAL_SOURCES for lb in labels)


@dataclass
class _Range:
    """Smallest-free-number allocation within [low, high]."""

    low: int
    high: int
    next_fresh: int = 0
    freed: list[int] = field(default_factory=list)
    used: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.next_fresh = self.low

    def take(self) -> int:
        while self.freed:
            import heapq  # here: only a range that got identities back has a heap (start-up, issue 15)

            n = heapq.heappop(self.freed)
            if n not in self.used:
                self.used.add(n)
                return n
        while self.next_fresh in self.used:
            self.next_fresh += 1
        if self.next_fresh > self.high:
            raise IdentityExhaustedError(f"no free identity left in {self.low}..{self.high}")
        n = self.next_fresh
        self.used.add(n)
        self.next_fresh += 1
        return n

    def claim(self, n: int) -> None:
        self.used.add(n)

    def give_back(self, n: int) -> None:
        self.used.discard(n)
        import heapq

        heapq.heappush(self.freed, n)

    def __contains__(self, n: int) -> bool:
        return self.low <= n <= self.high


class LocalAllocator:
    """In-memory :class:`IdentityAllocator` for one cluster."""

    def __init__(self, cluster_id: int = 0) -> None:
        low = max(MIN_CLUSTER_IDENTITY, cluster_id << CLUSTER_ID_SHIFT)
        self._global = _Range(low, ((cluster_id + 1) << CLUSTER_ID_SHIFT) - 1)
        self._local = _Range(MIN_LOCAL_IDENTITY, MAX_LOCAL_IDENTITY)
        self._by_id: dict[int, Labels] = {int(r): lbls for r, lbls in RESERVED_LABELS.items()}
        self._by_labels: dict[Labels, int] = {lbls: i for i, lbls in self._by_id.items()}
        self._refs: dict[int, int] = {}
        self._subscribers: list[Subscriber] = []

    # ------------------------------------------------------------------ queries

    def lookup(self, identity: int) -> Labels | None:
        return self._by_id.get(identity)

    def by_labels(self, labels: Labels) -> int | None:
        found = self._by_labels.get(labels)
        if found is not None:
            return found
        rid = reserved_identity_for(labels)
        return rid if rid is not None and self._by_id.get(rid) == labels else None

    def identities(self) -> Mapping[int, Labels]:
        """A snapshot of every identity (reserved included), by number."""
        return dict(self._by_id)

    def __iter__(self) -> Iterator[tuple[int, Labels]]:
        return iter(sorted(self._by_id.items()))

    def __len__(self) -> int:
        return len(self._by_id)

    # ------------------------------------------------------------------ changes

    def allocate(self, labels: Labels) -> int:
        """The identity of this label set, allocating it on first use (reference counted)."""
        rid = reserved_identity_for(labels)
        if rid is not None:
            self._set_reserved_labels(rid, labels)
            return rid
        found = self._by_labels.get(labels)
        if found is not None:
            self._refs[found] += 1
            return found
        n = (self._local if is_local_scope(labels) else self._global).take()
        self._add(n, labels)
        return n

    def release(self, labels: Labels) -> bool:
        """Drop one reference; the identity is removed when none is left. Reserved identities
        are never removed. Returns True if the identity was removed."""
        n = self._by_labels.get(labels)
        if n is None or n not in self._refs:
            return False
        self._refs[n] -= 1
        if self._refs[n] > 0:
            return False
        del self._refs[n]
        del self._by_labels[labels]
        del self._by_id[n]
        (self._local if n in self._local else self._global).give_back(n)
        self._emit(IdentityEvent(EventKind.REMOVED, n, labels))
        return True

    def restore(self, mapping: Mapping[int, Labels]) -> None:
        """Re-create identities with the numbers a previous run gave them (one reference each),
        so identities stay stable across restarts. Reserved numbers are ignored."""
        for n, labels in sorted(mapping.items()):
            if n <= max(ReservedIdentity):
                continue
            scope = self._local if is_local_scope(labels) else self._global
            if n not in scope:
                raise IdentityConflictError(f"identity {n} for {labels} is outside its range")
            if self._by_id.get(n, labels) != labels or self._by_labels.get(labels, n) != n:
                raise IdentityConflictError(f"identity {n} for {labels} conflicts with the current state")
            if n in self._by_id:
                continue
            scope.claim(n)
            self._add(n, labels)

    def subscribe(self, callback: Subscriber, replay: bool = True) -> Callable[[], None]:
        """Call ``callback`` for every change from now on (and, with ``replay``, an ADDED event for
        every existing identity first). Returns a function that unsubscribes."""
        if replay:
            for n, labels in sorted(self._by_id.items()):
                callback(IdentityEvent(EventKind.ADDED, n, labels))
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------------ internals

    def _add(self, n: int, labels: Labels) -> None:
        self._by_id[n] = labels
        self._by_labels[labels] = n
        self._refs[n] = 1
        self._emit(IdentityEvent(EventKind.ADDED, n, labels))

    def _set_reserved_labels(self, rid: int, labels: Labels) -> None:
        old = self._by_id[rid]
        if old == labels:
            return
        del self._by_labels[old]
        self._by_id[rid] = labels
        self._by_labels[labels] = rid
        self._emit(IdentityEvent(EventKind.REMOVED, rid, old))
        self._emit(IdentityEvent(EventKind.ADDED, rid, labels))

    def _emit(self, event: IdentityEvent) -> None:
        for cb in list(self._subscribers):
            cb(event)
