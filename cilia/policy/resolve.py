"""Per-identity policy resolution: matching rules -> enforcement -> L4 filters -> MapState
(semantics.md §4, §5.1; Cilium ``repository.go computePolicyEnforcementAndRules``, ``rule.go``,
``l4.go toMapState``, ``resolve.go DistillPolicy``).

* :func:`select_rules` finds the rules whose subject selects the identity and decides, per
  direction, whether policy is enforced and whether default deny is on (§4.1, §4.2).
* :func:`resolve_filters` merges the rules' entries into L4 filters keyed by
  (direction, proto, port, end port, port name), each mapping a peer selector to allow/deny and
  the rules that wrote it; fromRequires/toRequires are AND-ed into endpoint peers (§4.7).
* :func:`distill_filters` expands filters x selected identities into MapState (§5.4), adding the
  allow-any keys of unenforced directions and the localhost allow (§4.8).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from cilia.identity.labels import SOURCE_K8S, SOURCE_RESERVED, Label, Labels
from cilia.identity.selector import Selector
from cilia.k8s.frozen import frozen
from cilia.policy.filters import Filter, NamedPorts
from cilia.policy.l7resolve import (
    entry_l7,
    filter_proxy_port,
    host_wildcard_l7,
    merge_parser,
    merge_spec,
    port_policies,
    proxy_port_map,
    selector_redirects,
)
from cilia.policy.mapstate import Contribution, MapState, distill
from cilia.policy.portrange import port_range_to_masked
from cilia.policy.rules import PeerKind, PolicyRule, PortProto
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.types import Direction, Proto, RuleRef

if TYPE_CHECKING:  # the L7 model: built only for policies with L7 rules (cilia.policy.l7resolve)
    from cilia.policy.l7 import L7PortPolicy

NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
HOST_IDENTITY = 1
LABEL_HOST = Label(SOURCE_RESERVED, "host", "")
LABEL_INIT = Label(SOURCE_RESERVED, "init", "")

DIRECTIONS = (Direction.INGRESS, Direction.EGRESS)


def _synthetic(name: str) -> RuleRef:
    """A synthetic entry's attribution, ``reserved:io.cilium.policy.derived-from=<name>``."""
    return RuleRef("reserved", "", name, "", -1)


ALLOW_ANY = {
    Direction.INGRESS: _synthetic("allow-any-ingress"),
    Direction.EGRESS: _synthetic("allow-any-egress"),
}
ALLOW_LOCALHOST_INGRESS = _synthetic("allow-localhost-ingress")
# The allow-all Cilium synthesizes when a direction is enforced only by policies with
# enableDefaultDeny false (§4.2). Cilium gives it no labels; cilia names it so flows can say why.
DEFAULT_ALLOW = {
    Direction.INGRESS: _synthetic("default-allow-ingress"),
    Direction.EGRESS: _synthetic("default-allow-egress"),
}


class EnforcementMode(StrEnum):
    """The node's policy enforcement mode (Cilium's ``--enable-policy``)."""

    DEFAULT = "default"
    ALWAYS = "always"
    NEVER = "never"


class AllowLocalhost(StrEnum):
    """Whether the node's own host may reach its endpoints regardless of policy (``--allow-localhost``);
    :attr:`EngineOptions.allow_localhost` is its boolean."""

    ALWAYS = "always"
    POLICY = "policy"


@frozen
class EngineOptions:
    """Node-level switches that change decisions (semantics.md "Choices")."""

    enforcement: EnforcementMode = EnforcementMode.DEFAULT
    allow_localhost: bool = True
    host_firewall: bool = False
    # L7 proxies: (parser, direction, port) overrides of cilia.policy.l7.DEFAULT_PROXY_PORTS, and
    # the Secret values headerMatches refer to, ((namespace, name), value) pairs.
    proxy_ports: tuple[tuple[str, int, int], ...] = ()
    secrets: tuple[tuple[tuple[str, str], str], ...] = ()


# authentication.mode -> Cilium's AuthType (pkg/policy/types/auth.go): disabled 0, spire 1,
# always-fail 2. cilia has no mutual-auth handshake, so the datapath drops such flows (189).
AUTH_TYPES = {"": 0, "disabled": 0, "required": 1, "test-always-fail": 2}


