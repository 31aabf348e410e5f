"""The policy engine façade: repository + selector cache + per-endpoint policies, updated
incrementally.

The engine keeps an :class:`EndpointPolicy` for every identity registered as a local endpoint.
A policy change recomputes only the endpoints whose labels the old or new rules select; an
identity change touches only the keys of the identities whose selections changed. toServices
peers are resolved against the Services the engine was told about (:meth:`set_services`). Every mutating
call returns ``{endpoint identity: MapDiff}``, what the kernel sync applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from cilia.identity.labels import Labels
from cilia.identity.selector import Selector
from cilia.policy.mapstate import MapDiff, MapState, diff
from cilia.policy.repository import Repository, ResourceKey
from cilia.policy.resolve import (
    LABEL_HOST,
    EndpointPolicy,
    EngineOptions,
    NamedPorts,
    distill_filters,
    endpoint_l7,
    namespace_of,
    resolve_policy,
    rule_selects,
)
from cilia.policy.rules import PolicyRule
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.translate import ServiceInfo, resolve_services

# (port name, proto) -> port number, as an endpoint's containers declare them.
PortNames = Mapping[tuple[str, int], int]


class UnknownIdentityError(KeyError):
    """An endpoint was registered with an identity the engine was never told about."""

    def __init__(self, identity: int) -> None:
        super().__init__(f"identity {identity} is not known to the policy engine (add_identity first)")
        self.identity = identity


class PolicyEngine:
    """Rules and identities in, per-endpoint MapState (and its changes) out."""

    def __init__(self, options: EngineOptions | None = None, identities: Mapping[int, Labels] | None = None):
        self.options = options or EngineOptions()
        self.repository = Repository()
        self.cache = SelectorCache(identities)
        self._ports: dict[int, PortNames] = {}
        self._policies: dict[int, EndpointPolicy] = {}
        self._raw: dict[ResourceKey, tuple[PolicyRule, ...]] = {}
        self._services: tuple[ServiceInfo, ...] = ()

    # ------------------------------------------------------------------ queries

    @property
    def revision(self) -> int:
        return self.repository.revision

    def endpoints(self) -> list[int]:
        return sorted(self._policies)

    def policy(self, identity: int) -> EndpointPolicy:
        """The kept policy of a local endpoint identity."""
        return self._policies[identity]

    def compute(
        self, identity: int, labels: Labels | None = None, ports: PortNames | None = None
    ) -> EndpointPolicy:
        """Resolve the policy of any identity now (offline questions), without keeping it."""
        lbls = labels if labels is not None else self._labels(identity)
        return resolve_policy(
            identity,
            lbls,
            self.repository.candidates(namespace_of(lbls)),
            self.cache,
            named_ports=self._named_ports(ports if ports is not None else self._ports.get(identity, {})),
            options=self.options,
            revision=self.revision,
        )

    def _labels(self, identity: int) -> Labels:
        lbls = self.cache.labels_of(identity)
        if lbls is None:
            raise UnknownIdentityError(identity)
        return lbls

    def _named_ports(self, own: PortNames) -> NamedPorts:
        cluster: dict[tuple[str, int], set[int]] = {}
        for ports in self._ports.values():
            for k, port in ports.items():
                cluster.setdefault(k, set()).add(port)
        return NamedPorts(own, {k: frozenset(v) for k, v in cluster.items()})

    # ------------------------------------------------------------------ endpoints

    def add_endpoint(self, identity: int, named_ports: PortNames | None = None) -> dict[int, MapDiff]:
        """Start keeping the policy of a local endpoint identity (or update its named ports).
        Other endpoints whose egress named ports resolve differently now are recomputed too."""
        self._labels(identity)
        old_ports = self._ports.get(identity, {})
        self._ports[identity] = dict(named_ports or {})
        old = self._policies.get(identity)
        self._policies[identity] = new = self.compute(identity)
        out = {}
        if old_ports != self._ports[identity]:
            out = self._refresh_named_ports(exclude=identity)
        out[identity] = diff(old.map_state if old else {}, new.map_state)
        return out

    def remove_endpoint(self, identity: int) -> dict[int, MapDiff]:
        """Stop keeping an endpoint's policy (its whole MapState is deleted)."""
        old = self._policies.pop(identity, None)
        out = self._refresh_named_ports() if self._ports.pop(identity, None) else {}
        out[identity] = diff(old.map_state if old else {}, {})
        return out

    def _refresh_named_ports(self, exclude: int | None = None) -> dict[int, MapDiff]:
        out: dict[int, MapDiff] = {}
        for ident, pol in list(self._policies.items()):
            if ident != exclude and any(f.name for f in pol.filters):
                out[ident] = self._recompute(ident)
        return out

    def _recompute(self, identity: int) -> MapDiff:
        old = self._policies[identity]
        self._policies[identity] = new = self.compute(identity)
        return diff(old.map_state, new.map_state)

    # ------------------------------------------------------------------ policies

    def apply(self, resource: ResourceKey, rules: Sequence[PolicyRule]) -> dict[int, MapDiff]:
        """Add or replace a policy resource; recompute only the endpoints its old or new rules select."""
        return self._replace_many([(resource, tuple(rules))])

    def apply_rules(self, rules: Sequence[PolicyRule]) -> dict[int, MapDiff]:
        """Apply rules of one or more resources (grouped by their RuleRef)."""
        by: dict[ResourceKey, list[PolicyRule]] = {}
        for r in rules:
            by.setdefault(ResourceKey.of(r), []).append(r)
        return self._replace_many([(res, tuple(rs)) for res, rs in by.items()])

    def delete(self, resource: ResourceKey) -> dict[int, MapDiff]:
        return self._replace_many([(resource, ())])

    def set_services(self, services: Sequence[ServiceInfo]) -> dict[int, MapDiff]:
        """The Services that exist changed: re-resolve every toServices peer (semantics.md §7)."""
        self._services = tuple(services)
        return self._replace_many(
            [(res, raw) for res, raw in self._raw.items() if any(e.services for r in raw for e in r.entries)]
        )

    def _expand_services(self, rule: PolicyRule) -> PolicyRule:
        return resolve_services(rule, self._services)

    def _replace_many(
        self, changes: Sequence[tuple[ResourceKey, tuple[PolicyRule, ...]]]
    ) -> dict[int, MapDiff]:
        touched: list[PolicyRule] = []
        for resource, rules in changes:
            if rules:
                self._raw[resource] = rules
            else:
                self._raw.pop(resource, None)
            change = self.repository.replace(resource, [self._expand_services(r) for r in rules])
            touched.extend(change.removed)
            touched.extend(change.added)
        return self._after_rules_change(touched)

    def _after_rules_change(self, touched: Iterable[PolicyRule]) -> dict[int, MapDiff]:
        touched = tuple(touched)
        out: dict[int, MapDiff] = {}
        for ident in list(self._policies):
            lbls = self._labels(ident)
            ns = namespace_of(lbls)
            if any(rule_selects(r, lbls, ns) for r in touched):
                d = self._recompute(ident)
                if d:
                    out[ident] = d
        self._gc_selectors()
        return out

    def _gc_selectors(self) -> None:
        used: set[Selector] = set()
        for pol in self._policies.values():
            for f in pol.filters:
                used.update(s for s, _, _ in f.selectors)
        self.cache.retain(used)

    # ------------------------------------------------------------------ identities

    def add_identity(self, identity: int, labels: Labels) -> dict[int, MapDiff]:
        return self.update_identities({identity: labels}, ())

    def remove_identity(self, identity: int) -> dict[int, MapDiff]:
        return self.update_identities({}, (identity,))

    def update_identities(
        self, added: Mapping[int, Labels] | None = None, removed: Iterable[int] = ()
    ) -> dict[int, MapDiff]:
        """Identities appeared, changed labels or went away: update the selections and only the
        affected keys of the kept policies. A removed endpoint identity stops being kept."""
        added = dict(added or {})
        removed = tuple(removed)
        relabelled = {
            i for i, lbls in added.items() if i in self._policies and self.cache.labels_of(i) != lbls
        }
        changes = self.cache.update_identities(added, removed)
        out: dict[int, MapDiff] = {}
        for ident in removed:
            if ident in self._policies:
                out.update(self.remove_endpoint(ident))
        for ident in relabelled:
            out[ident] = self._recompute(ident)
        for ident, pol in list(self._policies.items()):
            if ident in relabelled:
                continue
            touched: set[int] = set()
            for f in pol.filters:
                for sel, _, _ in f.selectors:
                    ch = changes.get(sel)
                    if ch is not None:
                        touched |= ch.added | ch.removed
            if not touched:
                continue
            d = self._update_keys(ident, pol, frozenset(touched))
            if d:
                out[ident] = d
        return out

    def _update_keys(self, ident: int, pol: EndpointPolicy, touched: frozenset[int]) -> MapDiff:
        """Recompute only the keys of the ``touched`` peer identities."""
        old_ms = pol.map_state
        ms = old_ms.copy()
        for k in old_ms.of_identities(touched):
            ms.drop(k)
        partial: MapState = distill_filters(
            pol.filters,
            pol.selection,
            self.cache,
            self._named_ports(self._ports.get(ident, {})),
            is_host=LABEL_HOST in pol.labels,
            options=self.options,
            only=touched,
        )
        for k, e in partial.items():
            if k.identity in touched:
                ms.put(k, e)
        named = self._named_ports(self._ports.get(ident, {}))
        l7 = endpoint_l7(pol.identity, pol.filters, self.cache, named, self.options) if pol.l7 else ()
        self._policies[ident] = EndpointPolicy(
            pol.identity, pol.labels, self.revision, pol.selection, pol.filters, ms, l7
        )
        return diff(old_ms.of_identities(touched), ms.of_identities(touched))
