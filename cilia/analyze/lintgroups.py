"""Lint rule CL015: a ``cidrGroupRef`` / ``cidrGroupSelector`` that no CiliumCIDRGroup of the linted
manifests answers. Cilium selects nothing through it (a deny through it denies nothing, an allow
allows nothing) until such a group exists — often a typo in the group's name or labels."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from cilia.analyze.findings import Finding
from cilia.analyze.policydocs import PolicyDoc
from cilia.identity.cidr import cidr_group_labels
from cilia.identity.labels import Labels
from cilia.identity.selector import Selector, SelectorError
from cilia.k8s.cidrgroup import CIDRGroup

# (rule attribute, section name, CIDR set attribute, CIDR set field)
_CIDR_SETS = (
    ("ingress", "ingress", "from_cidr_set", "fromCIDRSet"),
    ("ingress_deny", "ingressDeny", "from_cidr_set", "fromCIDRSet"),
    ("egress", "egress", "to_cidr_set", "toCIDRSet"),
    ("egress_deny", "egressDeny", "to_cidr_set", "toCIDRSet"),
)


def unknown_cidr_groups(pol: PolicyDoc, groups: Sequence[CIDRGroup]) -> Iterator[Finding]:
    """CL015 for every CIDR rule whose group reference or selector no group in ``groups`` answers."""
    names = {g.name for g in groups}
    label_sets = [Labels(cidr_group_labels(g.name, g.selector_labels)) for g in groups]
    known = ", ".join(sorted(names)) or "none"
    for prefix, rule in pol.rules():
        for attr, section, set_attr, set_field in _CIDR_SETS:
            for i, entry in enumerate(getattr(rule, attr) or ()):
                for j, cr in enumerate(getattr(entry, set_attr, None) or ()):
                    path = (*prefix, section, i, set_field, j)
                    if cr.cidr_group_ref and cr.cidr_group_ref not in names:
                        what, where = f'cidrGroupRef "{cr.cidr_group_ref}"', (*path, "cidrGroupRef")
                    elif cr.cidr_group_selector is not None:
                        try:
                            sel = Selector.from_api(cr.cidr_group_selector)
                        except SelectorError:
                            continue  # the validator reports it
                        if any(sel.matches(ls) for ls in label_sets):
                            continue
                        what, where = "cidrGroupSelector", (*path, "cidrGroupSelector")
                    else:
                        continue
                    file, line, col, text = pol.where(where)
                    effect = "denies nothing" if section.endswith("Deny") else "allows nothing"
                    yield Finding(
                        "CL015", file, line, col, pol.describe, text,
                        f"{what} matches no CiliumCIDRGroup in these manifests (groups: {known}): it selects "
                        f"no address, so this {section} rule {effect} through it until such a group exists",
                        "apply the CiliumCIDRGroup with these manifests, or correct the name/labels "
                        "(cilia get ccg lists a node's groups)",
                    )  # fmt: skip
