"""Cilium 1.18's judgement of one ``api.Rule``: the CRD schema's constraints (what the API server
rejects) and ``Rule.Sanitize()`` (what makes Cilium mark a policy ``VALID=False``), semantics.md §1.4.

Cilium stops at the first error; cilia reports every one it finds. Where the API server already
rejects a field (enum, pattern, format), Cilium's check of the same field is not repeated. Paths are
relative to the rule. Ingress and egress go through the same code with a :class:`Dir` value.
"""

from __future__ import annotations

from typing import Any

from cilia.k8s import api
from cilia.k8s.frozen import frozen
from cilia.k8s.l7checks import re2_problem
from cilia.k8s.labelsel import Finding, selector_findings
from cilia.k8s.names import (
    AUTH_MODES,
    CILIUM_PROTOCOLS,
    CRD_PORT_PATTERN,
    ENTITIES,
    ENVOY_CONFIG_KINDS,
    FQDN_MAX,
    FQDN_NAME_PATTERN,
    FQDN_WILDCARD_PATTERN,
    HEADER_MISMATCH_ACTIONS,
    ICMP_CRD_NAMES,
    ICMP_FAMILIES,
    ICMP_V4_TYPES,
    ICMP_V6_TYPES,
    KAFKA_ROLES,
    is_dns1123_subdomain,
    is_iana_svc_name,
    parse_go_uint16,
    pattern_text,
)
from cilia.k8s.netaddr import cidr_problem, contains, parse_prefix
from cilia.k8s.source import FieldPath, format_path

MAX_PORTS = 40
MAX_ICMP_FIELDS = 40
NO_SECTION = "rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny"
ICMP_WITH_PORTS = "the ICMPs block may only be present without ToPorts. Define a separate rule to use ToPorts"
NODES_FLAG = 'FromNodes/ToNodes rules can only be applied when the "enable-node-selector-labels" flag is set'


@frozen
class Flags:
    """The agent options that change validity (EXPECTED.yaml's assumptions are the defaults)."""

    l7_proxy: bool = True
    icmp_rules: bool = True
    node_selector_labels: bool = False


@frozen
class Dir:
    """One of the four rule sections and the field names it uses."""

    section: str  # ingress | ingressDeny | egress | egressDeny
    ingress: bool
    deny: bool
    prefix: str  # "From" | "To" as Cilium spells its peer kinds

    def field(self, stem: str) -> str:
        """``Endpoints`` → ``fromEndpoints`` / ``toEndpoints``."""
        return self.prefix.lower() + stem


SECTIONS = (
    Dir("ingress", True, False, "From"),
    Dir("ingressDeny", True, True, "From"),
    Dir("egress", False, False, "To"),
    Dir("egressDeny", False, True, "To"),
)
# Peer kinds in Cilium's counting (from/toRequires is not a peer kind).
_L3_STEMS = ("Endpoints", "CIDR", "CIDRSet", "Entities", "Nodes", "Groups")
_L3_STEMS_EGRESS = ("Endpoints", "CIDR", "CIDRSet", "Entities", "Services", "Groups", "Nodes")


