"""The reference datapath in pure Python: the policy lookup of ``bpf/lib/policy.h`` step by step
(semantics.md §5.5) and a flow-level model of a node (endpoints + ipcache).

One side of a flow (:func:`policy_lookup`):

1. LPM lookup for the exact peer identity over (proto, port): the kernel key is identity(32)
   direction(8) proto(8) port(16), matched at 24..8 bits after identity and direction (proto
   and a port prefix) and at 0 (any protocol). A deny found here drops the packet (181).
2. The same LPM lookup for identity 0 (any peer).
3. The identity-0 entry wins if it is a deny, if there is no exact-identity entry, if its proxy
   priority is higher, or at equal priority if its prefix is longer; otherwise the exact-identity
   entry. Neither: default deny (133).
4. A chosen deny drops (181); an allow that requires authentication drops with 189 (cilia has no
   auth map); policy-audit mode turns drops into allows marked ``audited``.

An allowed packet whose entry has a proxy port goes to the proxy listening there, or is dropped
when none does (:func:`redirect`), whatever its family.

Before any of this, IPv6 link control passes without policy, as ARP does for IPv4 (``bpf/parse.h``
``ipv6_link_control``): neighbour discovery (ICMPv6 133-137) and link-scope multicast. Then the
lab's address guard (``bpf/guard.h``, :mod:`cilia.datapath.guard`): a packet from or to an address
outside the lab's ranges is dropped (``OUTSIDE_LAB``) whatever the policy or audit mode says.

Services (``bpf/lb.h``, ``bpf/lb6.h``): a TCP/UDP packet a local endpoint sends to a ClusterIP:port
(IPv4 or IPv6) is translated to one backend before any of this, so both sides decide on the
backend's address and target port; the kernel picks the backend at random, the caller of
:meth:`Datapath.flow` names it (``backend``, an index). A Service without backends drops (no policy
event; the kernel counts it as a policy drop, the sim says ``POLICY_DENIED``).

Conntrack is not modelled: the kernel skips policy for reply and related packets of allowed
connections (§4.9), so only packets in the original direction are looked up here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cilia.datapath.guard import in_lab
from cilia.datapath.ipcache import IPCache
from cilia.policy.types import DropReason, Entry, Key, MatchType, Verdict, lpm_prefix

_PORT_MASKS = tuple((0xFFFF << (16 - plen)) & 0xFFFF for plen in range(17))

Policy = Mapping[Key, Entry]


def lpm_lookup(
    policy: Policy, identity: int, direction: int, proto: int, port: int
) -> tuple[Key, Entry] | None:
    """Longest-prefix match of (identity, direction, proto, port) in a policy map."""
    get = policy.get
    for plen in range(16, -1, -1):
        key = Key(identity, direction, proto, port & _PORT_MASKS[plen], plen)
        entry = get(key)
        if entry is not None:
            return key, entry
    key = Key(identity, direction, 0, 0, 0)
    entry = get(key)
    return None if entry is None else (key, entry)


def _match_type(key: Key, l3: bool) -> MatchType:
    prefix = lpm_prefix(key.proto, key.prefix_len)
    if l3:
        if prefix == 0:
            return MatchType.L3_ONLY
        return MatchType.L3_L4 if prefix > 8 else MatchType.L3_PROTO
    if prefix == 0:
        return MatchType.ALL
    return MatchType.PROTO_ONLY if prefix <= 8 else MatchType.L4_ONLY


def policy_lookup(
    policy: Policy, identity: int, direction: int, proto: int, port: int, *, audit: bool = False
) -> Verdict:
    """The verdict of one side of a flow: ``identity`` is the peer, ``port`` the destination port
    (ICMP: the ICMP type)."""
    l3 = lpm_lookup(policy, identity, direction, proto, port)
    if l3 is not None and l3[1].deny:
        return _verdict(l3, True, audit)
    l4 = lpm_lookup(policy, 0, direction, proto, port)
    chosen: tuple[Key, Entry] | None
    if l4 is not None and (
        l3 is None
        or l4[1].deny
        or l4[1].proxy_priority > l3[1].proxy_priority
        or (
            l4[1].proxy_priority == l3[1].proxy_priority
            and lpm_prefix(l4[0].proto, l4[0].prefix_len) > lpm_prefix(l3[0].proto, l3[0].prefix_len)
        )
    ):
        chosen, is_l3 = l4, False
    else:
        chosen, is_l3 = l3, True
    if chosen is None:
        return Verdict(audit, DropReason.POLICY_DENIED, MatchType.NONE, None, None, audit)
    return _verdict(chosen, is_l3, audit)


def _verdict(found: tuple[Key, Entry], is_l3: bool, audit: bool) -> Verdict:
    key, entry = found
    mt = _match_type(key, is_l3)
    if entry.deny:
        return Verdict(audit, DropReason.POLICY_DENY, mt, key, entry, audit)
    if entry.auth_type:
        return Verdict(audit, DropReason.AUTH_REQUIRED, mt, key, entry, audit)
    return Verdict(True, DropReason.NONE, mt, key, entry)


# ---------------------------------------------------------------------------------------- flows

OUTSIDE_LAB = Verdict(False, DropReason.OUTSIDE_LAB, MatchType.NONE, None, None)
NO_BACKEND = Verdict(False, DropReason.POLICY_DENIED, MatchType.NONE, None, None)  # a Service, no backends
_LB_PROTOS = {"TCP": 6, "UDP": 17}
LINK_CONTROL = Verdict(True, DropReason.NONE, MatchType.NONE, None, None)
ICMPV6 = 58
ND_TYPES = range(133, 138)  # router/neighbour solicitation and advertisement, redirect


def ipv6_link_control(dst_ip: str, proto: int, port: int) -> bool:
    """IPv6 that keeps the link working and passes without policy (``ipv6_link_control`` in
    ``bpf/parse.h``): neighbour discovery, and multicast of interface or link scope."""
    if ":" not in dst_ip:
        return False
    if proto == ICMPV6 and port in ND_TYPES:
        return True
    addr = ipaddress.IPv6Address(dst_ip)
    return addr.is_multicast and (addr.packed[1] & 0x0F) <= 2


def redirect(v: Verdict, listening: Container[int]) -> tuple[Verdict, int]:
    """What the datapath does next with one side's verdict (``bpf/proxy.h``), for IPv4 and IPv6
    alike: a packet allowed by an entry with a proxy port goes to the proxy listening on that port
    (the verdict unchanged, and the port); with nothing listening there it is dropped
    (``PROXY_LOOKUP_FAILED``), never forwarded around the proxy. Other verdicts (drops, audited
    drops: no redirect) come back as they are, with port 0."""
    if v.reason is not DropReason.NONE or v.entry is None or not v.entry.proxy_port:
        return v, 0
    port = v.entry.proxy_port
    if port in listening:
        return v, port
    return v._replace(allowed=False, reason=DropReason.PROXY_LOOKUP_FAILED), port


@dataclass
class SimEndpoint:
    """A local endpoint as the datapath sees it: its address, numeric ids and policy map."""

    endpoint_id: int
    ip: str
    identity: int
    policy: Policy = field(default_factory=dict)
    name: str = ""
    audit: bool = False


class FlowVerdict(NamedTuple):
    """Both sides of one packet in the original direction. A side is None when it is not a local
    endpoint, or (ingress) when the packet was already dropped at the source's egress."""

    src_identity: int
    dst_identity: int
    egress: Verdict | None
    ingress: Verdict | None
    translated: tuple[str, int] | None = None  # the service backend (address, port) it went to

    @property
    def allowed(self) -> bool:
        return all(v.allowed for v in (self.egress, self.ingress) if v is not None)

    @property
    def deciding(self) -> tuple[str, Verdict] | None:
        """The side that dropped the packet, else the last side that allowed it."""
        for side, v in (("egress", self.egress), ("ingress", self.ingress)):
            if v is not None and not v.allowed:
                return side, v
        for side, v in (("ingress", self.ingress), ("egress", self.egress)):
            if v is not None:
                return side, v
        return None

    @property
    def reason(self) -> DropReason:
        d = self.deciding
        return DropReason.NONE if d is None or d[1].allowed else d[1].reason


