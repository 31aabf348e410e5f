"""The policy engine façade: repository + selector cache + per-endpoint policies, updated
incrementally.

The engine keeps an :class:`EndpointPolicy` for every identity registered as a local endpoint.
A policy change recomputes only the endpoints whose labels the old or new rules select; an
identity change touches only the keys of the identities whose selections changed. toServices
peers are resolved against the Services the engine was told about (:meth:`set_services`). Every mutating
call returns ``{endpoint identity: MapDiff}``, what the kernel sync applies.

The engine also answers for identities it does not keep (:meth:`PolicyEngine.resolved`): those
policies are memoised per (identity, own named ports) and every change records which identities'
policies it may have changed (:meth:`PolicyEngine.take_affected`) — the node agent's way in, so the
agent and the offline commands (trace, connectivity, verify) decide through this one engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from cilia.identity.labels import Labels
from cilia.identity.selector import Selector
from cilia.k8s.objects import Pod, Policy, Service
from cilia.policy.errors import PolicyError
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
from cilia.policy.translate import ServiceInfo, resolve_services, translate
from cilia.policy.types import Proto

# (port name, proto) -> port number, as an endpoint's containers declare them.
PortNames = Mapping[tuple[str, int], int]
# (port name, proto) -> the port numbers every endpoint of the cluster declares under it.
ClusterPorts = Mapping[tuple[str, int], frozenset[int]]

CIDR_KEY_PREFIX = "cidr."  # extended selector keys over cidr: labels (toCIDR, CIDRSet, ipBlock)
_PROTOS = {"TCP": int(Proto.TCP), "UDP": int(Proto.UDP), "SCTP": int(Proto.SCTP)}


def policy_rules(policy: Policy, cluster: str = "default") -> list[PolicyRule]:
    """One policy object as engine rules (toServices not yet resolved: the engine does that).
    Translation errors propagate."""
    if policy.kind == "NetworkPolicy":
        return translate(policy.model)
    return translate(policy.model, cluster=cluster)


def service_infos(
    services: Iterable[Service], backends: Mapping[tuple[str, str], Sequence[str]]
) -> list[ServiceInfo]:
    """The Services as toServices sees them, in the order given; ``backends[(namespace, name)]``:
    the endpoint addresses of a selector-less Service."""
    return [
        ServiceInfo(
            name=s.name,
            namespace=s.namespace,
            selector=dict(s.selector) if s.selector else None,
            backend_ips=tuple(dict.fromkeys(backends.get((s.namespace, s.name), ()))),
            ports=tuple((p.port, p.protocol) for p in s.ports),
            labels=dict(s.labels),
        )
        for s in services
    ]


def pod_named_ports(pod: Pod | None) -> tuple[tuple[str, int, int], ...]:
    """(name, proto, port) of the pod's named container ports, lowercased as policies match them."""
    if pod is None:
        return ()
    named = {(p.name.lower(), _PROTOS.get(p.protocol.upper(), 6), p.container_port)
             for p in pod.ports if p.name}
    return tuple(sorted(named))


def rule_prefixes(rules: Iterable[PolicyRule]) -> list[str]:
    """Every prefix the rules select by (toCIDR, CIDRSet cidr and except, ipBlock, the backends of
    selector-less toServices), IPv4 first, then by address: each gets a CIDR identity and an
    ipcache entry, as Cilium's agent gives them (semantics.md §3.3)."""
    out: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for rule in rules:
        for entry in rule.entries:
            for peer in entry.peers:
                for req in peer.selector.requirements:
                    if req.key.startswith(CIDR_KEY_PREFIX):
                        with contextlib.suppress(ValueError):
                            out.add(ipaddress.ip_network(req.key[len(CIDR_KEY_PREFIX) :].replace("-", ":")))
    return [str(net) for net in sorted(out, key=lambda n: (n.version, n))]