def _supported(values: tuple[str, ...]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def _unsupported(value: Any, values: tuple[str, ...]) -> str:
    return f'Unsupported value: "{value}": supported values: {_supported(values)}'


def _crd_type(path: FieldPath, value: str, fmt: str) -> str:
    where = format_path(path)
    return f'Invalid value: "{value}": {where} in body must be of type {fmt}: "{value}"'


def _too_many(n: int, limit: int) -> str:
    return f"Too many: {n}: must have at most {limit} items"


def _sub(base: FieldPath, findings: list[Finding]) -> list[Finding]:
    return [(base + p, m) for p, m in findings]


def rule_findings(
    rule: api.Rule, *, kind: str, flags: Flags = Flags(), where: FieldPath = ()
) -> list[Finding]:
    """Every problem of one rule, in the order of semantics.md §1.4 (paths relative to the rule).

    ``where`` is the rule's own path (``spec`` or ``specs[i]``), used only inside CRD messages.
    """
    out: list[Finding] = []
    sections = (rule.ingress, rule.ingress_deny, rule.egress, rule.egress_deny)
    if not any(sections):
        out.append(((), NO_SECTION))
    has_es = rule.endpoint_selector is not None
    has_ns = rule.node_selector is not None
    if not has_es and not has_ns:
        out.append(((), "rule must have one of EndpointSelector or NodeSelector"))
    elif has_es and has_ns:
        out.append((("nodeSelector",), "rule cannot have both EndpointSelector and NodeSelector"))
    elif has_ns and kind == "CiliumNetworkPolicy":
        out.append((("nodeSelector",), "rule cannot have NodeSelector"))
    if rule.endpoint_selector is not None:
        out += _sub(("endpointSelector",), selector_findings(rule.endpoint_selector, cilium=True))
    if rule.node_selector is not None:
        out += _sub(("nodeSelector",), selector_findings(rule.node_selector, cilium=True))
    host = has_ns and not has_es
    for d, items in zip(SECTIONS, sections, strict=True):
        for i, item in enumerate(items or ()):
            out += _sub((d.section, i), _section_rule(item, d, host, flags, (*where, d.section, i)))
    return out


def _section_rule(item: Any, d: Dir, host: bool, flags: Flags, where: FieldPath) -> list[Finding]:
    out: list[Finding] = []
    stems = _L3_STEMS if d.ingress else _L3_STEMS_EGRESS + (() if d.deny else ("FQDNs",))
    present = [d.prefix + s for s in stems if getattr(item, _attr(d.field(s)), None)]
    if len(present) > 1:
        out.append(((), f"combining {present[0]} and {present[1]} is not supported yet"))
    nodes = getattr(item, _attr(d.field("Nodes")))
    if nodes and not flags.node_selector_labels:
        out.append(((d.field("Nodes"),), NODES_FLAG))
    for stem in ("Endpoints", "Requires", "Nodes"):
        name = d.field(stem)
        for j, sel in enumerate(getattr(item, _attr(name)) or ()):
            out += _sub((name, j), selector_findings(sel, cilium=True))
    name = d.field("CIDR")
    for j, cidr in enumerate(getattr(item, _attr(name)) or ()):
        out += _cidr_findings((name, j), cidr, (*where, name, j))
    name = d.field("CIDRSet")
    for j, rule in enumerate(getattr(item, _attr(name)) or ()):
        out += _sub((name, j), _cidr_rule_findings(rule, (*where, name, j)))
    name = d.field("Entities")
    for j, entity in enumerate(getattr(item, _attr(name)) or ()):
        if entity not in ENTITIES:
            out.append(((name, j), _unsupported(entity, ENTITIES)))
    if not d.ingress:
        for j, svc in enumerate(item.to_services or ()):
            if svc.k8s_service_selector is not None:
                out += _sub(
                    ("toServices", j, "k8sServiceSelector", "selector"),
                    selector_findings(svc.k8s_service_selector.selector, cilium=False),
                )
    if not d.deny and item.authentication is not None and item.authentication.mode not in AUTH_MODES:
        out.append((("authentication", "mode"), _unsupported(item.authentication.mode, AUTH_MODES)))
    if not d.deny:
        out += _l7_section_findings(item, d, host, flags)
    if item.icmps and not flags.icmp_rules:
        out.append((("icmps",), 'ICMP rules can only be applied when the "enable-icmp-rules" flag is set'))
    if item.icmps and item.to_ports:
        out.append((("icmps",), ICMP_WITH_PORTS))
    for j, pr in enumerate(item.to_ports or ()):
        out += _sub(("toPorts", j), _port_rule_findings(pr, d, (*where, "toPorts", j)))
    for j, icmp in enumerate(item.icmps or ()):
        out += _sub(("icmps", j), _icmp_findings(icmp))
    if not d.ingress and not d.deny:
        for j, fqdn in enumerate(item.to_fqdns or ()):
            out += _sub(("toFQDNs", j), _fqdn_findings(fqdn))
    return out


def _attr(yaml_name: str) -> str:
    """``fromCIDRSet`` → ``from_cidr_set`` (the api models' attribute names)."""
    return _ATTRS[yaml_name]


_ATTRS = {
    f"{p}{stem}": f"{p}_{attr}"
    for p in ("from", "to")
    for stem, attr in (
        ("Endpoints", "endpoints"),
        ("Requires", "requires"),
        ("CIDR", "cidr"),
        ("CIDRSet", "cidr_set"),
        ("Entities", "entities"),
        ("Nodes", "nodes"),
        ("Groups", "groups"),
        ("Services", "services"),
        ("FQDNs", "fqdns"),
    )
}


def _cidr_findings(path: FieldPath, cidr: str, where: FieldPath) -> list[Finding]:
    # The CRD declares items as `format: cidr` (prefix form), stricter than Cilium's own parser.
    if parse_prefix(cidr) is None:
        problem = cidr_problem(cidr)
        if problem is None:  # a bare IP: Cilium would take it, the API server does not
            return [(path, _crd_type(where, cidr, "cidr") + " (write it as a prefix, e.g. /32)")]
        return [(path, _crd_type(where, cidr, "cidr"))]
    return []


def _cidr_rule_findings(rule: api.CIDRRule, where: FieldPath) -> list[Finding]:
    out: list[Finding] = []
    count = sum(1 for v in (rule.cidr, rule.cidr_group_ref) if v) + (rule.cidr_group_selector is not None)
    if count == 0:
        return [((), "one of cidr, cidrGroupRef, or cidrGroupSelector is required")]
    if count > 1:
        return [((), "more than one of cidr, cidrGroupRef, or cidrGroupSelector may not be set")]
    if rule.cidr_group_ref and not is_dns1123_subdomain(rule.cidr_group_ref):
        out.append(
            ((("cidrGroupRef",)), f'Invalid value: "{rule.cidr_group_ref}": must be a DNS-1123 subdomain')
        )
    if rule.cidr_group_selector is not None:
        out += _sub(("cidrGroupSelector",), selector_findings(rule.cidr_group_selector, cilium=True))
    prefix = None
    if rule.cidr:
        prefix = parse_prefix(rule.cidr)
        if prefix is None:
            out.append((("cidr",), _crd_type((*where, "cidr"), rule.cidr, "cidr")))
    for k, exc in enumerate(rule.except_ or ()):
        inner = parse_prefix(exc)
        if inner is None:
            out.append((("except", k), _crd_type((*where, "except", k), exc, "cidr")))
        elif prefix is not None and not contains(prefix, inner):
            out.append(
                (("except", k), f"allow CIDR prefix {rule.cidr} does not contain exclude CIDR prefix {exc}")
            )
    return out


def _l7_kinds(pr: api.PortRule) -> dict[str, int]:
    r = pr.rules
    if r is None:
        return {}
    return {"DNS": len(r.dns or ()), "HTTP": len(r.http or ()), "Kafka": len(r.kafka or ())}


def _l7_section_findings(item: Any, d: Dir, host: bool, flags: Flags) -> list[Finding]:
    counts: dict[str, int] = {}
    for pr in item.to_ports or ():
        for k, n in _l7_kinds(pr).items():
            counts[k] = counts.get(k, 0) + n
    used = [k for k in ("DNS", "HTTP", "Kafka") if counts.get(k)]
    if not counts:
        return []
    if d.ingress and host:
        return [(("toPorts",), "L7 policy is not supported on host ingress yet")]
    if not flags.l7_proxy:
        return [(("toPorts",), "L7 policy is not supported since L7 proxy is not enabled")]
    for k in used:
        if d.ingress and k == "DNS":
            return [(("toPorts",), "L7 protocol DNS is not supported on ingress yet")]
        if not d.ingress and host and k != "DNS":
            return [(("toPorts",), f"L7 protocol {k} is not supported on host egress yet")]
    return []


def _port_findings(pp: api.PortProtocol, where: FieldPath, has_dns: bool) -> tuple[list[Finding], int | None]:
    """Problems of one PortProtocol and its numeric port (None if named or invalid)."""
    out: list[Finding] = []
    number: int | None = None
    port = pp.port
    if port is None:
        out.append((("port",), "Required value"))
    elif isinstance(port, int):
        out.append(
            (
                ("port",),
                f'Invalid value: "integer": {format_path((*where, "port"))} in body must be of type '
                f'string: "integer" (quote it: port: "{port}")',
            )
        )
    elif not CRD_PORT_PATTERN.search(port):
        out.append(
            (
                ("port",),
                f'Invalid value: "{port}": {format_path((*where, "port"))} in body should match '
                f"'{pattern_text(CRD_PORT_PATTERN)}'",
            )
        )
    elif not is_iana_svc_name(port):
        number = parse_go_uint16(port)
        if number is None:
            out.append(
                (("port",), f'unable to parse port: strconv.ParseUint: parsing "{port}": invalid syntax')
            )
        elif has_dns and pp.end_port is not None and pp.end_port > number:
            out.append((("endPort",), "DNS rules do not support port ranges"))
    if pp.end_port is not None and not 0 <= pp.end_port <= 65535:
        bound = "less than or equal to 65535" if pp.end_port > 65535 else "greater than or equal to 0"
        out.append((("endPort",), f"Invalid value: {pp.end_port}: should be {bound}"))
    if pp.protocol is not None and pp.protocol not in CILIUM_PROTOCOLS:
        out.append((("protocol",), _unsupported(pp.protocol, CILIUM_PROTOCOLS)))
    return out, number


def _port_rule_findings(pr: api.PortRule | api.PortDenyRule, d: Dir, where: FieldPath) -> list[Finding]:
    out: list[Finding] = []
    allow = isinstance(pr, api.PortRule)
    rules = pr.rules if isinstance(pr, api.PortRule) else None
    has_dns = bool(rules and rules.dns)
    l7 = rules is not None and any((rules.http, rules.kafka, rules.dns, rules.l7proto))
    ports = pr.ports or []
    if len(ports) > MAX_PORTS:
        # the CRD's maxItems covers allow rules; deny rules are caught by Cilium's own limit
        out.append(
            (
                ("ports",),
                _too_many(len(ports), MAX_PORTS) if allow else f"too many ports, the max is {MAX_PORTS}",
            )
        )
    zero = False
    for k, pp in enumerate(ports):
        found, number = _port_findings(pp, (*where, "ports", k), has_dns)
        out += _sub(("ports", k), found)
        zero = zero or number == 0
        proto = (pp.protocol or "ANY").upper()
        if l7 and not has_dns and not found and proto != "TCP":
            out.append(
                (
                    ("ports", k, "protocol"),
                    f"L7 rules can only apply to TCP (not {proto}) except for DNS rules",
                )
            )
    if not isinstance(pr, api.PortRule):
        return out
    names = pr.server_names or []
    if names and l7 and pr.terminating_tls is None:
        out.append((("serverNames",), "ServerNames are not allowed with L7 rules without TLS termination"))
    for k, sn in enumerate(names):
        if sn == "":
            out.append((("serverNames", k), "empty server name is not allowed"))
    if pr.listener is not None:
        lst = pr.listener
        if d.ingress:
            out.append((("listener",), f"Listener is not allowed on ingress ({lst.name})"))
        elif l7:
            out.append((("listener",), f"Listener is not allowed with L7 rules ({lst.name})"))
        if lst.envoy_config.kind not in ENVOY_CONFIG_KINDS:
            out.append(
                (("listener", "envoyConfig", "kind"), _unsupported(lst.envoy_config.kind, ENVOY_CONFIG_KINDS))
            )
        if not lst.envoy_config.name:
            out.append(
                (("listener", "envoyConfig", "name"), 'Invalid value: "": should be at least 1 chars long')
            )
        if not lst.name:
            out.append((("listener", "name"), 'Invalid value: "": should be at least 1 chars long'))
        if lst.priority is not None and not 1 <= lst.priority <= 100:
            out.append(
                (("listener", "priority"), f"Invalid value: {lst.priority}: should be between 1 and 100")
            )
    if rules is not None:
        out += _sub(("rules",), _l7_rules_findings(rules, bool(ports)))
        if l7 and zero:
            out.append((("rules",), "L7 rules can not be used when a port is 0"))
    return out


def _l7_rules_findings(rules: api.L7Rules, have_ports: bool) -> list[Finding]:
    out: list[Finding] = []
    kinds = [
        k for k, v in (("http", rules.http), ("kafka", rules.kafka), ("dns", rules.dns)) if v is not None
    ]
    if rules.l7 is not None and not rules.l7proto:
        out.append((("l7",), "'l7' may only be specified when a 'l7proto' is also specified"))
    if rules.l7proto:
        kinds.append("l7proto")
    if len(kinds) > 1:
        out.append(((), "multiple L7 protocol rule types specified in single rule"))
    elif not kinds and rules.l7 is None:
        out.append(
            ((), "must validate one and only one schema (oneOf): set one of http, kafka, dns or l7proto")
        )
    if rules.dns is not None and not have_ports:
        out.append((("dns",), "port 53 must be specified for DNS rules"))
    for j, dns in enumerate(rules.dns or ()):
        out += _sub(("dns", j), _fqdn_findings(dns))
    for j, k in enumerate(rules.kafka or ()):
        if k.role is not None and k.role not in KAFKA_ROLES:
            out.append((("kafka", j, "role"), _unsupported(k.role, KAFKA_ROLES)))
        if k.topic is not None and len(k.topic) > 255:
            out.append((("kafka", j, "topic"), "Too long: may not be longer than 255"))
    for j, h in enumerate(rules.http or ()):
        # PortRuleHTTP.Sanitize compiles path and method with Go's regexp (RE2 syntax)
        for field_name, regex in (("path", h.path), ("method", h.method)):
            problem = re2_problem(regex) if regex else None
            if problem:
                out.append((("http", j, field_name), f"error parsing regexp: {problem}"))
        for m, hm in enumerate(h.header_matches or ()):
            if hm.secret is not None and not hm.secret.name:
                out.append((("http", j, "headerMatches", m, "secret", "name"), "Secret name missing"))
            if hm.mismatch is not None and hm.mismatch not in HEADER_MISMATCH_ACTIONS:
                out.append(
                    (
                        ("http", j, "headerMatches", m, "mismatch"),
                        _unsupported(hm.mismatch, HEADER_MISMATCH_ACTIONS),
                    )
                )
            if not hm.name:
                out.append(
                    (
                        ("http", j, "headerMatches", m, "name"),
                        'Invalid value: "": should be at least 1 chars long',
                    )
                )
    return out


def _fqdn_findings(sel: api.FQDNSelector | api.PortRuleDNS) -> list[Finding]:
    name, pattern = sel.match_name, sel.match_pattern
    if name and pattern:
        return [((), "only one of MatchName or MatchPattern is allowed in an FQDNSelector")]
    if name is None and pattern is None:
        return [((), "must validate one and only one schema (oneOf): set one of matchName or matchPattern")]
    out: list[Finding] = []
    for field_name, value, regex in (
        ("matchName", name, FQDN_NAME_PATTERN),
        ("matchPattern", pattern, FQDN_WILDCARD_PATTERN),
    ):
        if value is None:
            continue
        if len(value) > FQDN_MAX:
            out.append(((field_name,), f"Too long: may not be longer than {FQDN_MAX}"))
        elif not regex.match(value):
            out.append(((field_name,), f"Invalid value: \"{value}\": should match '{pattern_text(regex)}'"))
    return out


def _icmp_findings(icmp: api.ICMPRule) -> list[Finding]:
    out: list[Finding] = []
    fields = icmp.fields or []
    if len(fields) > MAX_ICMP_FIELDS:
        out.append((("fields",), _too_many(len(fields), MAX_ICMP_FIELDS)))
    for k, f in enumerate(fields):
        path: FieldPath = ("fields", k)
        if f.family is not None and f.family not in ICMP_FAMILIES:
            out.append(((*path, "family"), _unsupported(f.family, ICMP_FAMILIES)))
            continue
        family = f.family or "IPv4"
        t = f.type
        if isinstance(t, bool) or (isinstance(t, int) and not 0 <= t <= 255):
            # inferred: Cilium narrows the type to 8 bits (icmp.go: "an 8bit code (0-255)")
            out.append(((*path, "type"), f"Invalid value: {t}: ICMP type must be 0..255 or a type name"))
        elif isinstance(t, str):
            if t.isdigit() and int(t) <= 255 and (t == "0" or not t.startswith("0")):
                continue
            if t not in ICMP_CRD_NAMES:
                out.append(((*path, "type"), f'Invalid value: "{t}": should be 0..255 or an ICMP type name'))
            elif t not in (ICMP_V6_TYPES if family == "IPv6" else ICMP_V4_TYPES):
                out.append(((*path, "type"), f"ICMP type {t} not found in {family}"))
    return out
