"""Policy objects → the engine's rules (:mod:`cilia.policy.rules`).

CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy go through Cilium's namespace scoping
(semantics.md §2.5, ``ParseToCiliumRule``); Kubernetes NetworkPolicy through Cilium's translation
(§6, ``ParseNetworkPolicy``). Both end as :class:`PolicyRule` values in which selectors are final
:class:`Selector`s, protocol ANY is expanded, ICMP type names are numbers, and every entry carries the
:class:`RuleRef` that Hubble-style attribution shows.

Ingress and egress, allow and deny, go through one code path (:func:`_entry`) parameterized by
direction; the YAML field names of each direction are in :data:`_FIELDS`.

toServices are kept raw in :attr:`PeerRule.services`; the engine turns them into peers with
:func:`with_service_peers` against the services that exist (§7).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from cilia.identity.cidr import CIDRError, cidr_rule_selector, cidr_selectors, parse_prefix
from cilia.identity.fqdn import fqdn_selector
from cilia.identity.podlabels import DEFAULT_CLUSTER, NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_LABEL
from cilia.identity.reserved import UnknownEntityError, entity_selectors
from cilia.identity.selector import Operator, Requirement, Selector, SelectorError, extended_key
from cilia.k8s import api
from cilia.k8s.frozen import frozen
from cilia.k8s.names import ICMP_V4_TYPES, ICMP_V6_TYPES, is_iana_svc_name, parse_go_uint16
from cilia.k8s.policylog import rule_log
from cilia.policy.errors import PolicyError
from cilia.policy.rules import Peer, PeerKind, PeerRule, PolicyRule, PortProto
from cilia.policy.types import ANY_L4_PROTOS, Direction, Proto, RuleRef

KIND_CNP = "CiliumNetworkPolicy"
KIND_CCNP = "CiliumClusterwideNetworkPolicy"
KIND_KNP = "NetworkPolicy"
AUDIT_ANNOTATION = "cilia.io/audit"
# Annotations that override the policy name in the derived labels (Cilium's annotation.PolicyName
# and its alias).
POLICY_NAME_ANNOTATIONS = ("policy.cilium.io/name", "io.cilium.name")
DEFAULT_NAMESPACE = "default"

NS_KEY = f"k8s.{POD_NAMESPACE_LABEL}"
NS_ANY_KEY = f"any.{POD_NAMESPACE_LABEL}"
NS_LABELS_K8S_PREFIX = f"k8s.{NAMESPACE_LABELS_PREFIX}"
NS_LABELS_ANY_PREFIX = f"any.{NAMESPACE_LABELS_PREFIX}"
RESERVED_PREFIX = "reserved."
INIT_KEY = "reserved.init"
REMOTE_NODE_KEY = "reserved.remote-node"

POLICY_LABEL_DERIVED_FROM = "io.cilium.k8s.policy.derived-from"
POLICY_LABEL_NAME = "io.cilium.k8s.policy.name"
POLICY_LABEL_NAMESPACE = "io.cilium.k8s.policy.namespace"
POLICY_LABEL_UID = "io.cilium.k8s.policy.uid"


class TranslateError(PolicyError, ValueError):
    """A policy that cannot be turned into rules, with the object and field it concerns."""

    def __init__(self, message: str, *, kind: str, namespace: str, name: str, path: str) -> None:
        where = f"{namespace}/{name}" if namespace else name
        super().__init__(f"{kind} {where}: {path}: {message}")
        self.message = message
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.path = path


# --------------------------------------------------------------------------- ICMP type names

# Cilium's CamelCase ICMP type names per family: one table, kept with the validator (cilia.k8s.names).
ICMPV4_TYPES: dict[str, int] = ICMP_V4_TYPES
ICMPV6_TYPES: dict[str, int] = ICMP_V6_TYPES


def icmp_port_proto(family: str | None, icmp_type: int | str) -> PortProto:
    """One ICMP field as a PortProto: ICMP (IPv4, the default) or ICMPv6, the type as the port.
    Raises ValueError for an unknown type name or family."""
    fam = family or "IPv4"
    if fam not in ("IPv4", "IPv6"):
        raise ValueError(f"wrong family: {family}")
    proto, names = (Proto.ICMP, ICMPV4_TYPES) if fam == "IPv4" else (Proto.ICMPV6, ICMPV6_TYPES)
    if isinstance(icmp_type, int):
        code = icmp_type
    elif icmp_type.strip().isdigit():
        code = int(icmp_type)
    elif icmp_type in names:
        code = names[icmp_type]
    else:
        raise ValueError(f"ICMP type {icmp_type} not found in {family or ''}".rstrip())
    if not 0 <= code <= 255:
        raise ValueError(f"ICMP type {code} is out of range 0..255")
    return PortProto(int(proto), code, code)


# --------------------------------------------------------------------------- ports


def parse_protocol(protocol: str | None) -> tuple[Proto, ...]:
    """The protocols a ``toPorts`` protocol stands for: empty/ANY is TCP+UDP+SCTP (§4.5)."""
    p = (protocol or "").upper()
    if p in ("", "ANY"):
        return ANY_L4_PROTOS
    if p in ("TCP", "UDP", "SCTP"):
        return (Proto[p],)
    raise ValueError(f'invalid protocol "{protocol}", must be {{ tcp | udp | sctp | any }}')


def port_protos(port: str | int | None, end_port: int | None, protocol: str | None) -> tuple[PortProto, ...]:
    """One ``ports`` item as PortProtos. Named ports are lowercased (endPort ignored); ``0`` (or
    ``0``–``65535``) is every port; an ``endPort`` not above ``port`` means the single port."""
    protos = parse_protocol(protocol)
    text = str(port).strip() if port is not None else ""
    if not text:
        raise ValueError("Port must be specified")
    if is_iana_svc_name(text):
        return tuple(PortProto(int(p), 0, 0, text.lower()) for p in protos)
    start = parse_go_uint16(text)
    if start is None:
        raise ValueError(f"unable to parse port: {text!r}")
    end = end_port or 0
    if start == 0 and end in (0, 0xFFFF):
        start, end = 0, 0
    elif end <= start:
        end = start
    return tuple(PortProto(int(p), start, end) for p in protos)


# --------------------------------------------------------------------------- selectors


@dataclass
class _SelectorDraft:
    """A selector being rewritten the way Cilium rewrites an EndpointSelector: matchLabels by
    extended key (so a later ``set`` overwrites an entry, as ``AddMatch`` does) plus expressions."""

    labels: dict[str, str] = field(default_factory=dict)
    exprs: list[Requirement] = field(default_factory=list)

    @classmethod
    def from_api(cls, sel: api.LabelSelector | None, prefix: str | None = None) -> _SelectorDraft:
        """Keys extended (``app`` → ``any.app``), or, with ``prefix``, prefixed as written
        (NetworkPolicy: ``k8s.`` + key)."""
        if sel is None:
            return cls()

        def key(k: str) -> str:
            return extended_key(k) if prefix is None else prefix + k

        return cls(
            {key(k): v or "" for k, v in (sel.match_labels or {}).items()},
            [Requirement(key(e.key), e.operator, tuple(e.values or ())) for e in sel.match_expressions or ()],  # type: ignore[arg-type]
        )

    def keys(self) -> Iterable[str]:
        yield from self.labels
        yield from (r.key for r in self.exprs)

    def has_key(self, key: str) -> bool:
        return any(k == key for k in self.keys())

    def has_key_prefix(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.keys())

    def merge(self, other: _SelectorDraft) -> _SelectorDraft:
        return _SelectorDraft({**self.labels, **other.labels}, [*self.exprs, *other.exprs])

    def build(self) -> Selector:
        return Selector.from_match(self.labels, self.exprs)


def scope_peer_selector(
    sel: api.LabelSelector, namespace: str, *, subject_selects_init: bool, exempt_reserved: bool = True
) -> Selector:
    """A from/toEndpoints (``exempt_reserved``) or from/toRequires selector after Cilium's namespace
    scoping (§2.5): untouched if it names a reserved key (endpoints only) or the namespace key;
    cluster-wide: ``namespace Exists`` unless the subject selects ``reserved:init``; namespaced:
    ``namespace=<ns>`` unless it selects by namespace labels."""
    draft = _SelectorDraft.from_api(sel)
    if exempt_reserved and draft.has_key_prefix(RESERVED_PREFIX):
        return draft.build()
    if not draft.has_key(NS_KEY) and not draft.has_key(NS_ANY_KEY):
        if not namespace:
            if not subject_selects_init:
                draft.exprs.append(Requirement.exists(NS_KEY))
        elif not draft.has_key_prefix(NS_LABELS_K8S_PREFIX) and not draft.has_key_prefix(
            NS_LABELS_ANY_PREFIX
        ):
            draft.labels[NS_KEY] = namespace
    return draft.build()


# --------------------------------------------------------------------------- services (§7)


@frozen
class ServiceInfo:
    """What toServices needs to know of a Kubernetes Service. ``selector`` None or empty means a
    selector-less (external) service whose ``backend_ips`` are its endpoints; ``labels`` are the
    Service object's own labels (matched by ``k8sServiceSelector``); ``ports`` are (port, protocol)."""

    name: str
    namespace: str
    selector: Mapping[str, str] | None = None
    backend_ips: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[tuple[int, str], ...] = ()


