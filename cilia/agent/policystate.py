"""The agent's policy step: a thin adapter over :class:`cilia.policy.engine.PolicyEngine`.

The node decides through the same engine as ``cilia trace`` and the other offline commands: this
module only maps the agent's objects onto it (store keys to resources, pods to named ports, node
settings to :class:`EngineOptions`) and interprets no rule itself. The engine memoises each
identity's policy and records which identities a change may have affected
(:meth:`PolicyEngine.take_affected`); the reconciler asks only those for a new MapState.

Policy audit mode: rules of a policy annotated ``cilia.io/audit: "true"``, or of any namespaced
policy in an audited namespace, never enter the engine (the kernel enforces what the other
policies decide); they are kept in :attr:`PolicyState.audited` for the flow pipeline, which reports
the drops they would cause as AUDIT (:mod:`cilia.observe.audit`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from cilia.agent.desired import PolicyKey
from cilia.identity.labels import Labels
from cilia.k8s.objects import Pod, Policy
from cilia.policy.engine import PolicyEngine, pod_named_ports, policy_rules
from cilia.policy.mapstate import MapState
from cilia.policy.repository import Repository, ResourceKey
from cilia.policy.resolve import (
    AllowLocalhost,
    EndpointPolicy,
    EnforcementMode,
    EngineOptions,
    namespace_of,
    rule_selects,
)
from cilia.policy.rules import PolicyRule
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.translate import ServiceInfo
from cilia.policy.types import Direction

own_named_ports = pod_named_ports  # the name the agent's callers know


class PolicyState:
    """The node's policy engine with its audit-mode split and the node's pods' named ports."""

    def __init__(
        self, *, enforcement_mode: str = "default", allow_localhost: str = "always", cluster: str = "default",
        host_firewall: bool = False,
    ) -> None:
        self.engine = PolicyEngine(
            EngineOptions(
                enforcement=EnforcementMode(enforcement_mode),
                allow_localhost=AllowLocalhost(allow_localhost) is AllowLocalhost.ALWAYS,
                host_firewall=host_firewall,
            )
        )
        self.cluster = cluster
        self._sources: dict[PolicyKey, Policy] = {}
        self._raw_audited: dict[ResourceKey, tuple[PolicyRule, ...]] = {}  # toServices unresolved
        self.audited: dict[ResourceKey, tuple[PolicyRule, ...]] = {}  # audit-mode rules by resource
        self.audit_namespaces: frozenset[str] = frozenset()
        self.audit_revision = 0  # bumped whenever the audited rules change

    @property
    def options(self) -> EngineOptions:
        return self.engine.options

    @property
    def repo(self) -> Repository:
        """The enforced rules (the engine's repository)."""
        return self.engine.repository

    @property
    def cache(self) -> SelectorCache:
        return self.engine.cache

    # ------------------------------------------------------------------ changes

    def rule_audited(self, rule: PolicyRule) -> bool:
        """In audit mode by its own annotation or, for a namespaced rule, its namespace's."""
        return rule.audit or (bool(rule.namespace) and rule.namespace in self.audit_namespaces)

    def set_policy(self, key: PolicyKey, pol: Policy) -> None:
        """Add or replace one policy object (translation errors propagate; nothing changes then).
        Its audited rules are kept aside, the others go to the engine."""
        rules = policy_rules(pol, self.cluster)
        resource = ResourceKey(key.kind, key.namespace, key.name)
        audited = tuple(r for r in rules if self.rule_audited(r))
        self.engine.apply(resource, [r for r in rules if not self.rule_audited(r)])
        self._sources[key] = pol
        self._set_audited(resource, audited)

    def delete_policy(self, key: PolicyKey) -> None:
        resource = ResourceKey(key.kind, key.namespace, key.name)
        self.engine.delete(resource)
        self._sources.pop(key, None)
        self._set_audited(resource, ())

    def _set_audited(self, resource: ResourceKey, raw: tuple[PolicyRule, ...]) -> None:
        if raw:
            self._raw_audited[resource] = raw
        else:
            self._raw_audited.pop(resource, None)
        rules = tuple(self.engine.expand_services(r) for r in raw)
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
        """Services changed: toServices peers are resolved again (enforced and audited rules)."""
        self.engine.set_services(services)
        for resource, raw in list(self._raw_audited.items()):
            if any(e.services for r in raw for e in r.entries):
                self._set_audited(resource, raw)

    def set_cluster_ports(self, pods: Iterable[Pod]) -> None:
        """Named ports of every pod of the cluster (egress named ports resolve against them)."""
        ports: dict[tuple[str, int], set[int]] = defaultdict(set)
        for pod in pods:
            for name, proto, number in pod_named_ports(pod):
                ports[(name, proto)].add(number)
        self.engine.set_cluster_ports({k: frozenset(v) for k, v in ports.items()})

    def add_identity(self, identity: int, labels: Labels) -> None:
        self.engine.add_identity(identity, labels)

    def remove_identity(self, identity: int) -> None:
        self.engine.remove_identity(identity)

    def take_affected(self) -> set[int] | None:
        """Identities whose policy may have changed since the last call (None: all of them)."""
        return self.engine.take_affected()

    def prefixes(self) -> set[str]:
        """Every prefix the enforced rules select by (:func:`cilia.policy.engine.rule_prefixes`). The
        node gives each a CIDR identity and an ipcache entry, as Cilium's agent does, so external
        addresses resolve to the most specific one."""
        return set(self.engine.prefixes())

    # ------------------------------------------------------------------ queries

    def endpoint_policy(self, identity: int, pod: Pod | None = None) -> EndpointPolicy:
        """The identity's policy with ``pod``'s named ports (an identity the engine does not know
        resolves with no labels, so that only rules selecting everything apply)."""
        own = {(n, p): port for n, p, port in pod_named_ports(pod)}
        if self.cache.labels_of(identity) is None:
            return self.engine.compute(identity, Labels(), own)
        return self.engine.resolved(identity, own)

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
