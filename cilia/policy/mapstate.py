"""MapState: one endpoint's policy-map entries, with Cilium's insertion rules (semantics.md §5.4).

Keys are indexed by their *port space* ``(direction, proto, port, prefix_len)`` and identity, as
Cilium's trie indexes direction/proto/port and hangs identities off each node:

* Key A is *broader or equal* to key B if A's identity is 0 or B's, and A's port space contains B's.
* A deny is dropped if a *different* deny key is broader or equal; inserting a deny deletes every
  narrower-or-equal allow and every narrower-or-equal deny with a different key.
* An allow is dropped if any broader-or-equal key is a deny. Equal keys merge their ``rules``.
* Identity 0 and a specific identity are both kept: the datapath chooses at lookup (§5.5).

The final state does not depend on insertion order, so :func:`distill` computes it in bulk with set
algebra per port space (the hot path: thousands of identities per selector), while
:meth:`MapState.insert` applies the same rules one key at a time (incremental identity changes).
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from itertools import repeat
from typing import NamedTuple

from cilia.policy.portrange import port_mask
from cilia.policy.types import Entry, Key, RuleRef

# Builds a Key from a plain 5-tuple without the NamedTuple's Python-level __new__ (hot path).
_new_key = partial(tuple.__new__, Key)

# (direction, proto, port, prefix_len): a key without its identity.
PortSpace = tuple[int, int, int, int]


class Contribution(NamedTuple):
    """Candidate entries: one port space, allow or deny, for a set of peer identities (0 = any)."""

    space: PortSpace
    deny: bool
    identities: Iterable[int]
    rules: frozenset[RuleRef]
    auth_type: int = 0  # explicit authentication an allow requires (0: none)
    proxy_port: int = 0  # L7 redirect of an allow (0: none)


class MapDiff(NamedTuple):
    """What changed between two MapStates, as the kernel sync applies it."""

    adds: dict[Key, Entry]
    updates: dict[Key, Entry]
    deletes: frozenset[Key]

    def __bool__(self) -> bool:
        return bool(self.adds or self.updates or self.deletes)

    @classmethod
    def empty(cls) -> MapDiff:
        return cls({}, {}, frozenset())


def merge_entries(a: Entry, b: Entry) -> Entry:
    """Two entries of the same key and kind: their rules together; an explicit authentication
    requirement is kept (the higher type when they differ); a redirect is kept, the higher proxy
    priority winning, then the lower proxy port (Cilium's ``MapStateEntry.Merge``)."""
    port, prio = a.proxy_port, a.proxy_priority
    if b.proxy_port and (b.proxy_priority > prio or (b.proxy_priority == prio and b.proxy_port < port)):
        port, prio = b.proxy_port, b.proxy_priority
    return Entry(a.deny, a.rules | b.rules, port, prio, max(a.auth_type, b.auth_type))


def space_of(key: Key) -> PortSpace:
    return (key[1], key[2], key[3], key[4])


def ancestors(space: PortSpace) -> list[PortSpace]:
    """Every port space containing ``space`` (itself included), narrowest first; the any-protocol
    space last."""
    direction, proto, port, plen = space
    out: list[PortSpace] = []
    if proto:
        for length in range(plen, -1, -1):
            out.append((direction, proto, port & port_mask(length), length))
    out.append((direction, 0, 0, 0))
    return out


def contains(outer: PortSpace, inner: PortSpace) -> bool:
    """True if port space ``outer`` covers ``inner`` (same direction)."""
    if outer[0] != inner[0]:
        return False
    if outer[1] == 0:
        return True
    if outer[1] != inner[1] or outer[3] > inner[3]:
        return False
    return (inner[2] & port_mask(outer[3])) == outer[2]


class MapState:
    """``Key -> Entry`` for one endpoint, indexed by port space (see module docstring)."""

    __slots__ = ("_by_space", "entries")

    def __init__(self) -> None:
        self.entries: dict[Key, Entry] = {}
        self._by_space: dict[PortSpace, dict[int, Entry]] = {}

    # ------------------------------------------------------------------ read

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Key]:
        return iter(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __getitem__(self, key: Key) -> Entry:
        return self.entries[key]

    def get(self, key: Key) -> Entry | None:
        return self.entries.get(key)

    def items(self) -> Iterable[tuple[Key, Entry]]:
        return self.entries.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MapState):
            return self.entries == other.entries
        if isinstance(other, Mapping):
            return self.entries == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"MapState({len(self.entries)} entries)"

    def spaces(self) -> Iterable[PortSpace]:
        return self._by_space.keys()

    def at(self, space: PortSpace) -> Mapping[int, Entry]:
        """identity -> entry for one port space."""
        return self._by_space.get(space, {})

    def of_identities(self, identities: frozenset[int] | set[int]) -> dict[Key, Entry]:
        """The entries whose peer identity is one of ``identities`` (found through the index)."""
        out: dict[Key, Entry] = {}
        for space, ids in self._by_space.items():
            for i in identities & ids.keys():
                out[Key(i, *space)] = ids[i]
        return out

    def copy(self) -> MapState:
        out = MapState()
        out.entries = dict(self.entries)
        out._by_space = {s: dict(d) for s, d in self._by_space.items()}
        return out

    # ------------------------------------------------------------------ write

    def put(self, key: Key, entry: Entry) -> None:
        """Set one entry as is, without the insertion rules (for results computed by :func:`distill`)."""
        self.entries[key] = entry
        self._by_space.setdefault(space_of(key), {})[key[0]] = entry

    def drop(self, key: Key) -> None:
        """Delete one entry as is (no insertion rules involved)."""
        del self.entries[key]
        space = space_of(key)
        ids = self._by_space[space]
        del ids[key[0]]
        if not ids:
            del self._by_space[space]

    def broader_or_equal(self, key: Key) -> Iterator[tuple[Key, Entry]]:
        ident = key[0]
        for space in ancestors(space_of(key)):
            ids = self._by_space.get(space)
            if not ids:
                continue
            for cand in (0, ident) if ident else (0,):
                entry = ids.get(cand)
                if entry is not None:
                    yield Key(cand, *space), entry

    def narrower_or_equal(self, key: Key) -> list[tuple[Key, Entry]]:
        ident, space = key[0], space_of(key)
        out: list[tuple[Key, Entry]] = []
        for other, ids in self._by_space.items():
            if not contains(space, other):
                continue
            if ident == 0:
                out.extend((Key(i, *other), e) for i, e in ids.items())
            elif ident in ids:
                out.append((Key(ident, *other), ids[ident]))
        return out

    def insert(self, key: Key, entry: Entry) -> None:
        """Insert one entry with Cilium's rules (module docstring); equal keys merge ``rules``."""
        if entry.deny:
            for k, e in self.broader_or_equal(key):
                if e.deny and k != key:
                    return
            for k, e in self.narrower_or_equal(key):
                if not e.deny or k != key:
                    self.drop(k)
        else:
            for _, e in self.broader_or_equal(key):
                if e.deny:
                    return
        old = self.entries.get(key)
        if old is not None and old.deny == entry.deny:
            entry = merge_entries(old, entry)
        self.put(key, entry)

    def remove_identity(self, identity: int) -> None:
        """Delete every key of one peer identity (it no longer exists)."""
        for space in list(self._by_space):
            if identity in self._by_space[space]:
                self.drop(Key(identity, *space))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic tuples: its collections,
    triggered by the allocation count alone, would otherwise rescan every live object repeatedly."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def distill(contributions: Iterable[Contribution]) -> MapState:
    """The MapState that inserting every candidate entry produces, computed per port space."""
    with _gc_paused():
        return _distill(contributions)