def _plain_selector_matches(sel: api.LabelSelector, labels: Mapping[str, str]) -> bool:
    """Plain Kubernetes selector semantics over a flat label map (no sources)."""
    for k, v in (sel.match_labels or {}).items():
        if labels.get(k) != (v or ""):
            return False
    for e in sel.match_expressions or ():
        present = e.key in labels
        values = e.values or []
        match e.operator:
            case Operator.IN:
                ok = present and labels[e.key] in values
            case Operator.NOT_IN:
                ok = not present or labels[e.key] not in values
            case Operator.EXISTS:
                ok = present
            case Operator.DOES_NOT_EXIST:
                ok = not present
            case _:
                ok = False
        if not ok:
            return False
    return True


def service_matches(service_ref: api.Service, svc: ServiceInfo) -> bool:
    """Whether a toServices entry names this service; an empty namespace matches any namespace
    (Cilium's ``serviceRefMatches`` / ``serviceSelectorMatches``)."""
    if (by_sel := service_ref.k8s_service_selector) is not None:
        ns = by_sel.namespace or ""
        return ns in ("", svc.namespace) and _plain_selector_matches(by_sel.selector, svc.labels)
    if (ref := service_ref.k8s_service) is not None:
        ns = ref.namespace or ""
        return ns in ("", svc.namespace) and (ref.service_name or "") == svc.name
    return False


