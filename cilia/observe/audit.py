"""Policy audit mode: drops that only audited policies would cause are let through and reported
with verdict AUDIT.

Three switches, from broad to narrow:

* **node** (``cilia audit on|off``): every endpoint of the node is in audit mode. This is the
  datapath's per-endpoint audit flag (``Datapath.set_audit``): the kernel turns *every* drop into an
  allow and flags the event audited, with the reason and the rule cookie of the drop.
* **namespace** (annotation ``cilia.io/audit: "true"`` on a Namespace): every namespaced policy
  (CNP, NetworkPolicy) in that namespace is audited, as if each carried the annotation.
* **policy** (the same annotation on a CNP/CCNP/NetworkPolicy; ``PolicyRule.audit``).

Audited policies never reach the datapath. The engine resolves the endpoints' policies from the
enforced rules only, so the kernel enforces exactly "what the other policies decide"; a flow an
audited policy would drop is forwarded (a policy-verdict event for its new connection). The flow
pipeline then looks that flow up in the endpoint's *full* policy (enforced + audited rules,
:meth:`AuditRules.full_policy`, the same lookup as the datapath, :func:`cilia.datapath.sim.policy_lookup`):
if the full policy drops it, the flow is reported AUDIT and names the audited rule (explicit deny)
or the audited policies that turned default deny on. A drop of the enforced policy stays DROPPED:
audit mode never hides what non-audited policies decide.

How the node agent does it (it sits below this package, so it repeats the small split rule):

1. :class:`cilia.agent.policystate.PolicyState` splits every policy object as :func:`split` does
   (``rule.audit`` or its namespace audited): the enforced rules go to the repository and the
   kernel, the audited ones to ``PolicyState.audited`` (by resource, with ``audit_revision``).
   Audited namespaces are those of ``cilia audit on -n NS`` plus the Namespaces annotated
   ``cilia.io/audit: "true"``; a change splits that namespace's policies again.
2. The kernel's enforcement flags stay on in both directions (the default), so every new
   connection of an audited endpoint yields an event even where only audited policies enforce.
3. Node audit: the reconciler sets ``Datapath.set_audit(endpoint_id, node)`` on every endpoint at
   attach, at re-attach on restart and on ``POST /v1/audit`` (``cilia audit on|off``, which also
   writes ``audit.json`` in the state directory; the agent reads it at start).
4. :class:`cilia.observe.agentview.AgentNodeView` copies ``PolicyState.audited`` into an
   :class:`AuditRules` and gives the flow pipeline ``audit_policies`` = the full policy of each
   local identity some audited rule selects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cilia.datapath.sim import policy_lookup
from cilia.identity.labels import Labels
from cilia.policy.repository import ResourceKey
from cilia.policy.resolve import (
    LABEL_HOST,
    EndpointPolicy,
    EngineOptions,
    NamedPorts,
    distill_filters,
    namespace_of,
    resolve_filters,
    rule_selects,
    select_rules,
)
from cilia.policy.rules import PolicyRule
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.translate import AUDIT_ANNOTATION
from cilia.policy.types import Direction, Verdict
from cilia.store.files import write_private

SETTINGS_FILE = "audit.json"


def annotation_on(annotations: Mapping[str, str] | None) -> bool:
    """Whether ``cilia.io/audit`` is set to true in an object's annotations."""
    return str((annotations or {}).get(AUDIT_ANNOTATION, "")).strip().lower() == "true"


