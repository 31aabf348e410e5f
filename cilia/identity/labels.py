"""Labels and label sets (semantics.md §2.1).

A label is ``source:key=value``. A :class:`Labels` value is the immutable, hashable label set of an
identity; it is the key of identity allocation and what selectors match against.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

SOURCE_K8S = "k8s"
SOURCE_RESERVED = "reserved"
SOURCE_CIDR = "cidr"
SOURCE_FQDN = "fqdn"
SOURCE_ANY = "any"
SOURCE_UNSPEC = "unspec"
SOURCE_CONTAINER = "container"
SOURCE_NODE = "node"
SOURCE_CIDRGROUP = "cidrgroup"


class Label(NamedTuple):
    source: str
    key: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.source}:{self.key}={self.value}"


def parse_label(text: str, default_source: str = SOURCE_UNSPEC) -> Label:
    """Parse ``source:key=value`` (source and value optional). Only the first ``:`` separates the
    source, and only when it comes before the first ``=``."""
    key_part, _, value = text.partition("=")
    source, sep, key = key_part.partition(":")
    if not sep:
        return Label(default_source, key_part, value)
    return Label(source, key, value)


class Labels:
    """An immutable set of labels, at most one per (source, key), indexed by key for matching."""

    __slots__ = ("_by_key", "_frozen", "_hash")

    def __init__(self, labels: Iterable[Label] = ()) -> None:
        by_key: dict[str, dict[str, str]] = {}
        for lb in labels:
            by_key.setdefault(lb.key, {})[lb.source] = lb.value
        self._by_key = by_key
        self._frozen = frozenset(Label(s, k, v) for k, d in by_key.items() for s, v in d.items())
        self._hash = hash(self._frozen)

    @classmethod
    def parse(cls, texts: Iterable[str], default_source: str = SOURCE_UNSPEC) -> Labels:
        return cls(parse_label(t, default_source) for t in texts)

    @classmethod
    def k8s(cls, mapping: dict[str, str]) -> Labels:
        return cls(Label(SOURCE_K8S, k, v) for k, v in mapping.items())

    def sources_of(self, key: str) -> dict[str, str]:
        """source -> value for every label with this key."""
        return self._by_key.get(key, {})

    def keys(self) -> Iterable[str]:
        return self._by_key.keys()

    def union(self, other: Iterable[Label]) -> Labels:
        return Labels([*self._frozen, *other])

    def __iter__(self) -> Iterator[Label]:
        return iter(sorted(self._frozen))

    def __len__(self) -> int:
        return len(self._frozen)

    def __contains__(self, item: object) -> bool:
        return item in self._frozen

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Labels) and self._frozen == other._frozen

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Labels([{', '.join(repr(str(lb)) for lb in self)}])"

    def strings(self) -> list[str]:
        """Sorted ``source:key=value`` strings, the form Hubble shows."""
        return [str(lb) for lb in self]
