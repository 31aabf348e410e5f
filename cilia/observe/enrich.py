"""Enrichment: what the node knows about the two sides of a datapath event.

The datapath event carries addresses and numeric identities only. :class:`NodeView` is the node's
state the pipeline names them with (local endpoints by address, identity labels, the ipcache
prefixes, the endpoints' resolved policies); the agent hands the pipeline a fresh view as its state
changes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cilia.identity.labels import SOURCE_CIDR, SOURCE_K8S, SOURCE_RESERVED, Labels, parse_cidr_key
from cilia.identity.podlabels import POD_NAMESPACE_LABEL
from cilia.identity.reserved import ReservedIdentity
from cilia.observe.flow import Endpoint, Service
from cilia.policy.resolve import EndpointPolicy

WORLD_LABELS = ("world", "world-ipv4", "world-ipv6")


@dataclass(frozen=True)
class LocalEndpoint:
    """A pod endpoint of this node."""

    endpoint_id: int
    identity: int
    namespace: str
    pod_name: str
    ip: str
    workloads: tuple[tuple[str, str], ...] = ()  # (kind, name) of the pod's owners (a Deployment)


@dataclass(frozen=True)
class NodeView:
    """The node state flows are named with.

    ``policies`` are the local endpoints' resolved (enforced) policies by identity, for default-deny
    attribution; ``audit_policies`` the policies *with* the audited rules (``cilia.io/audit``), for the
    endpoints some audited rule selects (see :mod:`cilia.observe.audit`).
    """

    endpoints: Mapping[str, LocalEndpoint] = field(default_factory=dict)  # by IP
    identities: Mapping[int, Labels] = field(default_factory=dict)
    prefixes: Mapping[str, int] = field(default_factory=dict)  # ipcache: prefix -> identity
    policies: Mapping[int, EndpointPolicy] = field(default_factory=dict)
    audit_policies: Mapping[int, EndpointPolicy] = field(default_factory=dict)
    revision: int = 0  # policy repository revision (Hubble's Policy.revision)
    node_name: str = ""
    # DNS names the node's DNS proxy learned for an address (the live cache: it changes between views)
    names: Callable[[str], tuple[str, ...]] | None = field(default=None, compare=False)
    # Service frontends: (ClusterIP, port, IP protocol) -> the Service
    services: Mapping[tuple[str, int, int], Service] = field(default_factory=dict)
    # the frontend (ClusterIP, port) a translated connection was addressed to, from its backend-side
    # tuple (client, backend, client port, backend port, protocol): the datapath's reverse NAT table
    frontend_of: Callable[[str, str, int, int, int], tuple[str, int] | None] | None = field(
        default=None, compare=False
    )


def services_of(view: NodeView, src: str, dst: str, sport: int, dport: int,
                proto: int) -> tuple[Service | None, Service | None]:
    """Hubble's ``source_service`` / ``destination_service``: the Service whose frontend an
    address:port is (as Hubble's service cache answers). A destination that is a backend of a
    connection the datapath translated gets the Service it was addressed to, when the node's
    reverse NAT table still holds the connection."""
    if not view.services or proto not in (6, 17, 132):
        return None, None
    src_svc = view.services.get((src, sport, proto))
    dst_svc = view.services.get((dst, dport, proto))
    if dst_svc is None and view.frontend_of is not None:
        try:
            front = view.frontend_of(src, dst, sport, dport, proto)
        except Exception:  # a map being replaced under us: no service rather than no flow
            front = None
        if front is not None:
            dst_svc = view.services.get((front[0], front[1], proto))
    return src_svc, dst_svc


def names_of(view: NodeView, ip: str) -> tuple[str, ...]:
    """The names learned for ``ip`` (Hubble's ``source_names`` / ``destination_names``), sorted."""
    if view.names is None or not ip:
        return ()
    try:
        return view.names(ip)
    except Exception:  # a cache being replaced under us: no names rather than no flow
        return ()


def endpoint_of(view: NodeView, ip: str, identity: int) -> Endpoint:
    """Hubble's Endpoint for one side: the local endpoint at ``ip`` if any, labelled by identity."""
    labels = view.identities.get(identity)
    strings = hubble_labels(labels) if labels is not None else _reserved_labels(identity)
    local = view.endpoints.get(ip)
    if local is not None:
        return Endpoint(local.endpoint_id, identity, local.namespace, local.pod_name, strings,
                        local.workloads)
    ns = labels.sources_of(POD_NAMESPACE_LABEL).get(SOURCE_K8S, "") if labels is not None else ""
    return Endpoint(0, identity, ns, "", strings)


def hubble_labels(labels: Labels) -> tuple[str, ...]:
    """``source:key=value`` strings, sorted; ``source:key`` when the value is empty, as Hubble shows."""
    return tuple(s.removesuffix("=") for s in labels.strings())


def _reserved_labels(identity: int) -> tuple[str, ...]:
    try:
        return (f"{SOURCE_RESERVED}:{ReservedIdentity(identity).label_name}",)
    except ValueError:
        return ()


def is_world(view: NodeView, identity: int) -> bool:
    """Whether the identity stands for addresses outside the cluster (world or a CIDR identity)."""
    if identity in (ReservedIdentity.WORLD, ReservedIdentity.WORLD_IPV4, ReservedIdentity.WORLD_IPV6):
        return True
    labels = view.identities.get(identity)
    return labels is not None and any(SOURCE_RESERVED in labels.sources_of(name) for name in WORLD_LABELS)


def world_cidr(view: NodeView, ip: str, identity: int) -> str:
    """The CIDR that matched a world peer: the longest ipcache prefix of that identity containing
    ``ip``, else the longest ``cidr:`` label of the identity containing it, else the world prefix."""
    if not ip or not is_world(view, identity):
        return ""
    addr = ipaddress.ip_address(ip)
    best: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    for prefix, ident in view.prefixes.items():
        net = ipaddress.ip_network(prefix, strict=False)
        if ident == identity and addr in net and (best is None or net.prefixlen > best.prefixlen):
            best = net
    labels = view.identities.get(identity)
    if best is None and labels is not None:
        for lb in labels:
            key = parse_cidr_key(lb.key) if lb.source == SOURCE_CIDR else None
            if key is None:
                continue
            net = ipaddress.ip_network(lb.key.replace("-", ":"), strict=False)
            if addr in net and (best is None or net.prefixlen > best.prefixlen):
                best = net
    if best is None:
        return "0.0.0.0/0" if addr.version == 4 else "::/0"
    return str(best)
