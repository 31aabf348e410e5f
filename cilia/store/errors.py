"""Errors raised by the desired-state store."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every store error."""


class InvalidKeyError(StoreError):
    """A kind, namespace or name that cannot form a store key."""


class NotFoundError(StoreError):
    """A delete or update named an object that does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key}: not found")
        self.key = key


class ConflictError(StoreError):
    """A transaction's precondition did not hold; the transaction changed nothing."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        want = "absent" if expected == 0 else f"at revision {expected}"
        have = "absent" if actual == 0 else f"at revision {actual}"
        super().__init__(f"{key}: expected {want}, found {have}")
        self.key = key
        self.expected = expected
        self.actual = actual


class CompactedError(StoreError):
    """A watch asked for history that was already compacted away: list again, then watch."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(
            f"revision {requested} was compacted (history starts after {compacted}); list again, then watch"
        )
        self.requested = requested
        self.compacted = compacted
