"""The vocabulary shared by the policy engine and both datapaths.

MapState is what :mod:`cilia.policy` produces for one endpoint and what the kernel datapath
(:mod:`cilia.datapath.bpf`) and its pure-Python mirror (:mod:`cilia.datapath.sim`) consume.
Its key and entry mirror Cilium's policy map (semantics.md §5.2):

* ``Key(identity, direction, proto, port, prefix_len)``: ``identity`` 0 is the wildcard peer;
  ``proto`` 0 means any protocol and then ``port`` and ``prefix_len`` are 0; ``prefix_len`` is the
  port prefix (0..16): the key covers ``port .. port + (0xffff >> prefix_len)``. For ICMP/ICMPv6 the
  ICMP type takes the place of the port (prefix 16).
* The LPM prefix length in the kernel key, after identity and direction, is
  ``0`` for proto 0, else ``8 + prefix_len`` (:func:`lpm_prefix`).

Keys are plain ``NamedTuple``s so that hot loops can build them as tuples cheaply.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple


class Direction(IntEnum):
    """Traffic direction relative to the endpoint that owns the policy (Cilium's encoding)."""

    INGRESS = 0
    EGRESS = 1

    @property
    def label(self) -> str:
        return self.name.lower()


class Proto(IntEnum):
    """IP protocol numbers used in policy keys. ANY (0) is only valid with the wildcard port."""

    ANY = 0
    ICMP = 1
    TCP = 6
    UDP = 17
    ICMPV6 = 58
    SCTP = 132


# Protocol ANY in toPorts expands to exactly these (semantics.md §4.5).
ANY_L4_PROTOS: tuple[Proto, ...] = (Proto.TCP, Proto.UDP, Proto.SCTP)


class DropReason(IntEnum):
    """Drop reasons as Hubble reports them (semantics.md §8)."""

    NONE = 0
    POLICY_DENIED = 133  # no allow matched: default deny
    POLICY_DENY = 181  # an explicit deny entry matched
    AUTH_REQUIRED = 189
    PROXY_LOOKUP_FAILED = 178  # the entry's proxy port has no listener: fail closed
    OUTSIDE_LAB = 250  # cilia's own (outside Cilium's numbers): an address outside the lab's ranges

    @property
    def description(self) -> str:
        return {
            0: "",
            133: "Policy denied",
            178: "Proxy lookup failed",
            181: "Policy denied by denylist",
            189: "Authentication required",
            250: "Destination outside the lab",
        }[int(self)]


class MatchType(IntEnum):
    """``policy_match_type`` values (bpf/lib/common.h), names as in pkg/monitor/api/types.go."""

    NONE = 0
    L3_ONLY = 1
    L3_L4 = 2
    L4_ONLY = 3
    ALL = 4
    L3_PROTO = 5
    PROTO_ONLY = 6

    @property
    def hubble_name(self) -> str:
        return {
            0: "none",
            1: "L3-Only",
            2: "L3-L4",
            3: "L4-Only",
            4: "all",
            5: "L3-Proto",
            6: "Proto-Only",
        }[int(self)]


class Key(NamedTuple):
    """One policy-map key (see module docstring)."""

    identity: int
    direction: int  # Direction value
    proto: int  # Proto value, 0 = any
    port: int  # destination port (or ICMP type); 0 when proto is 0
    prefix_len: int  # port prefix length 0..16; 0 when proto is 0

    @property
    def lpm_prefix(self) -> int:
        return lpm_prefix(self.proto, self.prefix_len)

    @property
    def port_range(self) -> tuple[int, int]:
        """Inclusive port range the key covers."""
        if self.proto == 0:
            return (0, 0xFFFF)
        return (self.port, self.port + (0xFFFF >> self.prefix_len))


def lpm_prefix(proto: int, prefix_len: int) -> int:
    """LPM match length after identity+direction: 0 (any proto), else 8 + port prefix."""
    return 0 if proto == 0 else 8 + prefix_len


class RuleRef(NamedTuple):
    """Where a rule came from, as Hubble names it (``Policy {kind, namespace, name}``), plus
    the section (``ingress``, ``egressDeny``, …) and the index of the rule entry in it."""

    kind: str  # CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy | NetworkPolicy | reserved
    namespace: str  # "" for cluster-wide and synthetic entries
    name: str
    section: str  # ingress | ingressDeny | egress | egressDeny | "" for synthetic entries
    index: int  # index of the rule entry in its section (-1 for synthetic entries)
    spec_index: int = 0  # index in ``specs`` (0 for ``spec``)
    log: str = ""  # the rule's ``spec.log`` value, shown as Hubble's ``policy_log``

    def describe(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        if self.index < 0:
            return f"{self.kind} {where}"
        return f"{self.kind} {where} {self.section}[{self.index}]"

    def to_dict(self) -> dict[str, Any]:
        """The reference as the JSON outputs give it (``log`` only when the rule has one)."""
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "section": self.section,
            "index": self.index,
            "spec_index": self.spec_index,
            **({"log": self.log} if self.log else {}),
        }


class Entry(NamedTuple):
    """One policy-map entry: allow or deny, and the rules that produced it (for attribution)."""

    deny: bool
    rules: frozenset[RuleRef] = frozenset()
    proxy_port: int = 0
    proxy_priority: int = 0
    auth_type: int = 0


class Verdict(NamedTuple):
    """The datapath's decision for one side of a flow (the same shape from sim and from bpf)."""

    allowed: bool
    reason: DropReason
    match_type: MatchType
    key: Key | None  # the entry that decided, None for default deny
    entry: Entry | None
    audited: bool = False
