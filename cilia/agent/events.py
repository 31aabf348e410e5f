"""Kubernetes-style events the agent emits ("Started", "Relabelled", "PolicyApplied", …).

Events are kept in a bounded JSON-lines file in the state directory, so ``cilia get events`` works
without the agent and survives restarts. A repeat of the last event (same object, reason and
message) is folded into it with a count, as the Kubernetes event recorder does. The file is
appended to (a folded event is appended again with its new count; readers keep the last line of
each event) and rewritten only when it grows past twice the bound.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cilia.store.files import open_private, write_private

MAX_EVENTS = 1000


@dataclass(frozen=True)
class Event:
    """One event about one object (``involved`` is ``Kind/namespace/name``)."""

    type: str  # Normal | Warning
    reason: str
    involved: str
    message: str
    count: int = 1
    first_timestamp: float = 0.0
    last_timestamp: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class EventLog:
    """Append-only event file, folded and trimmed to the last ``MAX_EVENTS``."""

    def __init__(self, path: Path, limit: int = MAX_EVENTS) -> None:
        self.path = path
        self.limit = limit
        self._lock = threading.Lock()
        self._events: list[Event] = read_events(path, limit)
        self._lines = len(self._events) + 1
        self._rewrite()  # start from a compact file

    def emit(self, type_: str, reason: str, involved: str, message: str) -> Event:
        now = time.time()
        with self._lock:
            last = self._events[-1] if self._events else None
            if last and (last.involved, last.reason, last.message) == (involved, reason, message):
                ev = replace(last, count=last.count + 1, last_timestamp=now)
                self._events[-1] = ev
            else:
                ev = Event(type_, reason, involved, message, 1, now, now)
                self._events.append(ev)
            if len(self._events) > self.limit:
                del self._events[: len(self._events) - self.limit]
            self._lines += 1
            if self._lines > 2 * self.limit:
                self._rewrite()
            else:
                self._append(ev)
        return ev

    def normal(self, reason: str, involved: str, message: str) -> Event:
        return self.emit("Normal", reason, involved, message)

    def warning(self, reason: str, involved: str, message: str) -> Event:
        return self.emit("Warning", reason, involved, message)

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def _append(self, ev: Event) -> None:
        with open_private(self.path, "a") as f:
            f.write(json.dumps(ev.to_json(), sort_keys=True) + "\n")

    def _rewrite(self) -> None:
        lines = "".join(json.dumps(e.to_json(), sort_keys=True) + "\n" for e in self._events)
        write_private(self.path, lines)
        self._lines = len(self._events)


def read_events(path: Path, limit: int = MAX_EVENTS) -> list[Event]:
    """The last ``limit`` events recorded in ``path`` (none if it does not exist), each once with
    its last count."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    latest: dict[tuple[str, str, str, float], Event] = {}
    for line in lines:
        try:
            ev = Event.from_json(json.loads(line))
        except (ValueError, TypeError, KeyError):
            continue  # a torn line of a crashed write: skip it, keep the rest
        key = (ev.involved, ev.reason, ev.message, ev.first_timestamp)
        latest.pop(key, None)  # re-insert: order by the last update
        latest[key] = ev
    return list(latest.values())[-limit:]
