"""The agent's policy step: rules and identities in, MapState per identity out, incrementally.

Wraps the engine's pieces (:mod:`cilia.policy.repository`, :mod:`cilia.policy.selectorcache`,
:func:`cilia.policy.resolve.resolve_policy`) and keeps, per identity, the resolved
:class:`EndpointPolicy`. Every change records which identities' policies may have changed
("affected"): a policy change affects the identities its old or new subjects select; an identity
appearing or disappearing affects the identities whose resolved policy uses a selector whose
selection changed. The reconciler asks only those for a new MapState.

Policy audit mode: rules of a policy annotated ``cilia.io/audit: "true"``, or of any namespaced
policy in an audited namespace, never enter the repository (the kernel enforces what the other
policies decide); they are kept in :attr:`PolicyState.audited` for the flow pipeline, which reports
the drops they would cause as AUDIT (:mod:`cilia.observe.audit`).
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from cilia.agent.desired import PolicyKey
from cilia.identity.labels import Labels
from cilia.identity.selector import Selector
from cilia.k8s.objects import Pod, Policy
from cilia.policy.mapstate import MapState
from cilia.policy.repository import Repository, ResourceKey
from cilia.policy.resolve import (
    EndpointPolicy,
    EnforcementMode,
    EngineOptions,
    NamedPorts,
    namespace_of,
    resolve_policy,
    rule_selects,
)
from cilia.policy.rules import PolicyRule
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.translate import ServiceInfo, resolve_services, translate
from cilia.policy.types import Direction, Proto

CIDR_KEY_PREFIX = "cidr."  # extended selector keys over cidr: labels
_PROTOS = {"TCP": int(Proto.TCP), "UDP": int(Proto.UDP), "SCTP": int(Proto.SCTP)}


def own_named_ports(pod: Pod | None) -> tuple[tuple[str, int, int], ...]:
    """(name, proto, port) of the pod's named container ports, lowercased as policies match them."""
    if pod is None:
        return ()
    return tuple(
        sorted(
            {
                (p.name.lower(), _PROTOS.get(p.protocol.upper(), 6), p.container_port)
                for p in pod.ports
                if p.name
            }
        )
    )


