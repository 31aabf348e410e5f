"""What the reconciler's helpers (:mod:`cilia.agent.fqdn`, :mod:`cilia.agent.cidrgroups`) read and
call on it: a protocol, so that they need not import :class:`cilia.agent.reconcile.Reconciler`, which
imports them."""

from __future__ import annotations

from typing import Protocol

from cilia.agent.desired import DesiredState
from cilia.agent.endpoints import EndpointTable
from cilia.agent.fqdn_state import FqdnState
from cilia.agent.interfaces import NodeDatapath
from cilia.agent.policystate import PolicyState
from cilia.identity.allocator import IdentityAllocator
from cilia.identity.labels import Labels
from cilia.policy.mapstate import MapState


class ReconcilerView(Protocol):
    """The node reconciler's state as its helpers see it (:class:`cilia.agent.reconcile.Reconciler`)."""

    allocator: IdentityAllocator
    datapath: NodeDatapath
    endpoints: EndpointTable
    desired: DesiredState
    policy: PolicyState
    fqdn: FqdnState
    gateway: str
    applied: dict[int, MapState]  # endpoint id -> MapState in the datapath
    cidr_identities: dict[str, int]  # prefix -> CIDR identity (in the ipcache)
    cidr_labels: dict[str, Labels]  # prefix -> the labels of its CIDR identity
    remote_ipcache: dict[str, int]  # other nodes' addresses (prefix -> identity)

    def sync_affected_policies(self) -> None: ...

    def claim_stored_identities(self) -> None: ...
