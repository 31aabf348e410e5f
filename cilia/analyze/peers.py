"""What a user names on the command line: a flow's source or destination (PEER) and its port.

PEER forms (parsed here, resolved against a loaded cluster by :mod:`cilia.analyze.cluster`):

* ``NAMESPACE/POD`` — a pod; a unique prefix of the pod name is enough. A bare ``POD`` means the
  ``default`` namespace.
* ``deployment:NAMESPACE/NAME`` (or ``deployment:NAME`` in ``default``) — every pod of a Deployment.
* ``statefulset:NAMESPACE/NAME``, ``daemonset:NAMESPACE/NAME`` (``sts:``, ``ds:``) — every pod of one.
* an IP address — a pod's IP means that pod; any other address is outside the cluster (world, or the
  CIDR identity of the longest policy prefix containing it, semantics.md §3.4).
* ``entity:NAME`` — one of the reserved peers in :data:`PEER_ENTITIES`. ``entity:host`` is the local
  node's host endpoint (the only Node of the manifests), decided by its host policies.
* ``node:NAME`` — a Node of the manifests: its host endpoint, decided by the host policies that
  select it; to a pod it is the host on its own node and a remote node elsewhere
  (:mod:`cilia.analyze.nodes`). A hostNetwork pod, or a node's address, stands for its node.
* ``fqdn:NAME`` — the addresses a node's DNS proxy learned for a DNS name and still holds (one flow
  per address; :mod:`cilia.analyze.learned`): toFQDNs rules decide on them as on that node.
* ``svc:NAMESPACE/NAME`` (or ``service:``) — a Service, as a destination only: one flow per backend on
  its target port, as the datapath translates (:mod:`cilia.analyze.services`); so is a Service's
  ClusterIP given as an address.
* ``cidrgroup:NAME`` — the addresses of a CiliumCIDRGroup: one flow per identity an address in the
  group can have (each of its prefixes, and each longer prefix of the ipcache inside them, such as a
  policy's ``except``), so a question about the group holds only if it holds for all of them.

PORT forms: ``80/TCP``, ``53/udp``, ``80`` (TCP), ``8/ICMP`` and ``128/ICMPv6`` (the ICMP type takes the
place of the port, §4.5).
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum

from cilia.identity.fqdn import normalize_fqdn
from cilia.k8s.frozen import frozen
from cilia.policy.types import Proto

# Reserved peers a flow can name; the values are the reserved label each identity carries.
PEER_ENTITIES: dict[str, str] = {
    "host": "host",
    "remote-node": "remote-node",
    "world": "world",
    "kube-apiserver": "kube-apiserver",
    "health": "health",
    "init": "init",
    "unmanaged": "unmanaged",
    "ingress": "ingress",
}

_PROTOS: dict[str, Proto] = {
    "TCP": Proto.TCP,
    "UDP": Proto.UDP,
    "SCTP": Proto.SCTP,
    "ICMP": Proto.ICMP,
    "ICMPV6": Proto.ICMPV6,
}


class PeerError(ValueError):
    """A PEER or PORT argument that cannot be understood or resolved."""


class PeerKind(StrEnum):
    POD = "pod"
    DEPLOYMENT = "deployment"
    STATEFULSET = "statefulset"
    DAEMONSET = "daemonset"
    IP = "ip"
    ENTITY = "entity"
    FQDN = "fqdn"
    SERVICE = "service"
    CIDR_GROUP = "cidrgroup"
    NODE = "node"


# A DNS name as a flow's peer: labels of letters, digits, '-' and '_' (no wildcard: a pattern selects
# names in a policy, a flow goes to one name's addresses).
_DNS_NAME = r"[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?(\.[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?)*"  # re's cache


@frozen
class PeerSpec:
    """A parsed PEER argument, not yet resolved against a cluster."""

    kind: PeerKind
    text: str
    namespace: str = ""
    name: str = ""  # pod name (prefix), deployment name, entity name or DNS name (normalized)
    ip: str = ""  # normalized address for IP peers


@frozen
class PortSpec:
    """A parsed PORT argument: protocol and port (ICMP type for ICMP/ICMPv6)."""

    proto: Proto
    port: int

    def __str__(self) -> str:
        return f"{self.port}/{proto_name(self.proto)}"


def proto_name(proto: int) -> str:
    """Protocol name as policies spell it (``TCP``, ``ICMPv6``, ``ANY``)."""
    if proto == Proto.ICMPV6:
        return "ICMPv6"
    try:
        return Proto(proto).name
    except ValueError:
        return str(proto)


def parse_proto(text: str) -> Proto:
    """TCP/UDP/SCTP/ICMP/ICMPv6, case-insensitive."""
    proto = _PROTOS.get(text.strip().upper())
    if proto is None:
        raise PeerError(f"unknown protocol {text!r}: expected one of TCP, UDP, SCTP, ICMP, ICMPv6")
    return proto


def _split_ns(rest: str, text: str) -> tuple[str, str]:
    ns, sep, name = rest.partition("/")
    if not sep:
        ns, name = "default", rest
    if not ns or not name or "/" in name:
        raise PeerError(f"bad peer {text!r}: expected NAMESPACE/NAME")
    return ns, name


def parse_peer(text: str) -> PeerSpec:
    """Parse a PEER argument (see the module docstring)."""
    raw = text.strip()
    if not raw:
        raise PeerError("empty peer")
    kind, sep, rest = raw.partition(":")
    if sep and kind == "entity":
        if rest not in PEER_ENTITIES:
            raise PeerError(f"unknown entity {rest!r}: expected one of {', '.join(PEER_ENTITIES)}")
        return PeerSpec(PeerKind.ENTITY, raw, name=rest)
    if sep and kind == "node":
        if not rest or "/" in rest:
            raise PeerError(f"bad peer {text!r}: expected node:NAME (a Node of the manifests)")
        return PeerSpec(PeerKind.NODE, raw, name=rest)
    if sep and kind == "fqdn":
        return PeerSpec(PeerKind.FQDN, raw, name=_dns_name(rest, raw))
    if sep and kind in ("deployment", "deploy"):
        ns, name = _split_ns(rest, raw)
        return PeerSpec(PeerKind.DEPLOYMENT, raw, namespace=ns, name=name)
    if sep and kind in ("statefulset", "sts", "daemonset", "ds"):
        ns, name = _split_ns(rest, raw)
        which = PeerKind.STATEFULSET if kind in ("statefulset", "sts") else PeerKind.DAEMONSET
        return PeerSpec(which, raw, namespace=ns, name=name)
    if sep and kind == "cidrgroup":
        if not rest or "/" in rest:
            raise PeerError(f"bad peer {text!r}: expected cidrgroup:NAME (a CiliumCIDRGroup)")
        return PeerSpec(PeerKind.CIDR_GROUP, raw, name=rest)
    if sep and kind in ("svc", "service"):
        ns, name = _split_ns(rest, raw)
        return PeerSpec(PeerKind.SERVICE, raw, namespace=ns, name=name)
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        pass
    else:
        return PeerSpec(PeerKind.IP, raw, ip=str(addr))
    try:
        net = ipaddress.ip_network(raw, strict=False)
    except ValueError:
        pass
    else:
        raise PeerError(f"bad peer {text!r}: a flow has one address; name one inside {net}, e.g. {net[1]}")
    if sep:
        raise PeerError(
            f"bad peer {text!r}: expected NAMESPACE/POD, deployment:NAMESPACE/NAME, svc:NAMESPACE/NAME, "
            "an IP address, entity:NAME, node:NAME, fqdn:NAME or cidrgroup:NAME"
        )
    ns, name = _split_ns(raw, raw)
    return PeerSpec(PeerKind.POD, raw, namespace=ns, name=name)


def _dns_name(rest: str, text: str) -> str:
    name = normalize_fqdn(rest)
    if "*" in name:
        raise PeerError(
            f"bad peer {text!r}: fqdn: takes one DNS name, not a pattern (a flow goes to the addresses "
            "of one name); name one the pattern matches"
        )
    if not name or len(name) > 253 or not re.fullmatch(_DNS_NAME, name):
        raise PeerError(f"bad peer {text!r}: expected fqdn:NAME with a DNS name, e.g. fqdn:api.example.com")
    return name


def parse_port(text: str, protocol: str | None = None) -> PortSpec:
    """Parse ``80/TCP`` (or ``80`` with ``protocol``, default TCP)."""
    raw = text.strip()
    port_text, sep, proto_text = raw.partition("/")
    if sep and protocol and parse_proto(proto_text) != parse_proto(protocol):
        raise PeerError(f"port {text!r} contradicts protocol {protocol!r}")
    proto = parse_proto(proto_text if sep else (protocol or "TCP"))
    try:
        port = int(port_text)
    except ValueError:
        raise PeerError(f"bad port {text!r}: expected a number like 80/TCP") from None
    limit = 255 if proto in (Proto.ICMP, Proto.ICMPV6) else 65535
    low = 0 if proto in (Proto.ICMP, Proto.ICMPV6) else 1
    if not low <= port <= limit:
        what = "ICMP type" if limit == 255 else "port"
        raise PeerError(f"bad {what} {port} in {text!r}: must be {low}..{limit}")
    return PortSpec(proto, port)
