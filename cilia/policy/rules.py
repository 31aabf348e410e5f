"""The engine's internal rule model: what :mod:`cilia.policy.translate` makes of CNP/CCNP/KNP
objects (after namespace scoping, semantics.md §2.5, and NetworkPolicy translation, §6) and what
the repository resolves into MapState.

Everything the datapath needs to decide is here in resolved form: selectors are
:class:`cilia.identity.selector.Selector` values (hashable, matched against identity label sets),
protocol ANY is already expanded to TCP+UDP+SCTP, named ports are kept by name (resolved per
endpoint at resolution time), ICMP types are numeric. Attribution travels as :class:`RuleRef`.
"""

from __future__ import annotations

from dataclasses import field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from cilia.k8s.frozen import frozen
from cilia.policy.types import Direction, RuleRef

if TYPE_CHECKING:
    from cilia.identity.selector import Selector


class PeerKind(StrEnum):
    """Which YAML field a peer selector came from. Requirements (fromRequires/toRequires) are
    AND-ed only into ENDPOINTS peers (semantics.md §4.7)."""

    ENDPOINTS = "endpoints"  # from/toEndpoints
    CIDR = "cidr"  # from/toCIDR, from/toCIDRSet (selectors over cidr: labels)
    ENTITIES = "entities"
    NODES = "nodes"
    SERVICES = "services"  # toServices, once resolved against the services that exist
    FQDN = "fqdn"  # toFQDNs (selectors over fqdn: labels)
    WILDCARD = "wildcard"  # L4-only rule: no peer field, the raw wildcard (not namespace-scoped)
    GROUPS = "groups"  # cloud groups: never resolvable on this machine, selects nothing


class Peer(NamedTuple):
    kind: PeerKind
    selector: Selector


class PortProto(NamedTuple):
    """One protocol/port (range) of a rule. ``proto`` is never ANY here (ANY is expanded).

    ``port == 0`` means every port of ``proto``. ``end_port`` is the inclusive end (== ``port`` for
    a single port; Cilium treats ``endPort <= port`` as the single port). ``name`` is set (and
    ``port``/``end_port`` are 0) for a named port, lowercased. For ICMP/ICMPv6 ``port`` is the
    numeric ICMP type and ``end_port == port``.
    """

    proto: int
    port: int
    end_port: int
    name: str = ""


@frozen
class PeerRule:
    """One entry of an ingress / ingressDeny / egress / egressDeny section.

    ``peers`` are OR-ed. An empty tuple selects no peer at all (an explicit empty list, §1.5).
    ``ports`` is ``None`` for an L3-only rule (any protocol, any port, ICMP included, §4.3); otherwise
    the allowed (or denied) protocol/ports, from toPorts and icmps together.
    ``requires`` are this entry's fromRequires/toRequires selectors; the resolver AND-s the
    requirements of every rule selecting an endpoint into its ENDPOINTS peers.
    ``l7`` keeps the raw L7 rules (``api.L7Rules``) per port rule, for the proxies that enforce them.
    ``fqdn_patterns`` keeps toFQDNs matchName/matchPattern strings (the DNS proxy needs them).
    ``services`` keeps the raw toServices entries (``api.Service``), re-resolved when services change.
    """

    ref: RuleRef
    direction: Direction
    deny: bool
    peers: tuple[Peer, ...]
    ports: tuple[PortProto, ...] | None
    requires: tuple[Selector, ...] = ()
    l7: tuple[Any, ...] = ()
    fqdn_patterns: tuple[str, ...] = ()
    services: tuple[Any, ...] = ()
    auth_mode: str = ""


@frozen
class PolicyRule:
    """One rule (``spec`` or one of ``specs``) of one policy object, ready for the repository.

    ``namespace`` is "" for cluster-wide rules (CCNP). ``subject`` already carries the policy's
    namespace for CNP/KNP. ``default_deny`` is the per-direction enableDefaultDeny after Cilium's
    sanitize filled it in (§1.4 step 2). ``has_section`` says whether the rule has any
    ingress/ingressDeny (resp. egress/egressDeny) section, which is what enforces a direction (§4.2).
    ``node_selector`` is True for host policies (CCNP nodeSelector), whose subject is the host.
    """

    ref: RuleRef  # section "" and index -1: names the policy object and spec index
    namespace: str
    subject: Selector
    node_selector: bool
    entries: tuple[PeerRule, ...]
    has_section: dict[Direction, bool] = field(default_factory=dict)
    default_deny: dict[Direction, bool] = field(default_factory=dict)
    audit: bool = False  # cilia.io/audit annotation
    labels: tuple[str, ...] = ()  # policy-derived labels, §2.6 ("k8s:io.cilium.k8s.policy.name=…")
