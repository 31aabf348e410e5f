"""CIDR identities and CIDR selectors (semantics.md §3.3, Cilium ``pkg/labels/cidr.go``,
``pkg/policy/api/cidr.go``).

Every prefix a policy names (``except`` prefixes included) gets a local-scope identity labelled
``cidr:<prefix>`` plus the world label; ``/0`` gets only the world label. Selectors over ``cidr:``
keys match by prefix containment (:mod:`cilia.identity.selector`), so ``toCIDR: 10.0.0.0/8``
selects every CIDR identity inside 10.0.0.0/8.

``dual_stack`` chooses the world labels: single-stack identities carry ``reserved:world``,
dual-stack ones ``reserved:world-ipv4`` / ``reserved:world-ipv6``.

CiliumCIDRGroups add prefixes of their own (:func:`prefix_identity_labels`): each of a group's
prefixes is labelled ``cidrgroup:io.cilium.policy.cidrgroupname/<name>`` and ``cidrgroup:<k>=<v>``
for the group's labels, and every prefix also carries the labels of the prefixes that contain it
(Cilium's ipcache metadata merge, ``mergeParentLabels``), so an address inside a group keeps the
group's labels when a policy names a longer prefix around it (an ``except`` hole included).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from cilia.identity.errors import IdentityError
from cilia.identity.labels import SOURCE_CIDR, SOURCE_CIDRGROUP, Label, Labels, prefix_to_cidr_key
from cilia.identity.reserved import LABEL_WORLD, LABEL_WORLD_IPV4, LABEL_WORLD_IPV6
from cilia.identity.selector import Requirement, Selector, label_extended_key

IPV4_ALL = "0.0.0.0/0"
IPV6_ALL = "::/0"
CIDR_GROUP_NAME_PREFIX = "io.cilium.policy.cidrgroupname"


class CIDRError(IdentityError, ValueError):
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


def cidr_group_name_label(name: str) -> Label:
    """``cidrgroup:io.cilium.policy.cidrgroupname/<name>``, the label ``cidrGroupRef`` selects."""
    return Label(SOURCE_CIDRGROUP, f"{CIDR_GROUP_NAME_PREFIX}/{name}")


def cidr_group_labels(name: str, labels: Mapping[str, str]) -> tuple[Label, ...]:
    """The labels a group gives its prefixes: its name label and ``cidrgroup:<k>=<v>`` for each of
    its own labels (``cidrGroupSelector`` matches these)."""
    return (cidr_group_name_label(name), *(Label(SOURCE_CIDRGROUP, k, v) for k, v in sorted(labels.items())))


# A prefix as numbers (family, masked address, length) and its canonical text: parents are found by
# masking, and parsing (the expensive part) is done once per distinct text.
_PrefixKey = tuple[int, int, int]


@lru_cache(maxsize=1 << 16)
def _prefix_key(text: str) -> tuple[_PrefixKey, str]:
    net = parse_prefix(text)
    return (net.version, int(net.network_address), net.prefixlen), str(net)


@lru_cache(maxsize=1 << 16)
def _own_cidr_label(canonical: str) -> Label:
    return cidr_label(canonical)


def _parent(key: _PrefixKey, bits: int) -> _PrefixKey:
    version, addr, _ = key
    width = 32 if version == 4 else 128
    return version, addr >> (width - bits) << (width - bits) if bits else 0, bits


def prefix_identity_labels(
    policy_prefixes: Iterable[str],
    groups: Iterable[tuple[str, Mapping[str, str], Iterable[str]]] = (),
    dual_stack: bool = False,
) -> dict[str, Labels]:
    """The label set of every prefix the node puts into its ipcache: the prefixes policies name
    (``cidr:<prefix>``) and those of the CIDR groups ``(name, labels, prefixes)``.

    A prefix has its own labels, then those of every shorter prefix containing it, the longer
    parent winning for a key, and at most one ``cidr:`` label in all (its own if it has one); then
    the world label. A ``/0`` named by a policy has the world label only."""
    own: dict[_PrefixKey, dict[str, Label]] = {}
    text_of: dict[_PrefixKey, str] = {}
    for text in policy_prefixes:
        key, canonical = _prefix_key(text)
        text_of[key] = canonical
        entry = own.setdefault(key, {})
        if key[2]:
            label = _own_cidr_label(canonical)
            entry[label.key] = label
    for name, labels, cidrs in sorted(groups, key=lambda g: g[0]):
        group_labels = cidr_group_labels(name, labels)
        for text in cidrs:
            key, canonical = _prefix_key(text)
            text_of[key] = canonical
            entry = own.setdefault(key, {})
            for label in group_labels:
                entry.setdefault(label.key, label)
    # the lengths present per family: a prefix's parents are looked up by these only
    lengths = {v: sorted({k[2] for k in own if k[0] == v}, reverse=True) for v in (4, 6)}
    worlds = {v: world_label(v, dual_stack) for v in (4, 6)}
    out: dict[str, Labels] = {}
    for key in sorted(own):
        merged = dict(own[key])
        has_cidr = any(lb.source == SOURCE_CIDR for lb in merged.values())
        for bits in lengths[key[0]]:  # parents, longest first
            if bits >= key[2]:
                continue
            for k, label in own.get(_parent(key, bits), {}).items():
                if label.source == SOURCE_CIDR and has_cidr:
                    continue
                if k not in merged:
                    merged[k] = label
                    has_cidr = has_cidr or label.source == SOURCE_CIDR
        out[text_of[key]] = Labels([*merged.values(), worlds[key[0]]])
    return out


def inherited_group_labels(ip: str, prefix_labels: Mapping[str, Labels]) -> tuple[Label, ...]:
    """The ``cidrgroup:`` labels an address's own ipcache entry (a learned fqdn address) inherits
    from the prefixes containing it, the longer prefix winning for a key — as Cilium merges the
    labels of parent prefixes, so a deny through a CIDR group also reaches an address a ``toFQDNs``
    rule gave an identity of its own."""
    addr = ipaddress.ip_address(ip)
    nets = (ipaddress.ip_network(p) for p in prefix_labels)
    parents = sorted((n for n in nets if n.version == addr.version and addr in n), key=lambda n: -n.prefixlen)
    merged: dict[str, Label] = {}
    for net in parents:
        for label in prefix_labels[str(net)]:
            if label.source == SOURCE_CIDRGROUP:
                merged.setdefault(label.key, label)
    return tuple(merged.values())