def service_peers(
    service_ref: api.Service, rule_namespace: str, services: Sequence[ServiceInfo]
) -> tuple[Peer, ...]:
    """The peers one toServices entry stands for, given the services that exist: a service with a
    selector gives its selector (keys as written) plus ``k8s:io.kubernetes.pod.namespace=<svc ns>``;
    a selector-less one gives CIDR peers for its backend IPs.

    ``rule_namespace`` is the policy's namespace; Cilium does not default an empty service
    namespace to it (an empty namespace matches services everywhere), so it only documents the
    call site."""
    del rule_namespace  # see docstring: matching does not depend on it
    peers: list[Peer] = []
    for svc in services:
        if not service_matches(service_ref, svc):
            continue
        if svc.selector:
            peers.append(
                Peer(PeerKind.SERVICES, Selector.from_match({**svc.selector, NS_KEY: svc.namespace}))
            )
        else:
            for ip in svc.backend_ips:
                sel = cidr_rule_selector(str(parse_prefix(ip)))
                if sel is not None:
                    peers.append(Peer(PeerKind.CIDR, sel))
    return tuple(peers)


def with_service_peers(
    entry: PeerRule, services: Sequence[ServiceInfo], rule_namespace: str = ""
) -> PeerRule:
    """An egress allow entry with its toServices resolved into peers. As in Cilium, where no
    service matches, the entry keeps no peer from them, so an entry with ports and no other peer
    applies those ports to every peer (inferred from ``processRule`` + ``mergeEgress``)."""
    if not entry.services:
        return entry
    peers = list(entry.peers)
    for ref in entry.services:
        peers.extend(service_peers(ref, rule_namespace, services))
    if not peers and entry.ports is not None:
        peers.append(Peer(PeerKind.WILDCARD, Selector.wildcard()))
    return replace(entry, peers=tuple(peers))


