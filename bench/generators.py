"""Workload generators shared by the policy tests and benchmarks.

The CIDR and L3 workloads mirror Cilium's ``pkg/policy`` benchmarks as described in
/work/shared/docs/benchmark-anchors.md (RegenerateCIDRPolicyRules, RegenerateCIDRDenyPolicyRules,
RegenerateL3Ingress/EgressPolicyRules). Rules are built directly as engine rules, like Cilium's
benchmarks add raw ``api.Rule`` values (no CNP namespace scoping). :func:`random_world` makes
random small policies, identities and flows for the differential property tests.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from cilia.identity.cidr import cidr_identity_labels, cidr_selectors
from cilia.identity.labels import Label, Labels
from cilia.identity.reserved import RESERVED_LABELS
from cilia.identity.selector import Selector
from cilia.policy.rules import Peer, PeerKind, PeerRule, PolicyRule, PortProto
from cilia.policy.types import Direction, Proto, RuleRef

LOCAL_SCOPE_FIRST = 0x01000001
SUBJECT_IDENTITY = 1000  # the subject ("k8s:foo") of the CIDR workloads
KIND_CNP = "CiliumNetworkPolicy"


@dataclass(frozen=True)
class Workload:
    """Rules, every identity they are resolved against, and the subject identity."""

    rules: tuple[PolicyRule, ...]
    identities: dict[int, Labels]
    subject: int


def _octets(prefix_len: int, first: int, second: int, third: int, fourth28: int, fourth32: int) -> str:
    parts = {
        8: (first, 0, 0, 0),
        16: (first, second, 0, 0),
        24: (first, second, third, 0),
        28: (first, second, third, fourth28),
        32: (first, second, third, fourth32),
    }[prefix_len]
    return ".".join(str(p) for p in parts) + f"/{prefix_len}"


def cidr_allow_prefix(i: int) -> tuple[str, int]:
    """Prefix and TCP port of the i-th CIDR egress allow rule (Cilium ``generateCIDREgressRule``)."""
    plen = (8, 16, 24, 28, 32)[i % 5]
    return _octets(plen, (10, 192, 244)[i % 3], i % 17, i % 121, (i % 16) << 4, i % 255), 80 + i % 97


def cidr_deny_prefix(i: int) -> tuple[str, int]:
    """Prefix and TCP port of Cilium's ``generateCIDREgressDenyRule(i)`` (called with i + 773)."""
    plen = (8, 16, 24, 28, 32)[(i + 21) % 5]
    return _octets(plen, (10, 192, 244)[i % 3], i % 23, i % 119, (i % 15) << 4, i % 253), 80 + i % 131


def subject_labels() -> Labels:
    return Labels([Label("k8s", "foo", "")])


def _egress_entry(ref: RuleRef, prefix: str, port: int, deny: bool) -> PeerRule:
    return PeerRule(
        ref=ref,
        direction=Direction.EGRESS,
        deny=deny,
        peers=tuple(Peer(PeerKind.CIDR, s) for s in cidr_selectors([prefix])),
        ports=(PortProto(Proto.TCP, port, port),),
    )


def cidr_workload(n: int = 1000, deny: bool = False) -> Workload:
    """n rules selecting ``k8s:foo``, each with one egress toCIDR + TCP port allow (and, with
    ``deny``, one egressDeny of the same shape); one CIDR identity per distinct prefix."""
    subject = Selector.from_labels([Label("k8s", "foo", "")])
    rules: list[PolicyRule] = []
    prefixes: dict[str, int] = {}
    for i in range(1, n + 1):
        name = f"cidr-{i}"
        base = RuleRef(KIND_CNP, "default", name, "", -1)
        allow_prefix, allow_port = cidr_allow_prefix(i)
        entries = [_egress_entry(base._replace(section="egress", index=0), allow_prefix, allow_port, False)]
        prefixes.setdefault(allow_prefix, LOCAL_SCOPE_FIRST + len(prefixes))
        if deny:
            deny_prefix, deny_port = cidr_deny_prefix(i + 773)
            entries.append(
                _egress_entry(base._replace(section="egressDeny", index=0), deny_prefix, deny_port, True)
            )
            prefixes.setdefault(deny_prefix, LOCAL_SCOPE_FIRST + len(prefixes))
        rules.append(
            PolicyRule(
                ref=base,
                namespace="",
                subject=subject,
                node_selector=False,
                entries=tuple(entries),
                has_section={Direction.INGRESS: False, Direction.EGRESS: True},
                default_deny={Direction.INGRESS: False, Direction.EGRESS: True},
            )
        )
    identities: dict[int, Labels] = {int(r): lbls for r, lbls in RESERVED_LABELS.items()}
    identities.update({ident: cidr_identity_labels(p) for p, ident in prefixes.items()})
    identities[SUBJECT_IDENTITY] = subject_labels()
    return Workload(tuple(rules), identities, SUBJECT_IDENTITY)


