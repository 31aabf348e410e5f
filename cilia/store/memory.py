"""In-memory backend: same semantics as the SQLite one, for tests and offline analysis."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

from cilia.store.backend import RawEvent, RawOp, RawRecord, plan_writes
from cilia.store.errors import CompactedError
from cilia.store.keys import prefix_end
from cilia.store.records import EventType


class MemoryBackend:
    """A revisioned key/value log in one process's memory."""

    def __init__(self, history: int = 100_000) -> None:
        self._kv: dict[str, RawRecord] = {}
        self._log: list[RawEvent] = []
        self._rev = 0
        self._compacted = 0
        self._history = history
        self._cond = threading.Condition()

    def revision(self) -> int:
        with self._cond:
            return self._rev

    def get(self, key: str) -> RawRecord | None:
        with self._cond:
            return self._kv.get(key)

    def range(self, prefix: str) -> tuple[int, list[RawRecord]]:
        end = prefix_end(prefix)
        with self._cond:
            recs = [r for k, r in self._kv.items() if prefix <= k < end]
            return self._rev, sorted(recs)

    def commit(self, ops: Sequence[RawOp]) -> int:
        with self._cond:
            writes = plan_writes(ops, self._kv.get)
            if not writes:
                return self._rev
            rev = self._rev + 1
            for op in writes:
                old = self._kv.get(op.key)
                if op.op == "put":
                    create = old.create_revision if old else rev
                    version = old.version + 1 if old else 1
                    self._kv[op.key] = RawRecord(op.key, op.value, create, rev, version)
                    self._log.append(RawEvent(rev, EventType.PUT, op.key, op.value))
                else:
                    assert old is not None
                    del self._kv[op.key]
                    self._log.append(RawEvent(rev, EventType.DELETE, op.key, old.value))
            self._rev = rev
            if rev - self._compacted > 2 * self._history:
                self._compact_locked(rev - self._history)
            self._cond.notify_all()
            return rev

    def events(self, prefix: str, from_revision: int) -> list[RawEvent]:
        end = prefix_end(prefix)
        with self._cond:
            if self._compacted > 0 and from_revision <= self._compacted:
                raise CompactedError(from_revision, self._compacted)
            start = bisect.bisect_left(self._log, from_revision, key=lambda e: e.revision)
            return [e for e in self._log[start:] if prefix <= e.key < end]

    def wait(self, after_revision: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._rev > after_revision, timeout)
            return self._rev

    def compact(self, revision: int) -> None:
        with self._cond:
            self._compact_locked(revision)

    def _compact_locked(self, revision: int) -> None:
        revision = min(revision, self._rev)
        start = bisect.bisect_right(self._log, revision, key=lambda e: e.revision)
        del self._log[:start]
        self._compacted = max(self._compacted, revision)

    def close(self) -> None:
        pass
