"""Lint rules that read the policy objects alone (no pods, no engine): CL006, CL009–CL014."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from cilia.analyze.findings import Finding
from cilia.analyze.policydocs import (
    CNP,
    KNP,
    PEER_FIELDS,
    REQUIRES_FIELDS,
    SECTIONS,
    PolicyDoc,
    selector_text,
)
from cilia.k8s import api
from cilia.k8s.netaddr import parse_addr, parse_prefix
from cilia.k8s.source import FieldPath

_NAMESPACE_KEYS = ("io.kubernetes.pod.namespace", "k8s:io.kubernetes.pod.namespace")
_VERBS = {"allow", "deny", "permit", "block", "from", "only", "policy", "cnp", "np", "netpol"}


def _finding(rule: str, pol: PolicyDoc, path: Sequence[str | int], message: str, fix: str) -> Finding:
    file, line, col, text = pol.where(path)
    return Finding(rule, file, line, col, pol.describe, text, message, fix)


def _sections(rule: api.Rule, direction: str) -> tuple[list, list]:
    allow, deny = SECTIONS[direction]
    return (
        getattr(rule, "ingress" if allow == "ingress" else "egress") or [],
        getattr(rule, "ingress_deny" if deny == "ingressDeny" else "egress_deny") or [],
    )


def deny_only_default_deny(pol: PolicyDoc) -> Iterator[Finding]:
    """CL006: a deny-only section with default deny left on (semantics.md §4.2)."""
    for prefix, rule in pol.rules():
        for direction in ("ingress", "egress"):
            allows, denies = _sections(rule, direction)
            configured = (
                getattr(rule.enable_default_deny, direction, None) if rule.enable_default_deny else None
            )
            if denies and not allows and configured is not False:
                section = SECTIONS[direction][1]
                yield _finding(
                    "CL006",
                    pol,
                    (*prefix, section),
                    f"this {section}-only rule also switches the pods it selects "
                    f"({selector_text(rule.endpoint_selector)}) into {direction} default deny: every "
                    f"{direction} flow that no other policy allows is dropped, not just the denied peers",
                    f"if only the named peers should be cut, add `enableDefaultDeny: {{{direction}: false}}` "
                    f"to the rule; otherwise add {SECTIONS[direction][0]} allows for the traffic these pods "
                    "need",
                )


def deprecated_requires(pol: PolicyDoc) -> Iterator[Finding]:
    """CL009: fromRequires / toRequires (deprecated in Cilium 1.17, §4.7)."""
    for prefix, rule in pol.rules():
        for direction in ("ingress", "egress"):
            field = REQUIRES_FIELDS[direction]
            attr = "from_requires" if direction == "ingress" else "to_requires"
            for section, entries in zip(SECTIONS[direction], _sections(rule, direction), strict=True):
                for i, entry in enumerate(entries):
                    if getattr(entry, attr) is not None:
                        yield _finding(
                            "CL009",
                            pol,
                            (*prefix, section, i, field),
                            f"{field} is deprecated since Cilium 1.17 and will be removed; it grants nothing "
                            f"by itself and is AND-ed into every {PEER_FIELDS[direction]} selector of every "
                            "policy that selects these pods",
                            f"write the required labels into each {PEER_FIELDS[direction]} selector instead",
                        )


def endpoint_selector_namespace(pol: PolicyDoc) -> Iterator[Finding]:
    """CL010: a CNP subject that names a namespace (§2.5: Cilium forces the policy's own)."""
    if pol.kind != CNP:
        return
    for prefix, rule in pol.rules():
        sel = rule.endpoint_selector
        if sel is None:
            continue
        for key, value in (sel.match_labels or {}).items():
            if key not in _NAMESPACE_KEYS or value == pol.namespace:
                continue
            path = (*prefix, "endpointSelector", "matchLabels", key)
            if key.startswith("k8s:"):
                what = (
                    f"Cilium overwrites it with the policy's namespace ({pol.namespace}), so the policy "
                    f"applies to pods in {pol.namespace}, not in {value}"
                )
            else:
                what = (
                    f"Cilium adds k8s:io.kubernetes.pod.namespace={pol.namespace} next to it, and no pod "
                    f"is in both {pol.namespace} and {value}: the policy selects nothing"
                )
            yield _finding(
                "CL010",
                pol,
                path,
                f"a CiliumNetworkPolicy applies only in its own namespace; endpointSelector names "
                f"namespace {value}: {what}",
                f"create the policy in namespace {value} (metadata.namespace) and drop this label, or use a "
                "CiliumClusterwideNetworkPolicy",
            )
        for i, req in enumerate(sel.match_expressions or ()):
            if req.key in _NAMESPACE_KEYS and (req.operator != "In" or req.values != [pol.namespace]):
                yield _finding(
                    "CL010",
                    pol,
                    (*prefix, "endpointSelector", "matchExpressions", i),
                    "a CiliumNetworkPolicy applies only in its own namespace "
                    f"({pol.namespace}); this namespace expression cannot widen it",
                    "use a CiliumClusterwideNetworkPolicy to select pods across namespaces",
                )


def icmp_type_zero(pol: PolicyDoc) -> Iterator[Finding]:
    """CL012: ICMP type 0 is stored as port 0, the wildcard, so it matches every ICMP type
    (cilium/cilium#41304, fixed after 1.18)."""
    for prefix, rule in pol.rules():
        for direction in ("ingress", "egress"):
            for section, entries in zip(SECTIONS[direction], _sections(rule, direction), strict=True):
                for i, entry in enumerate(entries):
                    for j, icmp in enumerate(entry.icmps or ()):
                        for k, fld in enumerate(icmp.fields or ()):
                            if fld.type not in (0, "0", "EchoReply"):
                                continue
                            path = (*prefix, section, i, "icmps", j, "fields", k, "type")
                            yield _icmp_zero_finding(pol, path, section, fld)


def _icmp_zero_finding(pol: PolicyDoc, path: FieldPath, section: str, fld: api.ICMPField) -> Finding:
    verb = "denies" if section.endswith("Deny") else "allows"
    family = fld.family or "IPv4"
    return _finding(
        "CL012",
        pol,
        path,
        f"ICMP type {fld.type} ({family}) is stored as port 0, which Cilium 1.18 reads as every ICMP "
        f"type: this rule {verb} all {family} ICMP, not only echo replies",
        "drop it if it is meant for ping replies: replies to an allowed echo request pass without a "
        "rule (conntrack); list the other types you need explicitly",
    )


def l7_rules(pol: PolicyDoc) -> Iterator[Finding]:
    """CL013: Kafka and generic (l7proto) L7 rules. Cilium sends such traffic through its proxy;
    cilia has none for them: ``apply`` refuses them unless ``--allow-l4-only-l7``, and then the whole
    port is allowed. HTTP rules and serverNames (the HTTP/TLS proxy) and DNS rules (the DNS proxy)
    are enforced and not reported."""
    for prefix, rule in pol.rules():
        for direction in ("ingress", "egress"):
            section = SECTIONS[direction][0]
            for i, entry in enumerate(_sections(rule, direction)[0]):
                for j, port_rule in enumerate(entry.to_ports or ()):
                    l7 = port_rule.rules
                    if l7 is None or not (l7.kafka or l7.l7proto):
                        continue
                    kind = "kafka" if l7.kafka else "l7proto"
                    yield _finding(
                        "CL013",
                        pol,
                        (*prefix, section, i, "toPorts", j, "rules", kind),
                        f"cilia has no proxy for {kind} rules: `cilia apply` refuses them unless "
                        "--allow-l4-only-l7, and then allows every request on the rule's ports (Cilium "
                        "would pass them through its L7 proxy and allow only the listed requests)",
                        "treat the port as fully allowed when testing with cilia, or test the L7 part "
                        "on a real Cilium cluster",
                    )


def _mapped_v4(text: str | None) -> str | None:
    """The IPv4 form of an IPv4-mapped IPv6 prefix or address (``::ffff:198.19.0.10/128``), else None."""
    if not text:
        return None
    net = parse_prefix(text)
    addr = net.network_address if net is not None else parse_addr(text)
    mapped = getattr(addr, "ipv4_mapped", None)
    if mapped is None:
        return None
    bits = (net.prefixlen if net is not None else 128) - 96
    return f"{mapped}/{bits}" if bits >= 0 else None


def _cidr_fields(pol: PolicyDoc) -> Iterator[tuple[FieldPath, str, str | None]]:
    """(path, section, value) of every CIDR a policy writes (CIDR lists, CIDR sets, excepts, ipBlocks)."""
    if pol.kind == KNP:
        spec = pol.obj.spec
        for section, field in (("ingress", "from_"), ("egress", "to")):
            for i, r in enumerate(getattr(spec, section, None) or ()):
                for j, peer in enumerate(getattr(r, field) or ()):
                    if peer.ip_block is None:
                        continue
                    key = "from" if field == "from_" else "to"
                    base = ("spec", section, i, key, j, "ipBlock")
                    yield (*base, "cidr"), section, peer.ip_block.cidr
                    for k, e in enumerate(peer.ip_block.except_ or ()):
                        yield (*base, "except", k), section, e
        return
    for prefix, rule in pol.rules():
        for direction, (allow, deny) in SECTIONS.items():
            side = "from" if direction == "ingress" else "to"
            for section, entries in zip((allow, deny), _sections(rule, direction), strict=True):
                for i, entry in enumerate(entries):
                    for j, cidr in enumerate(getattr(entry, f"{side}_cidr", None) or ()):
                        yield (*prefix, section, i, f"{side}CIDR", j), section, cidr
                    for j, cr in enumerate(getattr(entry, f"{side}_cidr_set", None) or ()):
                        base = (*prefix, section, i, f"{side}CIDRSet", j)
                        yield (*base, "cidr"), section, cr.cidr
                        for k, e in enumerate(cr.except_ or ()):
                            yield (*base, "except", k), section, e


def mapped_ipv4_cidrs(pol: PolicyDoc) -> Iterator[Finding]:
    """CL014: an IPv4-mapped IPv6 CIDR. Go's netip keeps ``::ffff:a.b.c.d`` as an IPv6 prefix and
    Cilium selects it as one (an IPv6 ``cidr:`` label), while IPv4 packets are matched against IPv4
    prefixes only: the rule never matches the IPv4 traffic the author had in mind (a deny denies
    nothing). cilia decides the same way; this makes it visible."""
    for path, section, value in _cidr_fields(pol):
        v4 = _mapped_v4(value)
        if v4 is None:
            continue
        verb = "denies" if section.endswith("Deny") else "allows"
        if path[-2] == "except":
            verb = "exempts"
        yield _finding(
            "CL014",
            pol,
            path,
            f"{value} is an IPv4-mapped IPv6 prefix: Cilium (and cilia) match it against IPv6 packets "
            f"only, so this rule {verb} no IPv4 traffic to or from {v4}",
            f"write the IPv4 prefix instead: {v4}",
        )


# --------------------------------------------------------------------------- CL011


def _tokens(side: str) -> str:
    words = [w for w in re.split(r"[-_.]+", side.lower()) if w and w not in _VERBS]
    return "-".join(words)


def _named_halves(pol: PolicyDoc) -> list[tuple[str, str, str]]:
    """(left, right, source) for names like ``allow-frontend-to-app-b`` (metadata.name, then file)."""
    out = []
    for source in (pol.name, Path(pol.doc.file).stem):
        m = re.fullmatch(r"(.+?)[-_]to[-_](.+)", source.lower())
        if m:
            out.append((_tokens(m.group(1)), _tokens(m.group(2)), source))
    return out


def _names(side: str, values: set[str]) -> bool:
    if not side:
        return False
    return any(side == v or v.endswith("-" + side) or side.endswith("-" + v) for v in values)


def _values(selectors: Sequence[api.LabelSelector | None]) -> set[str]:
    return {str(v).lower() for s in selectors if s is not None for v in (s.match_labels or {}).values() if v}


def _short(sel: api.LabelSelector | None) -> str:
    labels = (sel.match_labels or {}) if sel is not None else {}
    for key in ("app", "k8s:app", "app.kubernetes.io/name", "name", "role"):
        if labels.get(key):
            return str(labels[key])
    return selector_text(sel)


def _match_labels(sels: Sequence[api.LabelSelector]) -> str:
    labels = (sels[0].match_labels or {}) if sels else {}
    return ", ".join(f"{k}: {v}" for k, v in labels.items())


def _ports_text(entries: Sequence) -> str:
    ports = []
    for entry in entries:
        for pr in getattr(entry, "to_ports", None) or ():
            for pp in pr.ports or ():
                ports.append(f"{pp.port}/{pp.protocol or 'ANY'}")
    return f" on {', '.join(dict.fromkeys(ports))}" if ports else ""


def direction_wording(pol: PolicyDoc) -> Iterator[Finding]:
    """CL011: a one-direction policy whose name reads the other way round ("a-to-b" on an ingress
    rule that selects a and admits b)."""
    for prefix, rule in pol.rules():
        in_allow, in_deny = _sections(rule, "ingress")
        eg_allow, eg_deny = _sections(rule, "egress")
        if bool(in_allow or in_deny) == bool(eg_allow or eg_deny):
            continue
        direction = "ingress" if in_allow or in_deny else "egress"
        entries = [*in_allow, *in_deny] if direction == "ingress" else [*eg_allow, *eg_deny]
        attr = "from_endpoints" if direction == "ingress" else "to_endpoints"
        peer_sels = [s for e in entries for s in (getattr(e, attr) or ())]
        subject_vals = _values([rule.endpoint_selector])
        peer_vals = _values(peer_sels)
        for left, right, source in _named_halves(pol):
            src_side, dst_side = (left, right)
            if direction == "ingress":
                # An ingress policy admits peers (sources) into the subject (destination).
                wrong = (_names(dst_side, peer_vals) or _names(src_side, subject_vals)) and not _names(
                    src_side, peer_vals
                )
            else:
                wrong = (_names(src_side, peer_vals) or _names(dst_side, subject_vals)) and not _names(
                    dst_side, peer_vals
                )
            if not wrong:
                continue
            subject = selector_text(rule.endpoint_selector)
            subj_short, peer_short = (
                _short(rule.endpoint_selector),
                ", ".join(dict.fromkeys(_short(s) for s in peer_sels)) or "the listed peers",
            )
            section = SECTIONS[direction][0] if (in_allow or eg_allow) else SECTIONS[direction][1]
            verb = "allows" if section in ("ingress", "egress") else "denies"
            ports = _ports_text(entries)
            if direction == "ingress":
                message = (
                    f"'{source}' reads as traffic from {left} to {right}, but this is an ingress rule: it "
                    f"{verb} traffic *from* {peer_short} *into* {subj_short} pods "
                    f"(subject {subject}){ports}, "
                    f"not from {subj_short} to {peer_short}"
                )
                fix = (
                    f"to let {subj_short} pods reach {peer_short}, write an egress rule on them: "
                    f"`egress: [{{toEndpoints: [{{matchLabels: {{{_match_labels(peer_sels)}}}}}], "
                    "toPorts: …}]` "
                    f"(see examples/seed/allow-frontend-egress-to-b.yaml), or an ingress rule on the "
                    f"{peer_short} pods with fromEndpoints selecting {subj_short}; if ingress into "
                    f"{subj_short} is intended, rename the policy "
                    f"(e.g. {verb[:-1]}-{peer_short}-to-{subj_short})"
                )
            else:
                message = (
                    f"'{source}' reads as traffic from {left} to {right}, but this is an egress rule: it "
                    f"{verb} traffic *from* {subj_short} pods (subject {subject}) *to* {peer_short}{ports}, "
                    f"not from {peer_short} to {subj_short}"
                )
                fix = (
                    f"to admit {peer_short} into {subj_short} pods, write an ingress rule on them with "
                    f"fromEndpoints selecting {peer_short}; if egress is intended, rename the policy "
                    f"(e.g. {verb[:-1]}-{subj_short}-to-{peer_short})"
                )
            yield _finding("CL011", pol, (*prefix, section), message, fix)
            break


RAW_RULES = (
    deny_only_default_deny,
    deprecated_requires,
    endpoint_selector_namespace,
    direction_wording,
    icmp_type_zero,
    l7_rules,
    mapped_ipv4_cidrs,
)