class PolicyState:
    """Policy resolution for one node's identities with change tracking."""

    def __init__(
        self, *, enforcement_mode: str = "default", allow_localhost: str = "always", cluster: str = "default"
    ) -> None:
        self.options = EngineOptions(
            enforcement=EnforcementMode(enforcement_mode), allow_localhost=allow_localhost == "always"
        )
        self.cluster = cluster
        self.repo = Repository()
        self.cache = SelectorCache()
        self.services: list[ServiceInfo] = []
        self._sources: dict[PolicyKey, Policy] = {}
        self._resolved: dict[tuple[int, tuple[tuple[str, int, int], ...]], EndpointPolicy] = {}
        self._uses: dict[int, set[Selector]] = defaultdict(set)  # identity -> selectors its policy reads
        self._cluster_ports: dict[tuple[str, int], frozenset[int]] = {}
        self._affected: set[int] = set()
        self._all_affected = False
        self.audited: dict[ResourceKey, tuple[PolicyRule, ...]] = {}  # audit-mode rules by resource
        self.audit_namespaces: frozenset[str] = frozenset()
        self.audit_revision = 0  # bumped whenever the audited rules change

    # ------------------------------------------------------------------ changes

    def _mark(self, identities: Iterable[int]) -> None:
        for i in identities:
            self._affected.add(i)
            self._uses.pop(i, None)
            for k in [k for k in self._resolved if k[0] == i]:
                del self._resolved[k]

    def _mark_all(self) -> None:
        self._all_affected = True
        self._resolved.clear()
        self._uses.clear()

    def _subjects(self, rules: Iterable[PolicyRule]) -> set[int]:
        rules = list(rules)
        out = set()
        for ident, labels in self.cache.identities.items():
            ns = namespace_of(labels)
            if any(rule_selects(r, labels, ns) for r in rules):
                out.add(ident)
        return out

    def _translate(self, pol: Policy) -> list[PolicyRule]:
        kwargs: dict[str, Any] = {} if pol.kind == "NetworkPolicy" else {"cluster": self.cluster}
        rules = []
        for rule in translate(pol.model, **kwargs):
            rules.append(resolve_services(rule, self.services))
        return rules

    def rule_audited(self, rule: PolicyRule) -> bool:
        """In audit mode by its own annotation or, for a namespaced rule, its namespace's."""
        return rule.audit or (bool(rule.namespace) and rule.namespace in self.audit_namespaces)

    def set_policy(self, key: PolicyKey, pol: Policy) -> None:
        """Add or replace one policy object (translation errors propagate; nothing changes then).
        Its audited rules are kept aside, the others go to the repository."""
        rules = self._translate(pol)
        resource = ResourceKey(key.kind, key.namespace, key.name)
        enforce = [r for r in rules if not self.rule_audited(r)]
        audited = tuple(r for r in rules if self.rule_audited(r))
        change = self.repo.replace(resource, enforce)
        self._sources[key] = pol
        self._set_audited(resource, audited)
        self._mark(self._subjects((*change.removed, *change.added)))

    def delete_policy(self, key: PolicyKey) -> None:
        resource = ResourceKey(key.kind, key.namespace, key.name)
        change = self.repo.delete(resource)
        self._sources.pop(key, None)
        self._set_audited(resource, ())
        self._mark(self._subjects(change.removed))

    def _set_audited(self, resource: ResourceKey, rules: tuple[PolicyRule, ...]) -> None:
        if self.audited.get(resource, ()) == rules:
            return
        if rules:
            self.audited[resource] = rules
        else:
            self.audited.pop(resource, None)
        self.audit_revision += 1

    def set_audit_namespaces(self, namespaces: Iterable[str]) -> None:
        """Namespaces whose policies are all in audit mode; their policies are split again."""
        new = frozenset(namespaces)
        changed = new ^ self.audit_namespaces
        self.audit_namespaces = new
        for key, pol in list(self._sources.items()):
            if key.namespace in changed:
                self.set_policy(key, pol)

    def set_services(self, services: list[ServiceInfo]) -> None:
        """Services changed: policies with toServices are translated again."""
        self.services = list(services)
        for key, pol in list(self._sources.items()):
            rules = (*self.repo.get(ResourceKey(*key)), *self.audited.get(ResourceKey(*key), ()))
            if any(e.services for r in rules for e in r.entries):
                self.set_policy(key, pol)

    def set_cluster_ports(self, pods: Iterable[Pod]) -> None:
        """Named ports of every local pod (egress named ports resolve against them)."""
        ports: dict[tuple[str, int], set[int]] = defaultdict(set)
        for pod in pods:
            for name, proto, number in own_named_ports(pod):
                ports[(name, proto)].add(number)
        frozen = {k: frozenset(v) for k, v in ports.items()}
        if frozen != self._cluster_ports:
            self._cluster_ports = frozen
            self._mark_all()

    def add_identity(self, identity: int, labels: Labels) -> None:
        changed = self.cache.update_identities(added={identity: labels})
        self._mark({identity, *self._users_of(changed)})

    def remove_identity(self, identity: int) -> None:
        changed = self.cache.update_identities(removed=[identity])
        self._mark({identity, *self._users_of(changed)})

    def _users_of(self, selectors: Iterable[Selector]) -> set[int]:
        sels = set(selectors)
        return {i for i, used in self._uses.items() if used & sels}

    def take_affected(self) -> set[int] | None:
        """Identities whose policy may have changed since the last call (None: all of them)."""
        if self._all_affected:
            self._all_affected = False
            self._affected.clear()
            return None
        out, self._affected = self._affected, set()
        return out

    def prefixes(self) -> set[str]:
        """Every prefix the rules select by (toCIDR, toCIDRSet cidr and except, ipBlock, backends
        of selector-less toServices). The node gives each a CIDR identity and an ipcache entry,
        as Cilium's agent does, so external addresses resolve to the most specific one."""
        out: set[str] = set()
        for rule in self.repo:
            for entry in rule.entries:
                for peer in entry.peers:
                    for req in peer.selector.requirements:
                        if req.key.startswith(CIDR_KEY_PREFIX):
                            with contextlib.suppress(ValueError):
                                net = ipaddress.ip_network(req.key[len(CIDR_KEY_PREFIX) :].replace("-", ":"))
                                out.add(str(net))
        return out

    # ------------------------------------------------------------------ queries

    def endpoint_policy(self, identity: int, pod: Pod | None = None) -> EndpointPolicy:
        own = own_named_ports(pod)
        key = (identity, own)
        pol = self._resolved.get(key)
        if pol is None:
            labels = self.cache.labels_of(identity) or Labels()
            named = NamedPorts({(n, p): port for n, p, port in own}, self._cluster_ports)
            pol = resolve_policy(
                identity,
                labels,
                self.repo.candidates(namespace_of(labels)),
                self.cache,
                named_ports=named,
                options=self.options,
                revision=self.repo.revision,
            )
            self._resolved[key] = pol
            self._uses[identity].update(sel for f in pol.filters for sel, _, _ in f.selectors)
        return pol

    def mapstate(self, identity: int, pod: Pod | None = None) -> MapState:
        return self.endpoint_policy(identity, pod).map_state

    def enforcement(self, identity: int) -> dict[str, bool]:
        if identity not in self.cache.identities:
            return {"ingress": False, "egress": False}
        pol = self.endpoint_policy(identity)
        return {d.label: pol.is_enforced(d) for d in (Direction.INGRESS, Direction.EGRESS)}

    def summary(self, identity: int, pod: Pod | None = None) -> dict[str, Any]:
        """What ``describe pod`` shows: the policies selecting the identity and enforcement."""
        pol = self.endpoint_policy(identity, pod)
        labels = self.cache.labels_of(identity) or Labels()
        ns = namespace_of(labels)
        audited = sorted(
            {_ref_name(r) for rs in self.audited.values() for r in rs if rule_selects(r, labels, ns)}
        )
        return {
            # audit-mode policies are listed too, marked: they select the pod but only report
            "policies": sorted(
                {_ref_name(r) for r in pol.selection.rules} | {f"{a} (audit mode)" for a in audited}
            ),
            "audited": audited,
            "enforcement": {d.label: pol.is_enforced(d) for d in (Direction.INGRESS, Direction.EGRESS)},
            "default_deny_by": {
                d.label: sorted({r.describe() for r in pol.default_deny_by[d]})
                for d in (Direction.INGRESS, Direction.EGRESS)
            },
            "entries": len(pol.map_state),
        }


def _ref_name(rule: PolicyRule) -> str:
    ref = rule.ref
    return f"{ref.kind}/{ref.namespace + '/' if ref.namespace else ''}{ref.name}"