@dataclass(frozen=True)
class AuditSettings:
    """The node's audit switch and the namespaces whose policies are audited."""

    node: bool = False
    namespaces: frozenset[str] = field(default_factory=frozenset)
    host: bool = False  # the host endpoint alone (host firewall: `cilia audit on --host`)

    def save(self, state_dir: Path) -> Path:
        """Write ``audit.json`` in the state directory (atomic rename)."""
        path = state_dir / SETTINGS_FILE
        settings: dict[str, object] = {"node": self.node, "namespaces": sorted(self.namespaces)}
        if self.host:
            settings["host"] = True
        write_private(path, json.dumps(settings, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, state_dir: Path) -> AuditSettings:
        """The saved settings (all off when never saved)."""
        try:
            data = json.loads((state_dir / SETTINGS_FILE).read_text())
        except FileNotFoundError:
            return cls()
        return cls(bool(data.get("node", False)), frozenset(data.get("namespaces", ())),
                   bool(data.get("host", False)))


def rule_audited(rule: PolicyRule, namespace_audited: Callable[[str], bool] = lambda ns: False) -> bool:
    """A rule is audited by its own annotation or, for a namespaced rule, its namespace's."""
    return rule.audit or (bool(rule.namespace) and namespace_audited(rule.namespace))


def split(
    rules: Iterable[PolicyRule], namespace_audited: Callable[[str], bool] = lambda ns: False
) -> tuple[list[PolicyRule], list[PolicyRule]]:
    """(enforced, audited) rules of a policy object."""
    enforce: list[PolicyRule] = []
    audited: list[PolicyRule] = []
    for r in rules:
        (audited if rule_audited(r, namespace_audited) else enforce).append(r)
    return enforce, audited


class AuditRules:
    """The audited rules by policy resource, and the full policies they imply (cached by content:
    the enforced policy and the audited rule set)."""

    def __init__(self) -> None:
        self._rules: dict[ResourceKey, tuple[PolicyRule, ...]] = {}
        self._cache: dict[tuple[object, ...], EndpointPolicy | None] = {}
        self.revision = 0  # bumped on every change

    def set(self, resource: ResourceKey, rules: Sequence[PolicyRule]) -> None:
        if rules:
            self._rules[resource] = tuple(rules)
        else:
            self._rules.pop(resource, None)
        self._cache.clear()
        self.revision += 1

    def delete(self, resource: ResourceKey) -> None:
        self.set(resource, ())

    def rules(self) -> tuple[PolicyRule, ...]:
        return tuple(r for rs in self._rules.values() for r in rs)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def selecting(self, labels: Labels) -> tuple[PolicyRule, ...]:
        ns = namespace_of(labels)
        return tuple(r for r in self.rules() if rule_selects(r, labels, ns))

    def full_policy(
        self,
        enforced: EndpointPolicy,
        identities: Mapping[int, Labels],
        options: EngineOptions = EngineOptions(),
        named_ports: NamedPorts = NamedPorts(),
    ) -> EndpointPolicy | None:
        """The endpoint's policy with the audited rules added; None when no audited rule selects it.
        Resolved against a private selector cache over ``identities``, so the caller's engine is
        never touched (the flow reader runs beside the reconciler)."""
        extra = self.selecting(enforced.labels)
        if not extra:
            return None
        # rules are keyed by their refs: a changed rule changes the revision or clears the cache
        key = (
            enforced.identity,
            enforced.labels,
            enforced.revision,
            options,
            named_ports_key(named_ports),
            tuple(r.ref for r in enforced.selection.rules),
            frozenset(identities),
        )
        if key in self._cache:
            return self._cache[key]
        cache = SelectorCache(dict(identities))
        selection = select_rules((*enforced.selection.rules, *extra), enforced.labels, options)
        filters = resolve_filters(selection)
        ms = distill_filters(
            filters, selection, cache, named_ports, is_host=LABEL_HOST in enforced.labels, options=options
        )
        full = EndpointPolicy(enforced.identity, enforced.labels, enforced.revision, selection, filters, ms)
        self._cache[key] = full
        return full


def named_ports_key(np: NamedPorts) -> tuple[object, ...]:
    return (
        tuple(sorted(np.own.items())),
        tuple(sorted((k, tuple(sorted(v))) for k, v in np.cluster.items())),
    )


def classify(full: EndpointPolicy, direction: Direction, peer: int, proto: int, port: int) -> Verdict | None:
    """The verdict the full policy gives a flow the enforced policy forwarded: None if it allows it
    too, else the drop audit mode let through (``audited`` set)."""
    v = policy_lookup(full.map_state, peer, int(direction), proto, port, audit=True)
    return v if v.audited else None