def l3_workload(direction: Direction, n_rules: int = 1000, n_identities: int = 3000) -> Workload:
    """n identical rules selecting ``k8s:foo`` with an L3 allow from/to ``bar``; 3,000 pod identities."""
    subject = Selector.from_labels([Label("k8s", "foo", "")])
    bar = Selector.from_match({"any.bar": ""})
    rules = []
    for i in range(1, n_rules + 1):
        base = RuleRef(KIND_CNP, "", f"l3-{i}", "", -1)
        entry = PeerRule(
            ref=base._replace(section=direction.label, index=0),
            direction=direction,
            deny=False,
            peers=(Peer(PeerKind.ENDPOINTS, bar),),
            ports=None,
        )
        rules.append(
            PolicyRule(
                ref=base,
                namespace="",
                subject=subject,
                node_selector=False,
                entries=(entry,),
                has_section={direction: True, Direction(1 - direction): False},
                default_deny={direction: True, Direction(1 - direction): False},
            )
        )
    identities: dict[int, Labels] = {int(r): lbls for r, lbls in RESERVED_LABELS.items()}
    for i in range(n_identities):
        identities[1000 + i] = Labels.parse(
            [
                f"k8s:foo{i}",
                "k8s:io.cilium.k8s.policy.cluster=default",
                "k8s:io.cilium.k8s.policy.serviceaccount=default",
                "k8s:io.kubernetes.pod.namespace=monitoring",
                "k8s:app=analytics-erneh",
            ]
        )
    subject_id = 1000 + n_identities
    identities[subject_id] = subject_labels()
    return Workload(tuple(rules), identities, subject_id)


# ------------------------------------------------------------------------------ random worlds

APPS = ("a", "b", "c")
ENVS = ("prod", "dev")
NAMESPACES = ("ns1", "ns2")
PORTS = (53, 80, 443, 8080)


@dataclass(frozen=True)
class RandomWorld:
    """Random rules over a small label universe, the identities, and flows to check."""

    rules: tuple[PolicyRule, ...]
    identities: dict[int, Labels]
    flows: tuple[tuple[int, int, int, int, int], ...]  # (subject, peer, direction, proto, port)


def pod_labels(app: str, env: str, ns: str) -> Labels:
    return Labels.parse([f"k8s:app={app}", f"k8s:env={env}", f"k8s:io.kubernetes.pod.namespace={ns}"])


def random_identities(rng: random.Random) -> dict[int, Labels]:
    ids: dict[int, Labels] = {1: RESERVED_LABELS[1], 2: RESERVED_LABELS[2]}
    nxt = 256
    for app in APPS:
        for env in ENVS:
            for ns in NAMESPACES:
                if rng.random() < 0.6:
                    ids[nxt] = pod_labels(app, env, ns)
                    nxt += 1
    ids[LOCAL_SCOPE_FIRST] = cidr_identity_labels("203.0.113.0/24")
    ids[LOCAL_SCOPE_FIRST + 1] = cidr_identity_labels("203.0.113.7/32")
    return ids


def _random_selector(rng: random.Random) -> Selector:
    choice = rng.random()
    if choice < 0.15:
        return Selector.wildcard()
    reqs: dict[str, str] = {}
    if rng.random() < 0.7:
        reqs["k8s.app"] = rng.choice(APPS)
    if rng.random() < 0.4:
        reqs["any.env"] = rng.choice(ENVS)
    if rng.random() < 0.3:
        reqs["k8s.io.kubernetes.pod.namespace"] = rng.choice(NAMESPACES)
    return Selector.from_match(reqs)


