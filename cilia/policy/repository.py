"""The policy repository: every rule, indexed by namespace and by policy resource, with a revision
counter (semantics.md §5.1, Cilium ``pkg/policy/repository.go``).

A *resource* is one policy object, ``(kind, namespace, name)``; its rules are replaced or deleted
together. Cluster-wide rules (namespace ``""``) are candidates for every identity, namespaced
rules only for identities in that namespace.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

from cilia.policy.rules import PolicyRule


class ResourceKey(NamedTuple):
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, rule: PolicyRule) -> ResourceKey:
        return cls(rule.ref.kind, rule.ref.namespace, rule.ref.name)


class RepositoryChange(NamedTuple):
    """The rules a replace or delete removed and added, and the revision it produced."""

    removed: tuple[PolicyRule, ...]
    added: tuple[PolicyRule, ...]
    revision: int


class Repository:
    """All policy rules, by resource and by namespace."""

    def __init__(self) -> None:
        self._by_resource: dict[ResourceKey, tuple[PolicyRule, ...]] = {}
        self._by_namespace: dict[str, dict[ResourceKey, tuple[PolicyRule, ...]]] = {}
        self.revision = 1

    def replace(self, resource: ResourceKey, rules: Sequence[PolicyRule]) -> RepositoryChange:
        """Install ``rules`` as the whole content of ``resource`` (add, or replace its old rules)."""
        old = self._remove(resource)
        new = tuple(rules)
        if new:
            self._by_resource[resource] = new
            for rule in new:
                ns = self._by_namespace.setdefault(rule.namespace, {})
                ns[resource] = (*ns.get(resource, ()), rule)
        self.revision += 1
        return RepositoryChange(old, new, self.revision)

    def delete(self, resource: ResourceKey) -> RepositoryChange:
        old = self._remove(resource)
        self.revision += 1
        return RepositoryChange(old, (), self.revision)

    def _remove(self, resource: ResourceKey) -> tuple[PolicyRule, ...]:
        old = self._by_resource.pop(resource, ())
        for rule in old:
            ns = self._by_namespace.get(rule.namespace)
            if ns is not None:
                ns.pop(resource, None)
                if not ns:
                    del self._by_namespace[rule.namespace]
        return old

    def get(self, resource: ResourceKey) -> tuple[PolicyRule, ...]:
        return self._by_resource.get(resource, ())

    def resources(self) -> list[ResourceKey]:
        return sorted(self._by_resource)

    def candidates(self, namespace: str) -> Iterator[PolicyRule]:
        """Rules that may select an identity in ``namespace`` ("" = none): cluster-wide ones first."""
        for rules in self._by_namespace.get("", {}).values():
            yield from rules
        if namespace:
            for rules in self._by_namespace.get(namespace, {}).values():
                yield from rules

    def __iter__(self) -> Iterator[PolicyRule]:
        for rules in self._by_resource.values():
            yield from rules

    def __len__(self) -> int:
        return sum(len(r) for r in self._by_resource.values())
