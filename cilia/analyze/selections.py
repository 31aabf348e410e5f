"""Selector selections for a whole cluster at once, found through an index of label values.

The engine's :class:`~cilia.policy.selectorcache.SelectorCache` tests every selector against every
identity: 10,000 selectors over 10,000 identities are 10⁸ tests. Here each selector is tested only
against the identities that can meet its most selective requirement — those with a label of the key and one of
the values of an ``In``, with the key of an ``Exists``, with any ``cidr:`` label for a requirement on
a prefix (a necessary condition of each); the selector's own
:meth:`~cilia.identity.selector.Selector.matches` still decides, so selections are the engine's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping

from cilia.identity.labels import SOURCE_CIDR, Labels
from cilia.identity.selector import Operator, Selector, split_extended_key
from cilia.policy.selectorcache import SelectorCache


class IndexedSelectorCache(SelectorCache):
    """A selector cache whose first computation of a selection consults a (key, value) index."""

    def __init__(self, identities: Mapping[int, Labels]) -> None:
        super().__init__(identities)
        index: dict[tuple[str, str], list[int]] = defaultdict(list)
        keys: dict[str, list[int]] = defaultdict(list)
        cidr: list[int] = []
        for ident, labels in self.identities.items():
            has_cidr = False
            for key in labels.keys():  # noqa: SIM118 (iterating Labels yields Label objects)
                sources = labels.sources_of(key)
                keys[key].append(ident)
                has_cidr = has_cidr or SOURCE_CIDR in sources
                for value in set(sources.values()):
                    index[(key, value)].append(ident)
            if has_cidr:
                cidr.append(ident)
        self._index = dict(index)
        self._keys = dict(keys)
        self._cidr = cidr  # identities with a cidr: label (only they can meet a cidr: In or Exists)

    def _candidates(self, selector: Selector) -> Iterable[int]:
        best: Collection[int] | None = None
        for req in selector.requirements:
            source, key = split_extended_key(req.key)
            found: Collection[int]
            if req.operator not in (Operator.IN, Operator.EXISTS):
                continue
            if source == SOURCE_CIDR:
                found = self._cidr
            elif req.operator is Operator.EXISTS:
                found = self._keys.get(key, ())
            else:
                found = set()
                for value in req.values:
                    found.update(self._index.get((key, value), ()))
            if best is None or len(found) < len(best):
                best = found
        return self.identities.keys() if best is None else best

    def selections(self, selector: Selector) -> frozenset[int]:
        sel = self._selections.get(selector)
        if sel is None:
            if selector.nothing:
                sel = frozenset()
            else:
                matches, labels = selector.matches, self.identities
                sel = frozenset(i for i in self._candidates(selector) if matches(labels[i]))
            self._selections[selector] = sel
        return sel
