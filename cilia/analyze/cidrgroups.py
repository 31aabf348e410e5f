"""``cidrgroup:NAME`` as a flow's peer: the addresses of a CiliumCIDRGroup, as identities.

An address in a group has the identity of the longest ipcache prefix containing it: one of the
group's own prefixes, or a longer one inside them that a policy names (a ``toCIDR`` host, an
``except`` hole), which inherits the group's labels but may be selected differently. The group stands
for one flow end per such prefix, so "can A reach the group" is answered for every address of it.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

from cilia.analyze.flow import EndKind, FlowEnd
from cilia.analyze.peers import PeerError
from cilia.identity.labels import Labels
from cilia.k8s.objects import Cluster


class Analysis(Protocol):
    """What a group's flow ends are read from (:class:`cilia.analyze.cluster.Analysis`, which calls
    :func:`cidr_group_ends` and so is not imported here)."""

    @property
    def cluster(self) -> Cluster: ...

    @property
    def prefix_identities(self) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]]: ...

    def labels_of(self, identity: int) -> Labels: ...


def cidr_group_ends(analysis: Analysis, name: str) -> list[FlowEnd]:
    """One flow end per ipcache prefix inside the group's prefixes (shortest first)."""
    group = next((g for g in analysis.cluster.cidr_groups if g.name == name), None)
    if group is None:
        known = ", ".join(sorted(g.name for g in analysis.cluster.cidr_groups)) or "none"
        raise PeerError(f"no CiliumCIDRGroup {name} in the manifests (groups: {known})")
    nets = [ipaddress.ip_network(c) for c in group.cidrs]
    if not nets:
        raise PeerError(f"CiliumCIDRGroup {name} has no externalCIDRs: it stands for no address")
    inside = [
        (net, ident)
        for net, ident in analysis.prefix_identities
        if any(net.version == g.version and net.subnet_of(g) for g in nets)  # type: ignore[arg-type]
    ]
    inside.sort(key=lambda item: (item[0].version, item[0].prefixlen, item[0]))
    return [
        FlowEnd(f"{net} (cidrgroup {name})", EndKind.EXTERNAL, ident, analysis.labels_of(ident))
        for net, ident in inside
    ]