def resolve_services(rule: PolicyRule, services: Sequence[ServiceInfo]) -> PolicyRule:
    """The rule with the toServices of its egress allow entries resolved against ``services``.
    Only ``egress`` is rewritten, as Cilium's service watcher does (semantics.md §7): toServices
    inside egressDeny stays unexpanded."""
    if not any(e.services and not e.deny for e in rule.entries):
        return rule
    entries = tuple(
        e if e.deny or not e.services else with_service_peers(e, services, rule.namespace)
        for e in rule.entries
    )
    return replace(rule, entries=entries)


# --------------------------------------------------------------------------- entries


class _Fields(NamedTuple):
    """YAML field names (snake_case attribute, camelCase name) of one direction."""

    endpoints: str
    requires: str
    cidr: str
    cidr_set: str
    entities: str
    groups: str
    nodes: str
    prefix: str  # "from" | "to"


_FIELDS = {
    Direction.INGRESS: _Fields(
        "from_endpoints",
        "from_requires",
        "from_cidr",
        "from_cidr_set",
        "from_entities",
        "from_groups",
        "from_nodes",
        "from",
    ),
    Direction.EGRESS: _Fields(
        "to_endpoints",
        "to_requires",
        "to_cidr",
        "to_cidr_set",
        "to_entities",
        "to_groups",
        "to_nodes",
        "to",
    ),
}

_SECTIONS: tuple[tuple[str, str, Direction, bool], ...] = (
    # (Rule attribute, YAML section name, direction, deny)
    ("ingress", "ingress", Direction.INGRESS, False),
    ("ingress_deny", "ingressDeny", Direction.INGRESS, True),
    ("egress", "egress", Direction.EGRESS, False),
    ("egress_deny", "egressDeny", Direction.EGRESS, True),
)


@frozen
class _Context:
    """The policy a rule comes from, as its RuleRefs and derived labels name it."""

    kind: str  # for RuleRef and labels
    namespace: str  # "" for cluster-wide
    name: str
    cluster: str
    dual_stack: bool

    def error(self, message: str, path: str) -> TranslateError:
        return TranslateError(message, kind=self.kind, namespace=self.namespace, name=self.name, path=path)


def _has_l7(pr: Any) -> bool:
    return isinstance(pr, api.PortRule) and any(
        x is not None
        for x in (pr.rules, pr.server_names, pr.listener, pr.terminating_tls, pr.originating_tls)
    )


def _entry_ports(ctx: _Context, item: Any, path: str) -> tuple[PortProto, ...] | None:
    """None for an L3-only entry (no toPorts and no icmps entries); else every port and ICMP type."""
    to_ports = item.to_ports or []
    icmps = item.icmps or []
    if not to_ports and not icmps:
        return None
    out: list[PortProto] = []
    for i, pr in enumerate(to_ports):
        for j, pp in enumerate(pr.ports or ()):
            try:
                out.extend(port_protos(pp.port, pp.end_port, pp.protocol))
            except ValueError as e:
                raise ctx.error(str(e), f"{path}.toPorts[{i}].ports[{j}]") from None
    for i, ir in enumerate(icmps):
        for j, f in enumerate(ir.fields or ()):
            try:
                out.append(icmp_port_proto(f.family, f.type))
            except ValueError as e:
                raise ctx.error(str(e), f"{path}.icmps[{i}].fields[{j}]") from None
    return tuple(dict.fromkeys(out))