def _random_peer(rng: random.Random) -> Peer:
    r = rng.random()
    if r < 0.6:
        return Peer(PeerKind.ENDPOINTS, _random_selector(rng))
    if r < 0.75:
        return Peer(PeerKind.CIDR, cidr_selectors([rng.choice(("203.0.113.0/24", "203.0.113.7/32"))])[0])
    if r < 0.85:
        return Peer(PeerKind.ENTITIES, Selector.from_labels([Label("reserved", "host", "")]))
    return Peer(PeerKind.ENTITIES, Selector.wildcard())


def _random_ports(rng: random.Random) -> tuple[PortProto, ...] | None:
    r = rng.random()
    if r < 0.3:
        return None
    out = []
    for _ in range(rng.randint(1, 2)):
        kind = rng.random()
        proto = rng.choice((Proto.TCP, Proto.UDP))
        if kind < 0.5:
            p = rng.choice(PORTS)
            out.append(PortProto(proto, p, p))
        elif kind < 0.7:
            lo = rng.choice(PORTS)
            out.append(PortProto(proto, lo, lo + rng.choice((0, 3, 100, 1000))))
        elif kind < 0.8:
            out.append(PortProto(proto, 0, 0))
        elif kind < 0.9:
            out.append(PortProto(Proto.ICMP, 8, 8))
        else:
            out.append(PortProto(proto, 0, 0, rng.choice(("http", "dns"))))
    return tuple(out)


def random_rules(rng: random.Random, n: int, name_prefix: str = "p") -> tuple[PolicyRule, ...]:
    rules = []
    for i in range(n):
        ns = rng.choice(("", *NAMESPACES))
        kind = KIND_CNP if ns else "CiliumClusterwideNetworkPolicy"
        base = RuleRef(kind, ns, f"{name_prefix}{i}", "", -1)
        entries = []
        counters: dict[str, int] = {}
        for _ in range(rng.randint(1, 3)):
            direction = rng.choice((Direction.INGRESS, Direction.EGRESS))
            deny = rng.random() < 0.3
            section = direction.label + ("Deny" if deny else "")
            idx = counters.get(section, 0)
            counters[section] = idx + 1
            ports = _random_ports(rng)
            if ports is not None and rng.random() < 0.3:
                peers: tuple[Peer, ...] = (Peer(PeerKind.WILDCARD, Selector.wildcard()),)
            else:
                peers = tuple(_random_peer(rng) for _ in range(rng.randint(0, 2)))
            requires = (_random_selector(rng),) if rng.random() < 0.1 else ()
            entries.append(
                PeerRule(base._replace(section=section, index=idx), direction, deny, peers, ports, requires)
            )
        has = {d: any(e.direction == d for e in entries) for d in Direction}
        dd = {d: has[d] and rng.random() < 0.8 for d in Direction}
        subject = _random_selector(rng)
        if ns:
            subject = subject.with_match("k8s.io.kubernetes.pod.namespace", ns)
        rules.append(PolicyRule(base, ns, subject, False, tuple(entries), has, dd))
    return tuple(rules)


def random_flows(
    rng: random.Random, identities: dict[int, Labels], n: int
) -> tuple[tuple[int, int, int, int, int], ...]:
    subjects = [i for i, lbls in identities.items() if 256 <= i < LOCAL_SCOPE_FIRST]
    flows = []
    for _ in range(n):
        if not subjects:
            break
        proto = rng.choice((Proto.TCP, Proto.UDP, Proto.ICMP, Proto.SCTP))
        port = 8 if proto == Proto.ICMP else rng.choice((*PORTS, 81, 1080, 9000))
        flows.append(
            (rng.choice(subjects), rng.choice(list(identities)), rng.choice((0, 1)), int(proto), port)
        )
    return tuple(flows)


def random_world(seed: int, n_rules: int = 4, n_flows: int = 40) -> RandomWorld:
    rng = random.Random(seed)
    ids = random_identities(rng)
    return RandomWorld(random_rules(rng, n_rules), ids, random_flows(rng, ids, n_flows))


def named_ports_for(identities: Sequence[int]) -> dict[int, dict[tuple[str, int], int]]:
    """Container named ports of the random pods: ``http`` is 80/TCP for all, ``dns`` 53/UDP."""
    return {i: {("http", int(Proto.TCP)): 80, ("dns", int(Proto.UDP)): 53} for i in identities}
