"""CIDR identities and CIDR selectors (semantics.md §3.3, Cilium ``pkg/labels/cidr.go``,
``pkg/policy/api/cidr.go``).

Every prefix a policy names (``except`` prefixes included) gets a local-scope identity labelled
``cidr:<prefix>`` plus the world label; ``/0`` gets only the world label. Selectors over ``cidr:``
keys match by prefix containment (:mod:`cilia.identity.selector`), so ``toCIDR: 10.0.0.0/8``
selects every CIDR identity inside 10.0.0.0/8.

``dual_stack`` chooses the world labels: single-stack identities carry ``reserved:world``,
dual-stack ones ``reserved:world-ipv4`` / ``reserved:world-ipv6``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from cilia.identity.labels import SOURCE_CIDR, SOURCE_CIDRGROUP, Label, Labels, prefix_to_cidr_key
from cilia.identity.reserved import LABEL_WORLD, LABEL_WORLD_IPV4, LABEL_WORLD_IPV6
from cilia.identity.selector import Requirement, Selector, label_extended_key

IPV4_ALL = "0.0.0.0/0"
IPV6_ALL = "::/0"
CIDR_GROUP_NAME_PREFIX = "io.cilium.policy.cidrgroupname"


class CIDRError(ValueError):
    """A prefix that cannot be parsed."""


def parse_prefix(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A prefix or bare address (a bare address is a /32 or /128), host bits masked off."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as e:
        raise CIDRError(f"unable to parse CIDR: {text!r}: {e}") from None


def cidr_label(prefix: str) -> Label:
    """``cidr:<prefix>`` (masked; IPv6 ``:`` written as ``-``)."""
    return Label(SOURCE_CIDR, prefix_to_cidr_key(str(parse_prefix(prefix))))


def world_label(version: int, dual_stack: bool = False) -> Label:
    if not dual_stack:
        return LABEL_WORLD
    return LABEL_WORLD_IPV4 if version == 4 else LABEL_WORLD_IPV6


def cidr_identity_labels(prefix: str, dual_stack: bool = False) -> Labels:
    """The label set of the CIDR identity for a prefix (``/0``: the world label only)."""
    net = parse_prefix(prefix)
    world = world_label(net.version, dual_stack)
    if net.prefixlen == 0:
        return Labels([world])
    return Labels([cidr_label(str(net)), world])


def _key(prefix: str) -> str:
    return label_extended_key(cidr_label(prefix))


def cidr_selectors(prefixes: Sequence[str], dual_stack: bool = False) -> tuple[Selector, ...]:
    """The selectors of ``toCIDR``/``fromCIDR`` (their union): ``cidr:X`` for each prefix, plus the
    world selector(s) when ``0.0.0.0/0`` or ``::/0`` is written literally."""
    out = [Selector.from_labels([cidr_label(p)]) for p in prefixes]
    v4_all, v6_all = IPV4_ALL in prefixes, IPV6_ALL in prefixes
    if dual_stack:
        if v4_all and v6_all:
            out.append(Selector.from_labels([LABEL_WORLD]))
        if v4_all:
            out.append(Selector.from_labels([LABEL_WORLD_IPV4]))
        if v6_all:
            out.append(Selector.from_labels([LABEL_WORLD_IPV6]))
    elif v4_all or v6_all:
        out.append(Selector.from_labels([LABEL_WORLD]))
    return tuple(out)


def cidr_rule_selector(
    cidr: str | None,
    excepts: Iterable[str] = (),
    *,
    group_ref: str | None = None,
    group_selector: Selector | None = None,
    dual_stack: bool = False,
) -> Selector | None:
    """The selector of one ``toCIDRSet`` entry: its main term (``cidr:X`` Exists, the world label
    for a literal ``0.0.0.0/0`` / ``::/0``, or a CIDR group) AND ``cidr:E`` DoesNotExist for every
    except prefix. None when the entry has no main term (Cilium skips it)."""
    if cidr:
        if cidr in (IPV4_ALL, IPV6_ALL):
            main = Selector(
                (
                    Requirement.exists(
                        label_extended_key(world_label(4 if cidr == IPV4_ALL else 6, dual_stack))
                    ),
                )
            )
        else:
            main = Selector((Requirement.exists(_key(cidr)),))
    elif group_ref:
        main = Selector((Requirement.exists(f"{SOURCE_CIDRGROUP}.{CIDR_GROUP_NAME_PREFIX}/{group_ref}"),))
    elif group_selector is not None:
        main = group_selector
    else:
        return None
    return main.and_(Selector(tuple(Requirement.does_not_exist(_key(e)) for e in excepts)))
