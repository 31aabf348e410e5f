"""Value types of offline flow analysis: the two ends of a flow and the verdict of each side."""

from __future__ import annotations

from dataclasses import field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from cilia.analyze.learned import LearnedAddress
from cilia.identity.labels import Labels
from cilia.k8s.frozen import frozen
from cilia.policy.types import Direction, DropReason, Key, MatchType, RuleRef

if TYPE_CHECKING:  # a side's L7 verdict exists only when its entry redirects to a proxy
    from cilia.analyze.l7verdict import L7Verdict


class EndKind(StrEnum):
    POD = "pod"
    ENTITY = "entity"  # host, world, remote-node, … (reserved identities)
    EXTERNAL = "external"  # an address outside the cluster: world or a CIDR identity
    NODE = "node"  # a node's host endpoint (and its hostNetwork pods): host policies decide for it


@frozen
class FlowEnd:
    """One end of a flow resolved against the cluster: who it is and which identity it has.

    ``local`` is True for pods: they are endpoints with a policy of their own. The host is not
    (no host firewall), nor is anything outside the cluster (§4.3: "external peers have no policy").
    """

    name: str  # "default/app-a-…", "world", "198.19.0.7"
    kind: EndKind
    identity: int
    labels: Labels = field(compare=False)
    ip: str = ""
    namespace: str = ""
    pod: str = ""
    learned: LearnedAddress | None = None  # an outside address a node learned from DNS answers
    node: str = ""  # the node a pod runs on, or the node a NODE end is (identities depend on it)

    @property
    def local(self) -> bool:
        return self.kind is EndKind.POD

    @property
    def has_policy(self) -> bool:
        """Pods have endpoint policies; a node has its host policies (host firewall)."""
        return self.kind in (EndKind.POD, EndKind.NODE)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": str(self.kind), "identity": self.identity}
        if self.ip:
            out["ip"] = self.ip
        if self.kind is EndKind.NODE:
            out["node"] = self.node
        out["labels"] = self.labels.strings()
        if self.learned is not None:
            # which names (of the node's DNS cache) and toFQDNs selectors gave the identity
            out["fqdn"] = {"names": list(self.learned.names), "selectors": list(self.learned.selectors)}
        return out


class SideState(StrEnum):
    NO_POLICY = "no-policy"  # not a local endpoint: this side never drops
    UNENFORCED = "unenforced"  # a local endpoint whose direction no policy enforces
    ENFORCED = "enforced"


@frozen
class SideVerdict:
    """The verdict of one side: the source's egress or the destination's ingress."""

    direction: Direction
    owner: str  # name of the end whose policy decides this side
    state: SideState
    allowed: bool
    reason: DropReason = DropReason.NONE
    match_type: MatchType = MatchType.NONE
    key: Key | None = None
    rules: tuple[RuleRef, ...] = ()  # rules of the deciding entry (allow or deny)
    default_deny_by: tuple[RuleRef, ...] = ()  # policies that enforce default deny on this side
    note: str = ""  # a sentence on why, for people
    l7: L7Verdict | None = None  # the entry redirects to an L7 proxy

    @property
    def refused_at_l7(self) -> bool:
        """Allowed at L4, refused by the proxy (HTTP 403 / TLS connection closed)."""
        return self.l7 is not None and self.l7.decided and not self.l7.allowed

    def to_dict(self) -> dict[str, Any]:
        dropped = not self.allowed and not self.refused_at_l7
        out = {
            "direction": self.direction.label,
            "endpoint": self.owner,
            "state": str(self.state),
            "allowed": self.allowed,
            "drop_reason": int(self.reason) if dropped else None,
            "drop_reason_desc": self.reason.description if dropped else None,
            "match_type": self.match_type.hubble_name,
            "key": _key_dict(self.key),
            "rules": [r.to_dict() for r in self.rules],
            "default_deny_by": [r.to_dict() for r in self.default_deny_by],
            "note": self.note,
        }
        if self.l7 is not None:
            out["l7"] = self.l7.to_dict()
        return out


def _key_dict(key: Key | None) -> dict[str, Any] | None:
    if key is None:
        return None
    return {
        "identity": key.identity,
        "direction": Direction(key.direction).label,
        "proto": key.proto,
        "port": key.port,
        "prefix_len": key.prefix_len,
    }


@frozen
class FlowTrace:
    """A flow ``src → dst`` on one port and the verdict of each side; allowed iff both allow."""

    src: FlowEnd
    dst: FlowEnd
    proto: int
    port: int
    egress: SideVerdict
    ingress: SideVerdict
    notes: tuple[str, ...] = ()  # what the verdict depends on beyond the two sides (toFQDNs not applied)

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    @property
    def decided_by(self) -> SideVerdict | None:
        """The side that dropped the flow (the source's egress first, as packets meet it)."""
        if not self.egress.allowed:
            return self.egress
        if not self.ingress.allowed:
            return self.ingress
        return None

    @property
    def policy_log(self) -> tuple[str, ...]:
        """Hubble's ``policy_log``: the ``spec.log`` values of the rules that decided the sides the
        packet met (the ingress side only if the egress side let it through)."""
        sides = (self.egress, self.ingress) if self.egress.allowed else (self.egress,)
        return tuple(sorted({r.log for s in sides for r in s.rules if r.log}))

    def to_dict(self) -> dict[str, Any]:
        from cilia.analyze.peers import proto_name

        out = {
            "from": self.src.to_dict(),
            "to": self.dst.to_dict(),
            "port": self.port,
            "protocol": proto_name(self.proto),
            "allowed": self.allowed,
            "egress": self.egress.to_dict(),
            "ingress": self.ingress.to_dict(),
        }
        if self.policy_log:
            out["policy_log"] = list(self.policy_log)
        if self.notes:
            out["notes"] = list(self.notes)
        return out