class Datapath:
    """A node: local endpoints by IP and an ipcache; :meth:`flow` decides one packet."""

    def __init__(self, ipcache: IPCache | None = None) -> None:
        self.ipcache = ipcache if ipcache is not None else IPCache()
        self.endpoints: dict[str, SimEndpoint] = {}
        # (ClusterIP, proto, port) -> backends (address, port), both families
        self.services: dict[tuple[str, int, int], tuple[tuple[str, int], ...]] = {}

    def set_services(self, table: Mapping[Any, Sequence[Any]]) -> None:
        """The service table: frontends (``ip``, ``port``, ``protocol`` TCP|UDP, as
        :class:`cilia.datapath.maps.lb.Frontend`) -> backends (``ip``, ``port``)."""
        self.services = {
            (str(ipaddress.ip_address(fe.ip)), _LB_PROTOS[fe.protocol], fe.port):
                tuple((str(ipaddress.ip_address(b.ip)), b.port) for b in backends)
            for fe, backends in table.items() if fe.protocol in _LB_PROTOS
        }

    def upsert_endpoint(self, endpoint: SimEndpoint) -> None:
        self.endpoints[endpoint.ip] = endpoint
        self.ipcache.upsert(endpoint.ip, endpoint.identity)

    def remove_endpoint(self, ip: str) -> None:
        if self.endpoints.pop(ip, None) is not None:
            self.ipcache.delete(ip)

    def set_policy(self, ip: str, policy: Policy) -> None:
        self.endpoints[ip].policy = policy

    def identity_of(self, ip: str) -> int:
        ep = self.endpoints.get(ip)
        return ep.identity if ep is not None else self.ipcache.lookup(ip)

    def flow(self, src_ip: str, dst_ip: str, proto: int, dport: int, backend: int = 0) -> FlowVerdict:
        """Source egress (if local), then destination ingress (if local and not yet dropped); a side
        drops with ``OUTSIDE_LAB`` when either address is outside the lab's ranges. A packet to a
        Service's frontend goes to its ``backend``-th backend (modulo their number)."""
        src_id, dst_id = self.identity_of(src_ip), self.identity_of(dst_ip)
        egress = ingress = None
        if ipv6_link_control(dst_ip, proto, dport):
            return FlowVerdict(src_id, dst_id, LINK_CONTROL if src_ip in self.endpoints else None,
                               LINK_CONTROL if dst_ip in self.endpoints else None)
        translated = None
        if self.services and src_ip in self.endpoints and proto in _LB_PROTOS.values() and dport:
            backends = self.services.get((str(ipaddress.ip_address(dst_ip)), proto, dport))
            if backends is not None:  # a ClusterIP: translated on the source's egress path, first
                if not backends:
                    return FlowVerdict(src_id, dst_id, NO_BACKEND, None)
                translated = dst_ip, dport = backends[backend % len(backends)]
                dst_id = self.identity_of(dst_ip)
        outside = not (in_lab(src_ip) and in_lab(dst_ip))
        src = self.endpoints.get(src_ip)
        if src is not None:
            egress = OUTSIDE_LAB if outside else policy_lookup(src.policy, dst_id, 1, proto, dport,
                                                               audit=src.audit)
        dst = self.endpoints.get(dst_ip)
        if dst is not None and (egress is None or egress.allowed):
            ingress = OUTSIDE_LAB if outside else policy_lookup(dst.policy, src_id, 0, proto, dport,
                                                                audit=dst.audit)
        return FlowVerdict(src_id, dst_id, egress, ingress, translated)