@frozen
class RuleSelection:
    """The outcome of :func:`select_rules` for one identity."""

    rules: tuple[PolicyRule, ...]
    enforced: tuple[bool, bool]  # indexed by Direction
    default_deny: tuple[bool, bool]
    default_deny_by: tuple[tuple[RuleRef, ...], tuple[RuleRef, ...]]


@frozen
class EndpointPolicy:
    """The resolved policy of one identity: what the datapath enforces and why.

    ``default_deny_by[d]`` names the policies that turned default deny on for direction ``d`` (for
    "which policy dropped my packet" on a default-deny drop; empty when the enforcement mode did).
    """

    identity: int
    labels: Labels
    revision: int
    selection: RuleSelection
    filters: tuple[Filter, ...]
    map_state: MapState = field(compare=False)
    l7: tuple[L7PortPolicy, ...] = ()  # what the L7 proxies enforce for this endpoint, per port

    @property
    def enforced(self) -> tuple[bool, bool]:
        return self.selection.enforced

    @property
    def default_deny_by(self) -> tuple[tuple[RuleRef, ...], tuple[RuleRef, ...]]:
        return self.selection.default_deny_by

    def is_enforced(self, direction: Direction) -> bool:
        return self.selection.enforced[direction]

    @property
    def audit(self) -> bool:
        """Policy-audit mode for this endpoint: some selected policy asks for it (``cilia.io/audit``)."""
        return any(r.audit for r in self.selection.rules)

    @property
    def rules(self) -> tuple[RuleRef, ...]:
        return tuple(r.ref for r in self.selection.rules)


def namespace_of(labels: Labels) -> str:
    return labels.sources_of(NAMESPACE_LABEL).get(SOURCE_K8S, "")


def rule_selects(rule: PolicyRule, labels: Labels, namespace: str) -> bool:
    """Cilium's ``matchesSubject``: namespace, node vs endpoint subject, then the selector."""
    if rule.namespace and rule.namespace != namespace:
        return False
    if rule.node_selector != (LABEL_HOST in labels):
        return False
    return rule.subject.matches(labels)


def select_rules(rules: Iterable[PolicyRule], labels: Labels, options: EngineOptions) -> RuleSelection:
    """The rules selecting ``labels`` and the per-direction enforcement (§4.1, §4.2)."""
    off = RuleSelection((), (False, False), (False, False), ((), ()))
    if LABEL_HOST in labels and not options.host_firewall:
        return off
    if options.enforcement is EnforcementMode.NEVER:
        return off
    ns = namespace_of(labels)
    matching = tuple(r for r in rules if rule_selects(r, labels, ns))
    by: list[list[RuleRef]] = [[], []]
    enforced = [False, False]
    for r in matching:
        for d in DIRECTIONS:
            if r.has_section.get(d, False):
                enforced[d] = True
                if r.default_deny.get(d, True):
                    by[d].append(r.ref)
    by_t = (tuple(by[0]), tuple(by[1]))
    if options.enforcement is EnforcementMode.ALWAYS or LABEL_INIT in labels:
        return RuleSelection(matching, (True, True), (True, True), by_t)
    return RuleSelection(matching, (enforced[0], enforced[1]), (bool(by[0]), bool(by[1])), by_t)


