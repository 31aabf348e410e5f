"""The backend interface: a revisioned key/value log with string keys and JSON text values.

Shaped after etcd v3 (one revision per transaction, create/mod revisions, prefix ranges,
compaction), so an etcd backend can implement it without the callers of
:class:`cilia.store.store.Store` changing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from cilia.store.errors import ConflictError, NotFoundError
from cilia.store.records import EventType


class RawRecord(NamedTuple):
    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int


class RawEvent(NamedTuple):
    revision: int
    type: EventType
    key: str
    value: str


class RawOp(NamedTuple):
    """``put`` (value), ``delete`` (flag: missing ok), ``expect`` (revision: mod_revision; 0 = absent)."""

    op: str
    key: str
    value: str = ""
    revision: int = 0
    flag: bool = False


class Backend(Protocol):
    def revision(self) -> int:
        """The current global revision (0 for an empty store)."""
        ...

    def get(self, key: str) -> RawRecord | None: ...

    def range(self, prefix: str) -> tuple[int, list[RawRecord]]:
        """All records under ``prefix`` sorted by key, and the revision they were read at."""
        ...

    def commit(self, ops: Sequence[RawOp]) -> int:
        """Apply all ops or none (raises ConflictError/NotFoundError); returns the new revision."""
        ...

    def events(self, prefix: str, from_revision: int) -> list[RawEvent]:
        """Events under ``prefix`` with revision >= ``from_revision``, in order (CompactedError if gone)."""
        ...

    def wait(self, after_revision: int, timeout: float) -> int:
        """Block until the revision exceeds ``after_revision`` or ``timeout`` passes; returns the revision."""
        ...

    def compact(self, revision: int) -> None:
        """Forget events at or below ``revision``."""
        ...

    def close(self) -> None: ...


def plan_writes(ops: Sequence[RawOp], current: Callable[[str], RawRecord | None]) -> list[RawOp]:
    """Check every precondition of a transaction against ``current`` and return the writes to do.

    Raises before anything is written, which is what makes a transaction all-or-nothing.
    Deletes of absent keys marked ``missing_ok`` are dropped (they change nothing).
    """
    writes: list[RawOp] = []
    for op in ops:
        rec = current(op.key)
        if op.op == "expect":
            actual = rec.mod_revision if rec else 0
            if actual != op.revision:
                raise ConflictError(op.key, op.revision, actual)
        elif op.op == "delete":
            if rec is None:
                if not op.flag:
                    raise NotFoundError(op.key)
                continue
            writes.append(op)
        elif op.op == "put":
            writes.append(op)
        else:
            raise ValueError(f"unknown op {op.op!r}")
    return writes
