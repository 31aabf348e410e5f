"""Identity records in the store: one key by numeric id and one by label set, written together.

The pair makes allocation safe with several writers (etcd-notes.md: create-if-absent on both
keys in one transaction; never a shared counter). Label sets are handled here as sorted
``source:key=value`` strings, since the store sits below :mod:`cilia.identity`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cilia.store.keys import Kind, ObjectKey
from cilia.store.records import Expect, Op, Put
from cilia.store.store import Store


def canonical_labels(labels: Iterable[str]) -> list[str]:
    return sorted(set(labels))


def labels_key(labels: Iterable[str]) -> ObjectKey:
    """The by-labels key: a hash of the canonical label set (order and duplicates do not matter)."""
    digest = hashlib.sha256("\n".join(canonical_labels(labels)).encode()).hexdigest()[:32]
    return Kind.IDENTITY_LABELS.key("", digest)


def id_key(numeric_id: int) -> ObjectKey:
    return Kind.IDENTITIES.key("", str(numeric_id))


def allocate_ops(numeric_id: int, labels: Iterable[str]) -> list[Op]:
    """Create-if-absent of both keys: fails with ConflictError if the id or the label set is taken."""
    canon = canonical_labels(labels)
    value = {"id": numeric_id, "labels": canon}
    by_id, by_labels = id_key(numeric_id), labels_key(canon)
    return [Expect(by_id, 0), Expect(by_labels, 0), Put(by_id, value), Put(by_labels, value)]


def lookup(store: Store, labels: Iterable[str]) -> int | None:
    """The id stored for this label set, if any."""
    rec = store.get(labels_key(labels))
    return int(rec.value["id"]) if rec else None


def labels_of(store: Store, numeric_id: int) -> list[str] | None:
    rec = store.get(id_key(numeric_id))
    return list(rec.value["labels"]) if rec else None