def _entry(
    ctx: _Context,
    item: Any,
    ref: RuleRef,
    direction: Direction,
    deny: bool,
    subject_selects_init: bool,
    path: str,
) -> PeerRule:
    f = _FIELDS[direction]
    endpoints = getattr(item, f.endpoints)
    requires = getattr(item, f.requires)
    cidrs = getattr(item, f.cidr)
    cidr_set = getattr(item, f.cidr_set)
    entities = getattr(item, f.entities)
    groups = getattr(item, f.groups)
    nodes = getattr(item, f.nodes)
    fqdns = getattr(item, "to_fqdns", None)
    # toServices inside egressDeny are never expanded by Cilium (only `egress` is rewritten).
    services = tuple(item.to_services or ()) if direction is Direction.EGRESS and not deny else ()

    # An explicitly empty peer list selects nothing at all, even with toPorts (§1.5).
    selects_nothing = any(
        x is not None and len(x) == 0 for x in (endpoints, cidrs, cidr_set, entities, nodes)
    )
    peers: list[Peer] = []
    if not selects_nothing:
        for sel in endpoints or ():
            peers.append(
                Peer(
                    PeerKind.ENDPOINTS,
                    scope_peer_selector(sel, ctx.namespace, subject_selects_init=subject_selects_init),
                )
            )
        for sel in nodes or ():
            peers.append(
                Peer(
                    PeerKind.NODES,
                    Selector.from_api(sel).with_requirement(Requirement.exists(REMOTE_NODE_KEY)),
                )
            )
        for i, entity in enumerate(entities or ()):
            try:
                peers.extend(Peer(PeerKind.ENTITIES, s) for s in entity_selectors(entity, ctx.cluster))
            except UnknownEntityError as e:
                raise ctx.error(str(e), f"{path}.{f.prefix}Entities[{i}]") from None
        try:
            if cidrs:
                peers.extend(Peer(PeerKind.CIDR, s) for s in cidr_selectors(cidrs, ctx.dual_stack))
            for rule in cidr_set or ():
                group_sel = None
                if rule.cidr_group_selector is not None:
                    group_sel = _SelectorDraft.from_api(rule.cidr_group_selector, prefix="cidrgroup.").build()
                sel = cidr_rule_selector(
                    rule.cidr,
                    rule.except_ or (),
                    group_ref=rule.cidr_group_ref,
                    group_selector=group_sel,
                    dual_stack=ctx.dual_stack,
                )
                if sel is not None:
                    peers.append(Peer(PeerKind.CIDR, sel))
        except CIDRError as e:
            raise ctx.error(str(e), f"{path}.{f.prefix}CIDR") from None
        # Cloud groups are resolved by a provider this machine does not have: they select nothing.
        peers.extend(Peer(PeerKind.GROUPS, Selector.none()) for _ in groups or ())
        peers.extend(Peer(PeerKind.FQDN, fqdn_selector(q.match_name, q.match_pattern)) for q in fqdns or ())

    ports = _entry_ports(ctx, item, path)
    # An L4 rule without any peer field applies to every peer: the raw wildcard, never namespaced.
    if not selects_nothing and not peers and ports is not None and not services:
        peers.append(Peer(PeerKind.WILDCARD, Selector.wildcard()))

    return PeerRule(
        ref=ref,
        direction=direction,
        deny=deny,
        peers=tuple(peers),
        ports=ports,
        requires=tuple(
            scope_peer_selector(
                sel, ctx.namespace, subject_selects_init=subject_selects_init, exempt_reserved=False
            )
            for sel in requires or ()
        ),
        l7=tuple(pr for pr in item.to_ports or () if _has_l7(pr)),
        fqdn_patterns=tuple(q.match_name or q.match_pattern or "" for q in fqdns or ()),
        services=services,
        auth_mode=(item.authentication.mode if getattr(item, "authentication", None) else ""),
    )


# --------------------------------------------------------------------------- labels


def policy_labels(kind: str, namespace: str, name: str, uid: str) -> tuple[str, ...]:
    """The ``k8s:`` labels every imported rule carries (§2.6); no namespace label when cluster-wide."""
    out = [f"k8s:{POLICY_LABEL_DERIVED_FROM}={kind}", f"k8s:{POLICY_LABEL_NAME}={name}"]
    if namespace:
        out.append(f"k8s:{POLICY_LABEL_NAMESPACE}={namespace}")
    out.append(f"k8s:{POLICY_LABEL_UID}={uid}")
    return tuple(out)