def resolve_filters(selection: RuleSelection, options: EngineOptions | None = None) -> tuple[Filter, ...]:
    """Merge the selected rules' entries into L4 filters (Cilium's L4Policy), with their L7 parts."""
    secrets = dict(options.secrets) if options is not None else {}
    # fromRequires/toRequires of every selected rule, per direction and allow/deny (§4.7).
    requires: dict[tuple[int, bool], list[Selector]] = {}
    for r in selection.rules:
        for e in r.entries:
            if e.requires:
                requires.setdefault((e.direction, e.deny), []).extend(e.requires)
    req_sel: dict[tuple[int, bool], Selector] = {}
    for k, sels in requires.items():
        acc = Selector.wildcard()
        for s in sels:
            acc = acc.and_(s)
        req_sel[k] = acc

    filters: dict[tuple[int, int, int, int, str], dict[Selector, tuple[bool, set[RuleRef]]]] = {}
    auths: dict[tuple[int, int, int, int, str], dict[Selector, int]] = {}
    l7specs: dict[tuple[int, int, int, int, str], dict[Selector, Any]] = {}
    parsers: dict[tuple[int, int, int, int, str], str] = {}

    def merge_l7(fkey: tuple[int, int, int, int, str], sel: Selector, l7: Any) -> None:
        # Every allow of (port, selector) takes part: one without L7 parts widens the others (§L7).
        per = l7specs.setdefault(fkey, {})
        if l7 is not None:
            parsers[fkey] = merge_parser(parsers.get(fkey, ""), l7[0])
        spec = l7[1] if l7 is not None else None
        per[sel] = merge_spec(per[sel], spec) if sel in per else spec

    # The L7 parts of the entries, and the ports that have any: only those track L7 merges.
    entry_l7s: dict[int, dict[PortProto, Any]] = {}
    l7_fkeys: set[tuple[int, int, int, int, str]] = set()
    for r in selection.rules:
        for e in r.entries:
            if e.l7 and not e.deny and selection.enforced[e.direction]:
                got = entry_l7(e, r.namespace, secrets)
                if got:
                    entry_l7s[id(e)] = got
                    l7_fkeys.update((e.direction, *pp) for pp in got)

    def merge(
        fkey: tuple[int, int, int, int, str], sel: Selector, deny: bool, ref: RuleRef, auth: int = 0
    ) -> None:
        per = filters.setdefault(fkey, {})
        old = per.get(sel)
        if old is None:
            per[sel] = (deny, {ref})
        elif old[0] == deny:
            old[1].add(ref)
        elif deny:  # a deny for the same selector and port replaces the allow
            per[sel] = (True, {ref})
        if auth and not deny:
            a = auths.setdefault(fkey, {})
            a[sel] = max(a.get(sel, 0), auth)

    for d in DIRECTIONS:
        if not selection.enforced[d]:
            continue
        for r in selection.rules:
            for e in r.entries:
                if e.direction != d or not e.peers:
                    continue
                req = req_sel.get((d, e.deny))
                sels = []
                for p in e.peers:
                    s = p.selector
                    if req is not None and p.kind is PeerKind.ENDPOINTS:
                        s = s.and_(req)
                    sels.append(s)
                if e.ports is None:
                    fkeys = [(d, 0, 0, 0, "")]
                else:
                    fkeys = [(d, pp.proto, pp.port, max(pp.end_port, pp.port), pp.name) for pp in e.ports]
                auth = AUTH_TYPES.get(e.auth_mode, 0)
                e_l7 = entry_l7s.get(id(e))
                for fkey in fkeys:
                    track = not e.deny and fkey in l7_fkeys
                    l7 = e_l7.get(PortProto(fkey[1], fkey[2], fkey[3], fkey[4])) if e_l7 and track else None
                    for s in sels:
                        merge(fkey, s, e.deny, e.ref, auth)
                        if track:
                            merge_l7(fkey, s, l7)
        if not selection.default_deny[d]:
            merge((d, 0, 0, 0, ""), Selector.wildcard(), False, DEFAULT_ALLOW[d])

    out = tuple(
        Filter(
            *fkey,
            tuple((s, deny, frozenset(refs)) for s, (deny, refs) in per.items()),
            tuple((s, a) for s, a in auths.get(fkey, {}).items() if not per[s][0]),
            parsers.get(fkey, ""),
            tuple(
                (s, spec) for s, spec in l7specs.get(fkey, {}).items() if spec is not None and not per[s][0]
            ),
        )
        for fkey, per in filters.items()
    )
    return host_wildcard_l7(out) if l7specs and (options is None or options.allow_localhost) else out


