"""A Service's IP families, as the Kubernetes API server decides them (dual-stack Services).

``spec.ipFamilyPolicy`` (``SingleStack`` when unset), ``spec.ipFamilies`` (in order; the first is
the primary family, whose address is ``spec.clusterIP``) and ``spec.clusterIPs`` (one per family, in
the same order). The lab's cluster is dual stack with IPv4 first, so:

* two families or two addresses without a policy: ``RequireDualStack`` (the API server infers it);
* no families and no addresses given: ``SingleStack`` gets ``[IPv4]``, ``PreferDualStack`` and
  ``RequireDualStack`` get ``[IPv4, IPv6]``;
* addresses given without families: their families, in their order, the other family added for
  a dual-stack policy;
* families given: those, the other family added for a dual-stack policy when only one is given.

:func:`findings` checks the three fields as the API server's validation does (the messages are
Kubernetes' own where cilia knows them).
"""

from __future__ import annotations

import ipaddress
from typing import Any

IPV4, IPV6 = "IPv4", "IPv6"
FAMILIES = (IPV4, IPV6)
SINGLE, PREFER_DUAL, REQUIRE_DUAL = "SingleStack", "PreferDualStack", "RequireDualStack"
POLICIES = (SINGLE, PREFER_DUAL, REQUIRE_DUAL)
HEADLESS = "None"

Finding = tuple[tuple[str | int, ...], str]


def family_of(ip: str) -> str:
    """``IPv4`` or ``IPv6`` (ValueError for something that is no address)."""
    return IPV6 if ipaddress.ip_address(ip).version == 6 else IPV4


def _other(family: str) -> str:
    return IPV6 if family == IPV4 else IPV4


def resolve(policy: str | None, families: tuple[str, ...], cluster_ips: tuple[str, ...]) -> tuple[str, ...]:
    """The families a Service gets (primary first) in a dual-stack cluster whose primary family is
    IPv4. Input is assumed valid (:func:`findings`)."""
    fams = [f for f in families if f in FAMILIES]
    if not fams:
        fams = [family_of(ip) for ip in cluster_ips if ip and ip != HEADLESS][:2]
    # two families or addresses without a policy: the API server infers RequireDualStack
    policy = policy or (REQUIRE_DUAL if len(fams) > 1 else SINGLE)
    if not fams:
        fams = [IPV4]
    if policy == SINGLE:
        return (fams[0],)
    if len(fams) == 1:
        fams.append(_other(fams[0]))
    return tuple(fams[:2])


def _valid_ip(value: Any) -> str | None:
    try:
        return family_of(value) if isinstance(value, str) else None
    except ValueError:
        return None


def findings(spec: Any) -> list[Finding]:
    """(field path, message) of each error in a Service spec's dual-stack fields."""
    if not isinstance(spec, dict):
        return []
    out: list[Finding] = []
    policy, families, ips = spec.get("ipFamilyPolicy"), spec.get("ipFamilies"), spec.get("clusterIPs")
    if policy is not None and policy not in POLICIES:
        out.append((("spec", "ipFamilyPolicy"), f'Unsupported value: "{policy}": supported values: '
                    + ", ".join(f'"{p}"' for p in sorted(POLICIES))))
    fams: list[str] = []
    if isinstance(families, list):
        for i, f in enumerate(families):
            if f not in FAMILIES:
                out.append((("spec", "ipFamilies", i), f'Unsupported value: "{f}": supported values: '
                            '"IPv4", "IPv6"'))
            elif f in fams:
                out.append((("spec", "ipFamilies", i), f'Duplicate value: "{f}"'))
            else:
                fams.append(f)
        if len(families) > 2:
            out.append((("spec", "ipFamilies"), f"Too many: {len(families)}: must have at most 2 items"))
    addrs: list[str] = [a for a in ips if isinstance(a, str)] if isinstance(ips, list) else []
    if isinstance(ips, list):
        if len(ips) > 2:
            out.append((("spec", "clusterIPs"), f"Too many: {len(ips)}: must have at most 2 items"))
        cluster_ip = spec.get("clusterIP")
        if ips and isinstance(cluster_ip, str) and cluster_ip and ips[0] != cluster_ip:
            out.append((("spec", "clusterIPs", 0), f'Invalid value: "{ips[0]}": must match clusterIP'))
        seen: list[str] = []
        for i, a in enumerate(ips):
            if a == HEADLESS:
                if i > 0 or len(ips) > 1:
                    out.append((("spec", "clusterIPs", i), f'Invalid value: "{a}": '
                                'a headless Service has a single clusterIPs entry, "None"'))
                continue
            fam = _valid_ip(a)
            if fam is None:
                if a not in ("", None):
                    out.append((("spec", "clusterIPs", i), f'Invalid value: "{a}": must be a valid IP '
                                "address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
                continue
            if fam in seen:
                out.append((("spec", "clusterIPs", i), f'Invalid value: "{a}": may have at most one address '
                            f"of each family (clusterIPs[{seen.index(fam)}] is {fam} too)"))
            elif i < len(fams) and fams[i] != fam:
                out.append((("spec", "clusterIPs", i), f'Invalid value: "{a}": expected an {fams[i]} '
                            f"value as indicated by `ipFamilies[{i}]`"))
            seen.append(fam)
    if policy == SINGLE and (len(fams) > 1 or len([a for a in addrs if a != HEADLESS]) > 1):
        out.append((("spec", "ipFamilyPolicy"), f'Invalid value: "{policy or SINGLE}": must be '
                    "'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"))
    return out
