"""The desired-state store: typed keys and JSON objects over a revisioned backend.

Every committed transaction bumps one global revision; all objects written by it carry that
revision, and a watch delivers its events together. The agent's pattern is list-then-watch::

    snap = store.snapshot()
    ...build state from snap.records...
    with store.watch(snap.revision + 1) as w:
        for event in w: ...
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from cilia.store.backend import Backend, RawEvent, RawOp, RawRecord
from cilia.store.errors import ConflictError, NotFoundError, StoreError
from cilia.store.keys import PREFIX, Kind, ObjectKey, key_for_object
from cilia.store.records import Delete, Event, Expect, Op, Put, Record, Snapshot

DEFAULT_STATE_DIR = Path("/var/lib/cilia")
STATE_DIR_ENV = "CILIA_STATE_DIR"
DB_FILE = "store.db"


def state_dir(explicit: Path | str | None = None) -> Path:
    """The state directory: ``--state-dir`` if given, else ``$CILIA_STATE_DIR``, else /var/lib/cilia."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env) if env else DEFAULT_STATE_DIR


def _dump(value: dict[str, Any]) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"value is not JSON: {e}") from e


def _record(raw: RawRecord) -> Record:
    return Record(ObjectKey.parse(raw.key), json.loads(raw.value), raw.create_revision, raw.mod_revision,
                  raw.version)


def _event(raw: RawEvent) -> Event:
    return Event(raw.type, ObjectKey.parse(raw.key), json.loads(raw.value), raw.revision)


def _prefix(kind: Kind | None, namespace: str | None) -> str:
    if kind is None:
        if namespace is not None:
            raise StoreError("a namespace filter needs a kind")
        return PREFIX
    return kind.prefix(namespace)


class Store:
    """Desired state: namespaces, pods, deployments, services, policies, identities, node settings."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # ------------------------------------------------------------------ reads

    @property
    def revision(self) -> int:
        return self.backend.revision()

    def get(self, key: ObjectKey) -> Record | None:
        raw = self.backend.get(key.path())
        return _record(raw) if raw else None

    def list(self, kind: Kind, namespace: str | None = None) -> list[Record]:
        """Objects of ``kind`` (in ``namespace`` if given), sorted by key."""
        return self.snapshot(kind, namespace).records

    def snapshot(self, kind: Kind | None = None, namespace: str | None = None) -> Snapshot:
        """Objects (all kinds if ``kind`` is None) and the revision they were read at, atomically."""
        rev, raws = self.backend.range(_prefix(kind, namespace))
        return Snapshot(rev, [_record(r) for r in raws])

    # ------------------------------------------------------------------ writes

    def txn(self, ops: Iterable[Op]) -> int:
        """Apply ``ops`` all-or-nothing; returns the revision after the transaction.

        Raises :class:`ConflictError` (an ``Expect`` failed) or :class:`NotFoundError` (a
        ``Delete`` of a missing object) having changed nothing.
        """
        raw: list[RawOp] = []
        written: set[str] = set()
        for op in ops:
            path = op.key.path()
            if isinstance(op, Put):
                raw.append(RawOp("put", path, _dump(op.value)))
            elif isinstance(op, Delete):
                raw.append(RawOp("delete", path, flag=op.missing_ok))
            elif isinstance(op, Expect):
                raw.append(RawOp("expect", path, revision=op.mod_revision))
                continue
            else:
                raise StoreError(f"not a store operation: {op!r}")
            if path in written:
                # etcd refuses a txn that writes one key twice; refuse it everywhere.
                raise StoreError(f"{op.key}: written twice in one transaction")
            written.add(path)
        return self.backend.commit(raw)

    def put(self, key: ObjectKey, value: dict[str, Any]) -> int:
        return self.txn([Put(key, value)])

    def delete(self, key: ObjectKey, missing_ok: bool = False) -> int:
        return self.txn([Delete(key, missing_ok)])

    def create(self, key: ObjectKey, value: dict[str, Any]) -> int:
        """Put only if absent (ConflictError otherwise)."""
        return self.txn([Expect(key, 0), Put(key, value)])

    def update(
        self, key: ObjectKey, change: Callable[[dict[str, Any]], dict[str, Any]], retries: int = 10
    ) -> int:
        """Read-modify-write with optimistic concurrency: retried when another writer got there first."""
        for _ in range(retries):
            rec = self.get(key)
            if rec is None:
                raise NotFoundError(key.path())
            try:
                return self.txn([Expect(key, rec.mod_revision), Put(key, change(rec.value))])
            except ConflictError:
                continue
        raise StoreError(f"{key}: still conflicting after {retries} attempts")

    def apply(self, objects: Iterable[dict[str, Any]], default_namespace: str = "default") -> int:
        """Store Kubernetes objects (keyed by kind + metadata) in one transaction."""
        return self.txn([Put(key_for_object(o, default_namespace), o) for o in objects])

    def delete_objects(self, objects: Iterable[dict[str, Any]], missing_ok: bool = False,
                       default_namespace: str = "default") -> int:
        """Delete the objects these manifests name, in one transaction."""
        return self.txn([Delete(key_for_object(o, default_namespace), missing_ok) for o in objects])

    # ------------------------------------------------------------------ watch

    def watch(self, from_revision: int, kind: Kind | None = None, namespace: str | None = None) -> Watch:
        """Events with revision >= ``from_revision`` (resume after revision r with r + 1)."""
        return Watch(self.backend, _prefix(kind, namespace), from_revision)

    def compact(self, revision: int) -> None:
        self.backend.compact(revision)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Watch:
    """An ordered, resumable stream of events; iterate (blocking) or :meth:`get` with a timeout."""

    def __init__(self, backend: Backend, prefix: str, from_revision: int, wait_step: float = 0.5) -> None:
        self._backend = backend
        self._prefix = prefix
        self._buffer: deque[Event] = deque()
        self._step = wait_step
        self.next_revision = max(from_revision, 0)
        self.closed = False

    def _fill(self) -> None:
        # Read the revision first: every event up to it is committed, so the query below sees
        # them all and the watch may move past revisions that had no events under its prefix.
        rev = self._backend.revision()
        raws = self._backend.events(self._prefix, self.next_revision)
        self._buffer.extend(_event(r) for r in raws)
        self.next_revision = max(rev, raws[-1].revision if raws else 0, self.next_revision - 1) + 1

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None when ``timeout`` seconds pass without one (None: wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._buffer and not self.closed:
            self._fill()
            if self._buffer:
                break
            left = self._step if deadline is None else min(self._step, deadline - time.monotonic())
            if left <= 0:
                return None
            self._backend.wait(self.next_revision - 1, left)
        return self._buffer.popleft() if self._buffer else None

    def drain(self) -> list[Event]:
        """Every event available now, without blocking."""
        self._fill()
        out = list(self._buffer)
        self._buffer.clear()
        return out

    def __iter__(self) -> Iterator[Event]:
        while not self.closed:
            ev = self.get(self._step)
            if ev is not None:
                yield ev

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
