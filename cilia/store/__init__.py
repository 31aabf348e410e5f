"""Desired state, revisioned and watchable (memory, SQLite and etcd backends).

:func:`open_store` is the factory: it sits here, above :mod:`cilia.store.store` and the backends,
so that no backend module imports another's (the etcd one is imported only when asked for).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cilia.store.errors import CompactedError, ConflictError, InvalidKeyError, NotFoundError, StoreError
from cilia.store.keys import API_KINDS, POLICY_KINDS, Kind, ObjectKey, key_for_object
from cilia.store.memory import MemoryBackend
from cilia.store.records import Delete, Event, EventType, Expect, Op, Put, Record, Snapshot
from cilia.store.sqlite import SqliteBackend
from cilia.store.store import DB_FILE, Store, Watch, state_dir

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


def open_store(
    state: Path | str | None = None, *, backend: str = "sqlite", endpoints: Sequence[str] = ()
) -> Store:
    """Open the store: ``backend="sqlite"`` (file ``store.db`` in :func:`state_dir`), ``"memory"``,
    or ``"etcd"`` (``endpoints`` as ``host:port``; several members of one cluster)."""
    if backend == "memory":
        return Store(MemoryBackend())
    if backend == "sqlite":
        return Store(SqliteBackend(state_dir(state) / DB_FILE))
    if backend == "etcd":
        if not endpoints:
            raise StoreError("the etcd store needs at least one endpoint (host:port)")
        from cilia.store.etcd import open_etcd_store  # etcd3aio only when asked for

        return open_etcd_store(list(endpoints))
    raise StoreError(f"unknown store backend {backend!r} (memory, sqlite, etcd)")