def _distill(contributions: Iterable[Contribution]) -> MapState:
    # Each contribution becomes a shared Entry value; identities selected by several contributions
    # of one port space get the merge of their entries (memoized per pair).
    entry_cache: dict[tuple[bool, frozenset[RuleRef], int, int], Entry] = {}
    allows: dict[PortSpace, list[tuple[Iterable[int], Entry]]] = {}
    denies: dict[PortSpace, list[tuple[Iterable[int], Entry]]] = {}
    for space, deny, ids, rules, auth, proxy in contributions:
        value = entry_cache.get((deny, rules, auth, proxy))
        if value is None:
            # Deny entries never redirect; a redirect without a listener priority has priority 1.
            proxy = 0 if deny else proxy
            value = entry_cache[(deny, rules, auth, proxy)] = Entry(
                deny, rules, proxy, 1 if proxy else 0, auth_type=0 if deny else auth
            )
        (denies if deny else allows).setdefault(space, []).append((ids, value))

    deny_ids: dict[PortSpace, set[int]] = {}
    for space, groups in denies.items():
        acc: set[int] = set()
        for ids, _ in groups:
            acc.update(ids)
        if acc:
            deny_ids[space] = acc

    out = MapState()
    entries, by_space = out.entries, out._by_space
    merges: dict[tuple[Entry, Entry], Entry] = {}

    def emit(space: PortSpace, groups: list, keep: set[int] | None, drop: set[int]) -> None:
        # Hot loop: per-identity work stays in C (set algebra, dict.fromkeys, map/zip); only
        # identities selected by several groups of the same port space merge in Python.
        owner: dict[int, Entry] = {}
        for ids, value in groups:
            sel = ids if isinstance(ids, (set, frozenset)) else set(ids)
            if keep is not None:
                sel = sel & keep
            if drop:
                sel = sel - drop
            if not owner:
                owner = dict.fromkeys(sel, value)
                continue
            both = owner.keys() & sel
            if len(both) < len(sel):
                owner.update(dict.fromkeys(sel - both, value))
            for i in both:
                prev = owner[i]
                if prev is not value:
                    merged = merges.get((prev, value))
                    if merged is None:
                        merged = merges[(prev, value)] = merge_entries(prev, value)
                    owner[i] = merged
        if not owner:
            return
        d, proto, port, plen = space
        keys = map(_new_key, zip(owner, repeat(d), repeat(proto), repeat(port), repeat(plen)))
        entries.update(zip(keys, owner.values(), strict=False))
        by_space.setdefault(space, {}).update(owner)

    for space, groups in denies.items():
        mine = deny_ids.get(space)
        if not mine:
            continue
        drop: set[int] = set()
        wiped = False
        for anc in ancestors(space)[1:]:
            theirs = deny_ids.get(anc)
            if theirs:
                if 0 in theirs:
                    wiped = True
                    break
                drop |= theirs & mine
        if wiped:
            continue
        if 0 in mine:  # a deny for any identity makes same-space denies for specific ones redundant
            emit(space, groups, {0}, drop)
        else:
            emit(space, groups, None, drop)

    for space, groups in allows.items():
        covering: set[int] = set()
        wiped = False
        for anc in ancestors(space):
            theirs = deny_ids.get(anc)
            if theirs:
                if 0 in theirs:
                    wiped = True
                    break
                covering |= theirs
        if not wiped:
            emit(space, groups, None, covering)
    return out


def diff(old: MapState | Mapping[Key, Entry], new: MapState | Mapping[Key, Entry]) -> MapDiff:
    """Adds, updates (same key, different entry) and deletes that turn ``old`` into ``new``."""
    o = old.entries if isinstance(old, MapState) else old
    n = new.entries if isinstance(new, MapState) else new
    adds: dict[Key, Entry] = {}
    updates: dict[Key, Entry] = {}
    for k, e in n.items():
        prev = o.get(k)
        if prev is None:
            adds[k] = e
        elif prev != e:
            updates[k] = e
    deletes = frozenset(k for k in o if k not in n)
    return MapDiff(adds, updates, deletes)