def _rule_labels(derived: tuple[str, ...], user: Iterable[api.RuleLabel]) -> tuple[str, ...]:
    """Derived labels plus the rule's own ``labels``, sorted by key as Cilium sorts a LabelArray."""
    entries = [(s.partition(":")[2].partition("=")[0], s) for s in derived]
    entries += [(lb.key, f"{lb.source or 'unspec'}:{lb.key}={lb.value or ''}") for lb in user]
    return tuple(s for _, s in sorted(entries, key=lambda e: e[0]))


def _is_audit(meta: api.ObjectMeta) -> bool:
    return (meta.annotations or {}).get(AUDIT_ANNOTATION, "").strip().lower() == "true"


def _fill_sections(rule: api.Rule) -> tuple[dict[Direction, bool], dict[Direction, bool]]:
    """(has_section, default_deny) per direction, as Sanitize fills enableDefaultDeny (§1.4 step 2)."""
    has = {
        Direction.INGRESS: bool(rule.ingress) or bool(rule.ingress_deny),
        Direction.EGRESS: bool(rule.egress) or bool(rule.egress_deny),
    }
    dd = rule.enable_default_deny
    explicit = {
        Direction.INGRESS: dd.ingress if dd is not None else None,
        Direction.EGRESS: dd.egress if dd is not None else None,
    }
    return has, {d: has[d] if explicit[d] is None else bool(explicit[d]) for d in Direction}


# --------------------------------------------------------------------------- CNP / CCNP


def _translate_rule(
    ctx: _Context, rule: api.Rule, spec_index: int, path: str, labels: tuple[str, ...], audit: bool
) -> PolicyRule:
    if rule.endpoint_selector is not None and rule.node_selector is not None:
        raise ctx.error("rule cannot have both EndpointSelector and NodeSelector", path)
    try:
        if rule.endpoint_selector is not None:
            subject_draft = _SelectorDraft.from_api(rule.endpoint_selector)
            subject_selects_init = subject_draft.has_key(INIT_KEY)
            if ctx.namespace:
                # The subject always lives in the policy's namespace; a conflicting k8s: namespace
                # match is overwritten (test parse-in-namespace-with-ns-selector).
                subject_draft.labels[NS_KEY] = ctx.namespace
            subject, node_selector = subject_draft.build(), False
        elif rule.node_selector is not None:
            if ctx.namespace:
                raise ctx.error("rule cannot have NodeSelector", path)
            subject_selects_init = False
            subject, node_selector = _SelectorDraft.from_api(rule.node_selector).build(), True
        else:
            raise ctx.error("rule must have one of EndpointSelector or NodeSelector", path)
        entries: list[PeerRule] = []
        for attr, section, direction, deny in _SECTIONS:
            for i, item in enumerate(getattr(rule, attr) or ()):
                ref = RuleRef(ctx.kind, ctx.namespace, ctx.name, section, i, spec_index, rule_log(rule))
                entries.append(
                    _entry(ctx, item, ref, direction, deny, subject_selects_init, f"{path}.{section}[{i}]")
                )
    except SelectorError as e:
        raise ctx.error(f"invalid label selector: {e}", path) from None
    has_section, default_deny = _fill_sections(rule)
    return PolicyRule(
        ref=RuleRef(ctx.kind, ctx.namespace, ctx.name, "", -1, spec_index, rule_log(rule)),
        namespace=ctx.namespace,
        subject=subject,
        node_selector=node_selector,
        entries=tuple(entries),
        has_section=has_section,
        default_deny=default_deny,
        audit=audit,
        labels=_rule_labels(labels, rule.labels or ()),
    )


