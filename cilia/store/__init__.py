"""Desired state, revisioned and watchable (memory and SQLite backends; etcd-ready interface)."""

from cilia.store.errors import CompactedError, ConflictError, InvalidKeyError, NotFoundError, StoreError
from cilia.store.keys import API_KINDS, POLICY_KINDS, Kind, ObjectKey, key_for_object
from cilia.store.records import Delete, Event, EventType, Expect, Op, Put, Record, Snapshot
from cilia.store.store import Store, Watch, open_store, state_dir

__all__ = [
    "API_KINDS",
    "POLICY_KINDS",
    "CompactedError",
    "ConflictError",
    "Delete",
    "Event",
    "EventType",
    "Expect",
    "InvalidKeyError",
    "Kind",
    "NotFoundError",
    "ObjectKey",
    "Op",
    "Put",
    "Record",
    "Snapshot",
    "Store",
    "StoreError",
    "Watch",
    "key_for_object",
    "open_store",
    "state_dir",
]