def filter_contributions(
    f: Filter,
    cache: SelectorCache,
    named_ports: NamedPorts,
    only: frozenset[int] | None = None,
    proxy_port: int = 0,
) -> list[Contribution]:
    """Candidate MapState entries of one filter (Cilium ``L4Filter.toMapState``). With ``only``,
    just the entries for those peer identities (and the identity-0 ones). ``proxy_port`` is where
    the filter's L7 parser listens: redirecting selectors' entries carry it."""
    port = f.port
    if f.name:
        port = named_ports.resolve(f.direction, f.name, f.proto)
        if port == 0:
            return []  # an unresolvable named port matches nothing
        end = port
    else:
        end = f.end_port
    if f.proto == Proto.ANY:
        spaces = [(f.direction, 0, 0, 0)]
    else:
        spaces = [(f.direction, f.proto, p, plen) for p, plen in port_range_to_masked(port, end)]
    auth = dict(f.auth)
    wildcard = next(((s, deny) for s, deny, _ in f.selectors if s.is_wildcard), None)
    l4_wildcard = wildcard is not None and (f.port != 0 or bool(f.name))
    redirects = selector_redirects(f, proxy_port) if f.parser else {}
    own_redirect = {s for s, spec in f.l7 if spec.redirect} if redirects else set()
    wildcard_redirects = wildcard is not None and wildcard[0] in redirects
    out: list[Contribution] = []
    for sel, deny, refs in f.selectors:
        if sel.is_wildcard:
            ids: Iterable[int] = (0,)
        else:
            # An L4-only key makes the L3/L4 keys of the same port redundant unless they are denies
            # or need a different authentication (Cilium's PerSelectorPolicy.covers).
            if l4_wildcard and (
                wildcard[1]  # type: ignore[index]
                or (
                    not deny
                    and auth.get(sel, 0) == auth.get(wildcard[0], 0)  # type: ignore[index]
                    # a redirect of its own is not covered by an L4-only key without one
                    and not (sel in own_redirect and not wildcard_redirects)
                )
            ):
                continue
            ids = cache.selections(sel)
            if only is not None:
                ids = ids & only
        for space in spaces:
            out.append(Contribution(space, deny, ids, refs, auth.get(sel, 0), redirects.get(sel, 0)))
    return out


def distill_filters(
    filters: Iterable[Filter],
    selection: RuleSelection,
    cache: SelectorCache,
    named_ports: NamedPorts,
    *,
    is_host: bool,
    options: EngineOptions,
    only: frozenset[int] | None = None,
) -> MapState:
    """The MapState of resolved filters (Cilium ``DistillPolicy``)."""
    return distill(
        policy_contributions(
            filters, selection, cache, named_ports, is_host=is_host, options=options, only=only
        )
    )


def policy_contributions(
    filters: Iterable[Filter],
    selection: RuleSelection,
    cache: SelectorCache,
    named_ports: NamedPorts,
    *,
    is_host: bool,
    options: EngineOptions,
    only: frozenset[int] | None = None,
) -> list[Contribution]:
    """The candidate entries :func:`distill_filters` distills (offline analysis evaluates them as
    sets of identities instead of building the MapState)."""
    contribs: list[Contribution] = []
    for d in DIRECTIONS:
        if not selection.enforced[d]:
            contribs.append(Contribution((d, 0, 0, 0), False, (0,), frozenset({ALLOW_ANY[d]})))
    ports = proxy_port_map(options.proxy_ports)
    for f in filters:
        contribs.extend(filter_contributions(f, cache, named_ports, only, filter_proxy_port(f, ports)))
    if options.allow_localhost and not is_host and (only is None or HOST_IDENTITY in only):
        contribs.append(
            Contribution(
                (Direction.INGRESS, 0, 0, 0), False, (HOST_IDENTITY,), frozenset({ALLOW_LOCALHOST_INGRESS})
            )
        )
    return contribs


def resolve_policy(
    identity: int,
    labels: Labels,
    rules: Iterable[PolicyRule],
    cache: SelectorCache,
    *,
    named_ports: NamedPorts = NamedPorts(),
    options: EngineOptions = EngineOptions(),
    revision: int = 0,
) -> EndpointPolicy:
    """Resolve and distill the policy of one identity from candidate rules."""
    selection = select_rules(rules, labels, options)
    filters = resolve_filters(selection, options)
    ms = distill_filters(
        filters, selection, cache, named_ports, is_host=LABEL_HOST in labels, options=options
    )
    l7 = endpoint_l7(identity, filters, cache, named_ports, options)
    return EndpointPolicy(identity, labels, revision, selection, filters, ms, l7)


def endpoint_l7(
    identity: int,
    filters: Iterable[Filter],
    cache: SelectorCache,
    named_ports: NamedPorts,
    options: EngineOptions,
) -> tuple[L7PortPolicy, ...]:
    """The L7 port policies of an endpoint's filters (:func:`cilia.policy.l7resolve.port_policies`)."""
    return port_policies(identity, filters, cache, named_ports, proxy_port_map(options.proxy_ports))