def translate_cnp(
    obj: api.CiliumNetworkPolicy,
    uid: str = "",
    *,
    cluster: str = DEFAULT_CLUSTER,
    dual_stack: bool = False,
    default_namespace: str = DEFAULT_NAMESPACE,
) -> list[PolicyRule]:
    """A CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy as rules: ``spec`` first, then each
    of ``specs`` (``RuleRef.spec_index`` counts them in that order).

    A CNP without a namespace is placed in ``default_namespace``, as ``kubectl apply`` does;
    a CCNP is cluster-wide whatever its metadata says. ``uid`` defaults to ``metadata.uid``."""
    meta = obj.metadata
    name = meta.name or ""
    if obj.kind == KIND_CCNP:
        kind, namespace = KIND_CCNP, ""
    else:
        kind, namespace = KIND_CNP, meta.namespace or default_namespace
    ctx = _Context(kind, namespace, name, cluster, dual_stack)
    derived = policy_labels(kind, namespace, name, uid or meta.uid or "")
    audit = _is_audit(meta)
    rules: list[tuple[api.Rule, str]] = []
    if obj.spec is not None:
        rules.append((obj.spec, "spec"))
    rules.extend((r, f"specs[{i}]") for i, r in enumerate(obj.specs or ()))
    if not rules:
        raise ctx.error(f"Invalid {kind} spec(s): empty policy", "spec")
    return [_translate_rule(ctx, r, i, path, derived, audit) for i, (r, path) in enumerate(rules)]


# --------------------------------------------------------------------------- NetworkPolicy (§6)


def _knp_pod_selector(sel: api.LabelSelector | None, namespace: str) -> _SelectorDraft:
    """A podSelector scoped to its namespace, keys as ``k8s.<key>`` (``parsePodSelector``)."""
    draft = _SelectorDraft.from_api(sel, prefix="k8s.")
    draft.labels[NS_KEY] = namespace
    return draft


def _knp_peer_selector(peer: api.NetworkPolicyPeer, namespace: str) -> Selector | None:
    """A NetworkPolicyPeer's pod/namespace selector (``parseNetworkPolicyPeer``): namespace labels
    become ``k8s:io.cilium.k8s.namespace.labels.<key>``; an empty namespaceSelector is
    ``k8s:io.kubernetes.pod.namespace Exists``; with a namespaceSelector the podSelector is not
    namespace-scoped."""
    if peer.namespace_selector is not None:
        ns_draft = _SelectorDraft.from_api(peer.namespace_selector, prefix=NS_LABELS_K8S_PREFIX)
        if not ns_draft.labels and not ns_draft.exprs:
            ns_draft.exprs.append(Requirement.exists(NS_KEY))
        return ns_draft.merge(_SelectorDraft.from_api(peer.pod_selector, prefix="k8s.")).build()
    if peer.pod_selector is not None:
        return _knp_pod_selector(peer.pod_selector, namespace).build()
    return None


def _knp_ports(
    ctx: _Context, ports: list[api.NetworkPolicyPort] | None, path: str
) -> tuple[PortProto, ...] | None:
    if not ports:
        return None
    out: list[PortProto] = []
    for i, p in enumerate(ports):
        try:
            out.extend(port_protos("0" if p.port is None else p.port, p.end_port, p.protocol or "TCP"))
        except ValueError as e:
            raise ctx.error(str(e), f"{path}.ports[{i}]") from None
    return tuple(dict.fromkeys(out))


