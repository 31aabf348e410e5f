"""What the store hands out: records, watch events and transaction operations."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple

from cilia.store.keys import ObjectKey


class Record(NamedTuple):
    """A stored object with its revisions (etcd's create/mod revision and version)."""

    key: ObjectKey
    value: dict[str, Any]
    create_revision: int
    mod_revision: int
    version: int


class EventType(StrEnum):
    PUT = "PUT"
    DELETE = "DELETE"


class Event(NamedTuple):
    """One change. For DELETE, ``value`` is the object as it was before the delete."""

    type: EventType
    key: ObjectKey
    value: dict[str, Any]
    revision: int

    @property
    def kind(self) -> str:
        return self.key.kind.value


class Put(NamedTuple):
    """Create or replace an object."""

    key: ObjectKey
    value: dict[str, Any]


class Delete(NamedTuple):
    """Delete an object; a missing object fails the transaction unless ``missing_ok``."""

    key: ObjectKey
    missing_ok: bool = False


class Expect(NamedTuple):
    """Precondition: the object's ``mod_revision`` is this value (0: the object must be absent)."""

    key: ObjectKey
    mod_revision: int


Op = Put | Delete | Expect


class Snapshot(NamedTuple):
    """Records read at one revision: list at ``revision``, then watch from ``revision + 1``."""

    revision: int
    records: list[Record]