class UnknownIdentityError(PolicyError, KeyError):
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
        self._cluster_ports: dict[tuple[str, int], frozenset[int]] | None = None  # None: from endpoints
        # Policies of identities not kept as endpoints (resolved()), and what each change affected.
        self._memo: dict[tuple[int, tuple[tuple[tuple[str, int], int], ...]], EndpointPolicy] = {}
        self._memo_uses: dict[int, set[Selector]] = defaultdict(set)  # identity -> selectors it reads
        self._tracked: set[int] = set()  # identities resolved() was asked for
        self._affected: set[int] = set()
        self._all_affected = False

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

    def resolved(self, identity: int, ports: PortNames | None = None) -> EndpointPolicy:
        """The policy of any known identity with these own named ports, memoised until a change
        may alter it (such changes are reported by :meth:`take_affected`)."""
        own = dict(ports or {})
        key = (identity, tuple(sorted(own.items())))
        pol = self._memo.get(key)
        if pol is None:
            pol = self.compute(identity, ports=own)
            self._memo[key] = pol
            self._tracked.add(identity)
            self._memo_uses[identity].update(sel for f in pol.filters for sel, _, _ in f.selectors)
        return pol

    def take_affected(self) -> set[int] | None:
        """Identities whose policy may have changed since the last call (None: any of them)."""
        if self._all_affected:
            self._all_affected = False
            self._affected.clear()
            return None
        out, self._affected = self._affected, set()
        return out

    def _invalidate(self, identities: Iterable[int]) -> None:
        for ident in identities:
            self._affected.add(ident)
            if self._memo_uses.pop(ident, None) is not None:
                for k in [k for k in self._memo if k[0] == ident]:
                    del self._memo[k]

    def _invalidate_all(self) -> None:
        self._all_affected = True
        self._memo.clear()
        self._memo_uses.clear()

    def prefixes(self) -> list[str]:
        """Every prefix the enforced rules select by (:func:`rule_prefixes`)."""
        return rule_prefixes(self.repository)

    def set_cluster_ports(self, ports: ClusterPorts) -> dict[int, MapDiff]:
        """The named ports of every endpoint of the cluster (egress named ports resolve against
        them), when the caller knows more endpoints than it keeps here (a node: the cluster's
        pods). Without it they come from the kept endpoints."""
        frozen = {k: frozenset(v) for k, v in ports.items()}
        if frozen == self._cluster_ports:
            return {}
        self._cluster_ports = frozen
        self._invalidate_all()
        return self._refresh_named_ports()

    def set_secrets(self, secrets: tuple[tuple[tuple[str, str], str], ...]) -> dict[int, MapDiff]:
        """The Secret values ``headerMatches`` ``secret`` references compare with (a node's stored
        Secrets, :func:`cilia.k8s.secrets.secret_values`); the kept policies with L7 rules are
        recomputed when they change."""
        if secrets == self.options.secrets:
            return {}
        self.options = dataclasses.replace(self.options, secrets=secrets)
        self._invalidate_all()
        return {ident: self._recompute(ident) for ident, pol in list(self._policies.items()) if pol.l7}

    def _named_ports(self, own: PortNames) -> NamedPorts:
        if self._cluster_ports is not None:
            return NamedPorts(own, self._cluster_ports)
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

    def expand_services(self, rule: PolicyRule) -> PolicyRule:
        """``rule`` with its toServices peers resolved against the Services the engine knows."""
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
            change = self.repository.replace(resource, [self.expand_services(r) for r in rules])
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
        if touched and self._tracked:
            # Any identity the rules select, resolved or not yet: its next resolution must see them.
            self._invalidate(
                i
                for i, lbls in self.cache.identities.items()
                if any(rule_selects(r, lbls, namespace_of(lbls)) for r in touched)
            )
        self._gc_selectors()
        return out

    def _gc_selectors(self) -> None:
        if self._tracked:
            # Memoised policies are dropped on every change that may affect them and resolved
            # again right after: their selectors stay cached (as selections, updated in place).
            return
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
        if self._tracked:
            changed = set(changes)
            self._invalidate(
                {*added, *removed, *(i for i, used in self._memo_uses.items() if used & changed)}
            )
            self._tracked.difference_update(removed)
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