def _knp_entries(
    ctx: _Context,
    direction: Direction,
    rules: list[api.NetworkPolicyIngressRule] | list[api.NetworkPolicyEgressRule],
    section: str,
) -> list[PeerRule]:
    out: list[PeerRule] = []
    for i, r in enumerate(rules):
        path = f"spec.{section}[{i}]"
        ref = RuleRef(ctx.kind, ctx.namespace, ctx.name, section, i, 0)
        ports = _knp_ports(ctx, r.ports, path)
        is_ingress = isinstance(r, api.NetworkPolicyIngressRule)
        peers_in = r.from_ if is_ingress else r.to
        peer_path = f"{path}.{'from' if is_ingress else 'to'}"
        if not peers_in:
            # No from/to: the raw wildcard, not namespace-scoped (every peer, reserved ones too).
            out.append(
                PeerRule(ref, direction, False, (Peer(PeerKind.ENDPOINTS, Selector.wildcard()),), ports)
            )
            continue
        for j, peer in enumerate(peers_in):
            peers: list[Peer] = []
            try:
                sel = _knp_peer_selector(peer, ctx.namespace)
            except SelectorError as e:
                raise ctx.error(f"invalid label selector: {e}", f"{peer_path}[{j}]") from None
            if sel is not None:
                peers.append(Peer(PeerKind.ENDPOINTS, sel))
            if peer.ip_block is not None:
                try:
                    cidr_sel = cidr_rule_selector(
                        peer.ip_block.cidr, peer.ip_block.except_ or (), dual_stack=ctx.dual_stack
                    )
                except CIDRError as e:
                    raise ctx.error(str(e), f"{peer_path}[{j}].ipBlock") from None
                if cidr_sel is not None:
                    peers.append(Peer(PeerKind.CIDR, cidr_sel))
            # A peer with no field at all leaves a rule without a peer: with ports it applies them to
            # every peer, as Cilium's generated rule does; without ports it allows nothing.
            if not peers and ports is not None:
                peers.append(Peer(PeerKind.WILDCARD, Selector.wildcard()))
            out.append(PeerRule(ref, direction, False, tuple(peers), ports))
    return out


def _knp_name(meta: api.ObjectMeta) -> str:
    annotations = meta.annotations or {}
    for key in POLICY_NAME_ANNOTATIONS:
        if annotations.get(key):
            return annotations[key]
    return meta.name or ""


def translate_knp(obj: api.NetworkPolicy, uid: str = "", *, dual_stack: bool = False) -> list[PolicyRule]:
    """A Kubernetes NetworkPolicy as one rule (§6), with Cilium's policyTypes logic: no ingress
    rules and policyTypes containing Ingress or lacking Egress → ingress default deny; no egress
    rules and policyTypes containing Egress → egress default deny. ``uid`` defaults to
    ``metadata.uid``; the policy-name annotation overrides the name, as in Cilium."""
    meta = obj.metadata
    namespace = meta.namespace or DEFAULT_NAMESPACE
    name = _knp_name(meta)
    ctx = _Context(KIND_KNP, namespace, name, DEFAULT_CLUSTER, dual_stack)
    spec = obj.spec or api.NetworkPolicySpec()
    try:
        subject = _knp_pod_selector(spec.pod_selector, namespace).build()
    except SelectorError as e:
        raise ctx.error(f"invalid label selector: {e}", "spec.podSelector") from None
    ingress = _knp_entries(ctx, Direction.INGRESS, spec.ingress or [], "ingress")
    egress = _knp_entries(ctx, Direction.EGRESS, spec.egress or [], "egress")
    types = set(spec.policy_types or ())
    if not ingress and ("Ingress" in types or "Egress" not in types):
        ingress = [
            PeerRule(RuleRef(KIND_KNP, namespace, name, "ingress", 0, 0), Direction.INGRESS, False, (), None)
        ]
    if not egress and "Egress" in types:
        egress = [
            PeerRule(RuleRef(KIND_KNP, namespace, name, "egress", 0, 0), Direction.EGRESS, False, (), None)
        ]
    has_section = {Direction.INGRESS: bool(ingress), Direction.EGRESS: bool(egress)}
    return [
        PolicyRule(
            ref=RuleRef(KIND_KNP, namespace, name, "", -1, 0),
            namespace=namespace,
            subject=subject,
            node_selector=False,
            entries=(*ingress, *egress),
            has_section=has_section,
            default_deny=dict(has_section),
            audit=_is_audit(meta),
            labels=policy_labels(KIND_KNP, namespace, name, uid or meta.uid or ""),
        )
    ]


def translate(obj: api.CiliumNetworkPolicy | api.NetworkPolicy, **kwargs: Any) -> list[PolicyRule]:
    """Any policy object as rules."""
    if isinstance(obj, api.NetworkPolicy):
        return translate_knp(obj, **{k: v for k, v in kwargs.items() if k in ("uid", "dual_stack")})
    return translate_cnp(obj, **kwargs)
