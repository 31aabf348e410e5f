"""The selector cache: every distinct peer selector -> the identities it selects (semantics.md §5.1).

Selectors are values (hashable by content), so rules that write the same peer share one entry.
Identity additions and removals update every cached selection incrementally and report which
selectors changed, which is what the engine turns into incremental MapState changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from cilia.identity.labels import Labels
from cilia.identity.selector import Selector


class SelectionChange(NamedTuple):
    """How one selector's selection changed in one identity update."""

    added: frozenset[int]
    removed: frozenset[int]


class SelectorCache:
    """Selections of cached selectors over a set of numeric identities."""

    def __init__(self, identities: Mapping[int, Labels] | None = None) -> None:
        self._identities: dict[int, Labels] = dict(identities or {})
        self._selections: dict[Selector, frozenset[int]] = {}
        self._users: dict[Selector, int] = {}

    @property
    def identities(self) -> Mapping[int, Labels]:
        return self._identities

    def labels_of(self, identity: int) -> Labels | None:
        return self._identities.get(identity)

    def selections(self, selector: Selector) -> frozenset[int]:
        """The identities ``selector`` selects (cached; computed on first use)."""
        sel = self._selections.get(selector)
        if sel is None:
            if selector.nothing:
                sel = frozenset()
            else:
                matches = selector.matches
                sel = frozenset(i for i, lbls in self._identities.items() if matches(lbls))
            self._selections[selector] = sel
        return sel

    def add_selector(self, selector: Selector) -> frozenset[int]:
        """Register one more user of ``selector`` and return its selection."""
        self._users[selector] = self._users.get(selector, 0) + 1
        return self.selections(selector)

    def remove_selector(self, selector: Selector) -> None:
        """Drop one user; the selection is forgotten with its last user."""
        left = self._users.get(selector, 0) - 1
        if left > 0:
            self._users[selector] = left
        else:
            self._users.pop(selector, None)
            self._selections.pop(selector, None)

    def retain(self, selectors: set[Selector]) -> None:
        """Forget cached selections not in ``selectors`` and without registered users."""
        for sel in [s for s in self._selections if s not in selectors and s not in self._users]:
            del self._selections[sel]

    def __contains__(self, selector: object) -> bool:
        return selector in self._selections

    def __len__(self) -> int:
        return len(self._selections)

    def update_identities(
        self, added: Mapping[int, Labels] | None = None, removed: Iterable[int] = ()
    ) -> dict[Selector, SelectionChange]:
        """Apply identity additions (or label changes of an existing id) and removals; return the
        selectors whose selection changed."""
        changes: dict[Selector, tuple[set[int], set[int]]] = {}
        for ident in removed:
            if self._identities.pop(ident, None) is None:
                continue
            for sel, ids in self._selections.items():
                if ident in ids:
                    changes.setdefault(sel, (set(), set()))[1].add(ident)
        for ident, lbls in (added or {}).items():
            self._identities[ident] = lbls
            for sel, ids in self._selections.items():
                now = sel.matches(lbls)
                if now and ident not in ids:
                    changes.setdefault(sel, (set(), set()))[0].add(ident)
                elif not now and ident in ids:
                    changes.setdefault(sel, (set(), set()))[1].add(ident)
        out: dict[Selector, SelectionChange] = {}
        for sel, (plus, minus) in changes.items():
            self._selections[sel] = (self._selections[sel] - minus) | plus
            out[sel] = SelectionChange(frozenset(plus), frozenset(minus))
        return out
