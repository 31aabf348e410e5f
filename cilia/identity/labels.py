"""Labels and label sets (semantics.md §2.1).

A label is ``source:key=value``. A :class:`Labels` value is the immutable, hashable label set of an
identity; it is the key of identity allocation and what selectors match against.
"""

from __future__ import annotations

import ipaddress
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


class CIDRKey(NamedTuple):
    """A ``cidr:`` label key as numbers, for prefix-aware matching: ``addr`` is the masked address."""

    version: int
    addr: int
    bits: int

    def contains(self, other: CIDRKey) -> bool:
        """True if ``other`` lies within this prefix (same family, at least as long)."""
        if self.version != other.version or self.bits > other.bits:
            return False
        shift = (32 if self.version == 4 else 128) - self.bits
        return (self.addr >> shift) == (other.addr >> shift)


def prefix_to_cidr_key(prefix: str) -> str:
    """The ``cidr:`` label key of a prefix: IPv6 ``:`` is written ``-``, with a ``0`` added where the
    key would otherwise start or end with ``-`` (label keys cannot). ``2001:db8::/32`` →
    ``2001-db8--0/32``. The prefix is masked first."""
    net = ipaddress.ip_network(prefix, strict=False)
    addr = str(net.network_address)
    if net.version == 6:
        if addr.startswith(":"):
            addr = "0" + addr
        if addr.endswith(":"):
            addr = addr + "0"
        addr = addr.replace(":", "-")
    return f"{addr}/{net.prefixlen}"


def parse_cidr_key(key: str) -> CIDRKey | None:
    """Parse a ``cidr:`` label key (``-`` stands for ``:``); None if it is not a prefix."""
    try:
        net = ipaddress.ip_network(key.replace("-", ":"), strict=False)
    except ValueError:
        return None
    return CIDRKey(net.version, int(net.network_address), net.prefixlen)


class Labels:
    """An immutable set of labels, at most one per (source, key), indexed by key for matching."""

    __slots__ = ("_by_key", "_cidrs", "_frozen", "_hash")

    def __init__(self, labels: Iterable[Label] = ()) -> None:
        by_key: dict[str, dict[str, str]] = {}
        for lb in labels:
            by_key.setdefault(lb.key, {})[lb.source] = lb.value
        self._by_key = by_key
        self._frozen = frozenset(Label(s, k, v) for k, d in by_key.items() for s, v in d.items())
        self._hash = hash(self._frozen)
        self._cidrs: tuple[tuple[int, int, int, str], ...] | None = None

    @classmethod
    def parse(cls, texts: Iterable[str], default_source: str = SOURCE_UNSPEC) -> Labels:
        return cls(parse_label(t, default_source) for t in texts)

    @classmethod
    def k8s(cls, mapping: dict[str, str]) -> Labels:
        return cls(Label(SOURCE_K8S, k, v) for k, v in mapping.items())

    def sources_of(self, key: str) -> dict[str, str]:
        """source -> value for every label with this key."""
        return self._by_key.get(key, {})

    def cidr_keys(self) -> tuple[tuple[int, int, int, str], ...]:
        """(version, masked address, prefix length, value) of every ``cidr:`` label whose key is a
        prefix, computed once: flat tuples, because prefix-aware matching loops over them."""
        if self._cidrs is None:
            found = []
            for key, sources in self._by_key.items():
                if SOURCE_CIDR in sources:
                    parsed = parse_cidr_key(key)
                    if parsed is not None:
                        found.append((*parsed, sources[SOURCE_CIDR]))
            self._cidrs = tuple(sorted(found))
        return self._cidrs

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
