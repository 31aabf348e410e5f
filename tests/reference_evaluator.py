"""A plain reference evaluator of policy, written from the semantics.md §9 checklist only.

It works directly on PolicyRules and label sets — no selector cache, no filters, no MapState, no
LPM — so that the engine + datapath sim can be checked against it:

    allowed iff the direction is unenforced, or (some allow covers the flow and no deny covers it);
    a direction enforced only by policies without default deny allows what no deny covers;
    the local host may reach every endpoint unless a deny covers it (allow-localhost).

It lives with the tests on purpose: cilia decides in exactly one place (cilia.policy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cilia.identity.labels import Label, Labels
from cilia.identity.selector import Selector
from cilia.policy.rules import PeerKind, PeerRule, PolicyRule, PortProto

HOST = Label("reserved", "host", "")
INIT = Label("reserved", "init", "")


def _namespace(labels: Labels) -> str:
    return labels.sources_of("io.kubernetes.pod.namespace").get("k8s", "")


def _selects_subject(rule: PolicyRule, labels: Labels) -> bool:
    if rule.namespace and rule.namespace != _namespace(labels):
        return False
    if rule.node_selector != (HOST in labels):
        return False
    return rule.subject.matches(labels)


def _port_covers(
    pp: PortProto,
    proto: int,
    port: int,
    direction: int,
    own_ports: Mapping[tuple[str, int], int],
    cluster_ports: Mapping[tuple[str, int], frozenset[int]],
) -> bool:
    if pp.proto != proto:
        return False
    if pp.name:
        if direction == 0:
            number = own_ports.get((pp.name, proto), 0)
        else:
            numbers = cluster_ports.get((pp.name, proto), frozenset())
            number = next(iter(numbers)) if len(numbers) == 1 else 0
        return number != 0 and number == port
    if pp.port == 0:
        return True
    end = pp.end_port if pp.end_port > pp.port else pp.port
    return pp.port <= port <= end


def _peer_covers(entry: PeerRule, peer: Labels, requires: Sequence[Selector]) -> bool:
    for p in entry.peers:
        if not p.selector.matches(peer):
            continue
        if p.kind is PeerKind.ENDPOINTS and not all(r.matches(peer) for r in requires):
            continue
        return True
    return False


def reference_allowed(
    rules: Sequence[PolicyRule],
    subject: Labels,
    peer: Labels,
    peer_id: int,
    direction: int,
    proto: int,
    port: int,
    *,
    mode: str = "default",
    allow_localhost: bool = True,
    own_ports: Mapping[tuple[str, int], int] | None = None,
    cluster_ports: Mapping[tuple[str, int], frozenset[int]] | None = None,
) -> bool:
    """The verdict for one side of a flow: ``subject`` owns the policy, ``peer`` is the other end."""
    own_ports = own_ports or {}
    cluster_ports = cluster_ports or {}
    if mode == "never" or (HOST in subject):
        return True
    selected = [r for r in rules if _selects_subject(r, subject)]
    enforced = any(r.has_section.get(direction, False) for r in selected)
    default_deny = any(
        r.has_section.get(direction, False) and r.default_deny.get(direction, True) for r in selected
    )
    if mode == "always" or INIT in subject:
        enforced = default_deny = True
    if not enforced:
        return True
    entries = [e for r in selected for e in r.entries if e.direction == direction]

    def covers(e: PeerRule) -> bool:
        reqs = [s for x in entries if x.deny == e.deny for s in x.requires]
        if not _peer_covers(e, peer, reqs):
            return False
        if e.ports is None:
            return True
        return any(_port_covers(pp, proto, port, direction, own_ports, cluster_ports) for pp in e.ports)

    if any(covers(e) for e in entries if e.deny):
        return False
    if not default_deny:
        return True
    if allow_localhost and direction == 0 and peer_id == 1:
        return True
    return any(covers(e) for e in entries if not e.deny)
