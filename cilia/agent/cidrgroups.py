"""The node's prefix identities: one CIDR identity and ipcache entry per prefix that the policies
name or that a CiliumCIDRGroup lists, labelled as Cilium's ipcache labels them
(:func:`cilia.identity.cidr.prefix_identity_labels`).

A group's prefixes are in the ipcache whether or not a policy refers to the group (as Cilium 1.18's
policy watcher upserts every group), so a policy and a group can be applied in either order, and a
change to a group (apply, delete) moves its prefixes to their new identities without the policies
that use it being applied again. Order, so that no packet meets an identity its peers' policies do
not know yet: new identities are allocated and every affected endpoint's policy synced first, then
the ipcache entries move, then the old identities are released.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cilia.agent import fqdn
from cilia.identity.cidr import prefix_identity_labels
from cilia.identity.labels import Labels

if TYPE_CHECKING:
    from cilia.agent.reconciler_view import ReconcilerView as Reconciler


def wanted_prefixes(rec: Reconciler) -> dict[str, Labels]:
    """prefix -> the label set of its identity, from the policies' prefixes and the groups."""
    groups = [(g.name, g.selector_labels, g.cidrs) for g in rec.desired.cidr_groups.values()]
    return prefix_identity_labels(rec.policy.prefixes(), groups)


def sync_prefix_identities(rec: Reconciler, initial: bool = False) -> None:
    """Bring ``rec.cidr_identities`` (prefix -> identity, what the ipcache holds for prefixes) and
    ``rec.cidr_labels`` to what the policies and groups want. ``initial``: only allocate (the
    reconciler's start syncs every endpoint and the whole ipcache afterwards)."""
    want = wanted_prefixes(rec)
    have = rec.cidr_labels
    moved = sorted(p for p, labels in want.items() if have.get(p) != labels)
    removed = sorted(have.keys() - want.keys())
    releases: list[Labels] = [have[p] for p in moved if p in have]
    for prefix in moved:
        rec.cidr_identities[prefix] = rec.allocator.allocate(want[prefix])
        have[prefix] = want[prefix]
    if initial:
        for labels in releases:
            rec.allocator.release(labels)
        return
    if moved:
        rec.sync_affected_policies()  # peers learn the new identities first
        for prefix in moved:
            rec.datapath.upsert_ipcache(prefix, rec.cidr_identities[prefix])
    for prefix in removed:
        rec.datapath.delete_ipcache(prefix)
        releases.append(have.pop(prefix))
        del rec.cidr_identities[prefix]
    for labels in releases:
        rec.allocator.release(labels)
    if releases:
        rec.sync_affected_policies()  # identities gone: their entries leave the peers' maps
    if moved or removed:
        # learned fqdn addresses inherit the groups around them: relabel them too
        fqdn.refresh(rec, rec.fqdn, force=True)
