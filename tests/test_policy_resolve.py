"""Per-identity resolution (semantics.md §4, §5): each row asserts a whole MapState and enforcement.

Cases follow the Cilium tests semantics.md names (TestDefaultAllow, TestIngressAllowAllL4Overlap,
TestDeniesIngress/Egress, Test_EnsureDeniesPrecedeAllows, TestComputePolicyDenyEnforcementAndRules,
TestL3WithLocalHostWildcard, ...), rebuilt on cilia's rule model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from cilia.datapath.sim import policy_lookup
from cilia.identity.cidr import cidr_identity_labels, cidr_selectors
from cilia.identity.labels import Label, Labels
from cilia.identity.reserved import RESERVED_LABELS
from cilia.identity.selector import Selector
from cilia.policy.resolve import (
    ALLOW_ANY,
    ALLOW_LOCALHOST_INGRESS,
    DEFAULT_ALLOW,
    EnforcementMode,
    EngineOptions,
    NamedPorts,
    resolve_policy,
)
from cilia.policy.rules import Peer, PeerKind, PeerRule, PolicyRule, PortProto
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.types import Direction, DropReason, Entry, Key, RuleRef

IN, EG = Direction.INGRESS, Direction.EGRESS
TCP, UDP, SCTP, ICMP = 6, 17, 132, 1
FOO, BAR, BAZ, INIT_ID = 1000, 1001, 1002, 5
CIDR_A, CIDR_B, CIDR_C = 0x01000001, 0x01000002, 0x01000003


def pod(name: str, ns: str = "default") -> Labels:
    return Labels([Label("k8s", "id", name), Label("k8s", "io.kubernetes.pod.namespace", ns)])


IDENTITIES: dict[int, Labels] = {int(r): lbls for r, lbls in RESERVED_LABELS.items()}
IDENTITIES.update(
    {
        FOO: pod("foo"),
        BAR: pod("bar"),
        BAZ: pod("baz", "other"),
        CIDR_A: cidr_identity_labels("10.0.0.0/8"),
        CIDR_B: cidr_identity_labels("10.1.0.0/16"),
        CIDR_C: cidr_identity_labels("192.168.0.0/24"),
    }
)


def sel(name: str) -> Selector:
    return Selector.from_match({"k8s.id": name})


def ep(name: str) -> Peer:
    return Peer(PeerKind.ENDPOINTS, sel(name))


HOST = Peer(PeerKind.ENTITIES, Selector.from_labels([Label("reserved", "host", "")]))
ALL = Peer(PeerKind.ENTITIES, Selector.wildcard())
WILD = Peer(PeerKind.WILDCARD, Selector.wildcard())


@dataclass(frozen=True)
class E:
    """A rule entry under construction (section and index are filled by :func:`rule`)."""

    direction: Direction
    peers: tuple[Peer, ...]
    ports: tuple[PortProto, ...] | None = None
    deny: bool = False
    requires: tuple[Selector, ...] = ()


def tcp(port: int, end: int = 0) -> PortProto:
    return PortProto(TCP, port, max(end, port))


def rule(
    name: str,
    subject: str,
    *entries: E,
    default_deny: dict[Direction, bool] | None = None,
    ns: str = "default",
) -> PolicyRule:
    base = RuleRef("CiliumNetworkPolicy", ns, name, "", -1)
    out, counters = [], {}
    for e in entries:
        section = e.direction.label + ("Deny" if e.deny else "")
        idx = counters.get(section, 0)
        counters[section] = idx + 1
        out.append(
            PeerRule(
                base._replace(section=section, index=idx), e.direction, e.deny, e.peers, e.ports, e.requires
            )
        )
    has = {d: any(e.direction == d for e in entries) for d in Direction}
    dd = {d: has[d] for d in Direction}
    dd.update(default_deny or {})
    subj = sel(subject).with_match("k8s.io.kubernetes.pod.namespace", ns) if ns else sel(subject)
    return PolicyRule(base, ns, subj, False, tuple(out), has, dd)


def ref(name: str, section: str, index: int = 0) -> RuleRef:
    return RuleRef("CiliumNetworkPolicy", "default", name, section, index)


def pref(name: str) -> RuleRef:
    return RuleRef("CiliumNetworkPolicy", "default", name, "", -1)


def allow(*refs: RuleRef) -> Entry:
    return Entry(False, frozenset(refs))


def deny(*refs: RuleRef) -> Entry:
    return Entry(True, frozenset(refs))


ANY_IN = Key(0, IN, 0, 0, 0)
ANY_EG = Key(0, EG, 0, 0, 0)
LOCALHOST = Key(1, IN, 0, 0, 0)
ALLOW_ANY_IN = {ANY_IN: allow(ALLOW_ANY[IN])}
ALLOW_ANY_EG = {ANY_EG: allow(ALLOW_ANY[EG])}
LOCALHOST_ALLOW = {LOCALHOST: allow(ALLOW_LOCALHOST_INGRESS)}


@dataclass(frozen=True)
class Case:
    name: str
    rules: tuple[PolicyRule, ...]
    expected: dict[Key, Entry]
    enforced: tuple[bool, bool]
    default_deny_by: tuple[tuple[RuleRef, ...], tuple[RuleRef, ...]] = ((), ())
    subject: int = FOO
    options: EngineOptions = field(default_factory=EngineOptions)
    named: NamedPorts = field(default_factory=NamedPorts)


L4_80 = (tcp(80),)
CASES = [
    Case(
        "no policy: everything allowed",
        (),
        {**ALLOW_ANY_IN, **ALLOW_ANY_EG, **LOCALHOST_ALLOW},
        (False, False),
    ),
    Case(
        "ingress: [{}] is default deny that allows nothing",
        (rule("dd", "foo", E(IN, ())),),
        {**ALLOW_ANY_EG, **LOCALHOST_ALLOW},
        (True, False),
        ((pref("dd"),), ()),
    ),
    Case(
        "TestIngressAllowAllL4Overlap: TCP/80 from bar, everything from foo",
        (rule("r", "foo", E(IN, (ep("bar"),), L4_80), E(IN, (ep("foo"),))),),
        {
            Key(BAR, IN, TCP, 80, 16): allow(ref("r", "ingress", 0)),
            Key(FOO, IN, 0, 0, 0): allow(ref("r", "ingress", 1)),
            **ALLOW_ANY_EG,
            **LOCALHOST_ALLOW,
        },
        (True, False),
        ((pref("r"),), ()),
    ),
    Case(
        "L4-only allow makes the same port's L3/L4 allow redundant",
        (rule("r", "foo", E(IN, (WILD,), L4_80), E(IN, (ep("bar"),), L4_80)),),
        {Key(0, IN, TCP, 80, 16): allow(ref("r", "ingress", 0)), **ALLOW_ANY_EG, **LOCALHOST_ALLOW},
        (True, False),
        ((pref("r"),), ()),
    ),
    Case(
        "L4-only allow keeps the same port's L3/L4 deny",
        (rule("r", "foo", E(IN, (WILD,), L4_80), E(IN, (ep("bar"),), L4_80, deny=True)),),
        {
            Key(0, IN, TCP, 80, 16): allow(ref("r", "ingress", 0)),
            Key(BAR, IN, TCP, 80, 16): deny(ref("r", "ingressDeny", 0)),
            **ALLOW_ANY_EG,
            **LOCALHOST_ALLOW,
        },
        (True, False),
        ((pref("r"),), ()),
    ),
    Case(
        "TestDeniesIngress: an L3 deny wins over an L3 allow of the same peer, other peers unaffected",
        (
            rule("allow", "foo", E(IN, (ep("bar"),)), E(IN, (ep("foo"),), L4_80)),
            rule("deny", "foo", E(IN, (ep("bar"),), deny=True)),
        ),
        {
            Key(BAR, IN, 0, 0, 0): deny(ref("deny", "ingressDeny", 0)),
            Key(FOO, IN, TCP, 80, 16): allow(ref("allow", "ingress", 1)),
            **ALLOW_ANY_EG,
            **LOCALHOST_ALLOW,
        },
        (True, False),
        ((pref("allow"), pref("deny")), ()),
    ),
    Case(
        "TestDeniesEgress: a port deny only cuts that port",
        (
            rule("allow", "foo", E(EG, (ep("bar"),))),
            rule("deny", "foo", E(EG, (ep("bar"),), L4_80, deny=True)),
        ),
        {
            Key(BAR, EG, 0, 0, 0): allow(ref("allow", "egress", 0)),
            Key(BAR, EG, TCP, 80, 16): deny(ref("deny", "egressDeny", 0)),
            **ALLOW_ANY_IN,
            **LOCALHOST_ALLOW,
        },
        (False, True),
        ((), (pref("allow"), pref("deny"))),
    ),
    Case(
        "TestDefaultAllow: a deny with enableDefaultDeny false keeps the rest allowed",
        (rule("d", "foo", E(EG, (ep("bar"),), deny=True), default_deny={EG: False}),),
        {
            Key(BAR, EG, 0, 0, 0): deny(ref("d", "egressDeny", 0)),
            ANY_EG: allow(DEFAULT_ALLOW[EG]),
            **ALLOW_ANY_IN,
            **LOCALHOST_ALLOW,
        },
        (False, True),
    ),
    Case(
        "TestDefaultAllow: another default-deny policy wins, no synthetic allow-all",
        (
            rule("d", "foo", E(EG, (ep("bar"),), deny=True), default_deny={EG: False}),
            rule("a", "foo", E(EG, (ep("foo"),))),
        ),
        {
            Key(BAR, EG, 0, 0, 0): deny(ref("d", "egressDeny", 0)),
            Key(FOO, EG, 0, 0, 0): allow(ref("a", "egress", 0)),
            **ALLOW_ANY_IN,
            **LOCALHOST_ALLOW,
        },
        (False, True),
        ((), (pref("a"),)),
    ),
    Case(
        "a deny-only policy also turns default deny on",
        (rule("d", "foo", E(IN, (ep("bar"),), deny=True)),),
        {Key(BAR, IN, 0, 0, 0): deny(ref("d", "ingressDeny", 0)), **ALLOW_ANY_EG, **LOCALHOST_ALLOW},
        (True, False),
        ((pref("d"),), ()),
    ),
    Case(
        "TestComputePolicyDenyEnforcementAndRules: egress-only rules leave ingress alone",
        (rule("e", "foo", E(EG, (ep("bar"),), L4_80)),),
        {Key(BAR, EG, TCP, 80, 16): allow(ref("e", "egress", 0)), **ALLOW_ANY_IN, **LOCALHOST_ALLOW},
        (False, True),
        ((), (pref("e"),)),
    ),
    Case(
        "TestL3WithLocalHostWildcard: a deny covering the host wins over allow-localhost",
        (rule("d", "foo", E(IN, (HOST,), deny=True), E(IN, (ALL,))),),
        {LOCALHOST: deny(ref("d", "ingressDeny", 0)), ANY_IN: allow(ref("d", "ingress", 0)), **ALLOW_ANY_EG},
        (True, False),
        ((pref("d"),), ()),
    ),
    Case(
        "a narrower host deny is kept beside allow-localhost (the datapath's L3 LPM finds the deny)",
        (rule("d", "foo", E(IN, (HOST,), L4_80, deny=True)),),
        {Key(1, IN, TCP, 80, 16): deny(ref("d", "ingressDeny", 0)), **ALLOW_ANY_EG, **LOCALHOST_ALLOW},
        (True, False),
        ((pref("d"),), ()),
    ),
    Case(
        "allow-localhost off (--allow-localhost=policy)",
        (),
        {**ALLOW_ANY_IN, **ALLOW_ANY_EG},
        (False, False),
        options=EngineOptions(allow_localhost=False),
    ),
    Case(
        "enforcement always: default deny with no rules",
        (),
        {**LOCALHOST_ALLOW},
        (True, True),
        options=EngineOptions(enforcement=EnforcementMode.ALWAYS),
    ),
    Case(
        "enforcement always ignores enableDefaultDeny false",
        (rule("d", "foo", E(EG, (ep("bar"),), deny=True), default_deny={EG: False}),),
        {Key(BAR, EG, 0, 0, 0): deny(ref("d", "egressDeny", 0)), **LOCALHOST_ALLOW},
        (True, True),
        options=EngineOptions(enforcement=EnforcementMode.ALWAYS),
    ),
    Case(
        "enforcement never: rules are ignored",
        (rule("dd", "foo", E(IN, ())),),
        {**ALLOW_ANY_IN, **ALLOW_ANY_EG, **LOCALHOST_ALLOW},
        (False, False),
        options=EngineOptions(enforcement=EnforcementMode.NEVER),
    ),
    Case(
        "reserved:init is enforced in both directions",
        (),
        {**LOCALHOST_ALLOW},
        (True, True),
        subject=INIT_ID,
    ),
    Case(
        "the host is not enforced without the host firewall, and gets no localhost key",
        (rule("dd", "foo", E(IN, ())),),
        {**ALLOW_ANY_IN, **ALLOW_ANY_EG},
        (False, False),
        subject=1,
    ),
    Case(
        "a namespaced rule does not select identities of another namespace",
        (rule("dd", "baz", E(IN, ())),),
        {**ALLOW_ANY_IN, **ALLOW_ANY_EG, **LOCALHOST_ALLOW},
        (False, False),
        subject=BAZ,
    ),
    Case(
        "port range 5-10 and ICMP type 8",
        (
            rule(
                "r", "foo", E(EG, (ep("bar"),), (tcp(5, 10),)), E(EG, (ep("bar"),), (PortProto(ICMP, 8, 8),))
            ),
        ),
        {
            Key(BAR, EG, TCP, 5, 16): allow(ref("r", "egress", 0)),
            Key(BAR, EG, TCP, 6, 15): allow(ref("r", "egress", 0)),
            Key(BAR, EG, TCP, 8, 15): allow(ref("r", "egress", 0)),
            Key(BAR, EG, TCP, 10, 16): allow(ref("r", "egress", 0)),
            Key(BAR, EG, ICMP, 8, 16): allow(ref("r", "egress", 1)),
            **ALLOW_ANY_IN,
            **LOCALHOST_ALLOW,
        },
        (False, True),
        ((), (pref("r"),)),
    ),
    Case(
        "ICMP type 0 (EchoReply) is port 0: every ICMP type, as Cilium's ICMPField.PortProtocol gives",
        (rule("r", "foo", E(EG, (ep("bar"),), (PortProto(ICMP, 0, 0),))),),
        {Key(BAR, EG, ICMP, 0, 0): allow(ref("r", "egress", 0)), **ALLOW_ANY_IN, **LOCALHOST_ALLOW},
        (False, True),
        ((), (pref("r"),)),
    ),
    Case(
        "Test_EnsureDeniesPrecedeAllows: a CIDR deny removes the allows of the identities it covers",
        (
            rule("a", "foo", E(EG, (Peer(PeerKind.CIDR, cidr_selectors(["10.0.0.0/8"])[0]),), (tcp(80),))),
            rule(
                "d",
                "foo",
                E(
                    EG,
                    (Peer(PeerKind.CIDR, cidr_selectors(["10.1.0.0/16"])[0]),),
                    (tcp(0, 65535),),
                    deny=True,
                ),
            ),
        ),
        {
            Key(CIDR_A, EG, TCP, 80, 16): allow(ref("a", "egress", 0)),
            Key(CIDR_B, EG, TCP, 0, 0): deny(ref("d", "egressDeny", 0)),
            **ALLOW_ANY_IN,
            **LOCALHOST_ALLOW,
        },
        (False, True),
        ((), (pref("a"), pref("d"))),
    ),
    Case(
        "fromRequires is AND-ed into endpoint peers but not into entities",
        (
            rule("r", "foo", E(IN, (ep("bar"), ALL), L4_80)),
            rule("req", "foo", E(IN, (), requires=(Selector.from_match({"k8s.id": "nobody"}),))),
        ),
        {Key(0, IN, TCP, 80, 16): allow(ref("r", "ingress", 0)), **ALLOW_ANY_EG, **LOCALHOST_ALLOW},
        (True, False),
        ((pref("r"), pref("req")), ()),
    ),
    Case(
        "fromRequires removes peers that do not meet it",
        (
            rule("r", "foo", E(IN, (ep("bar"), ep("foo")))),
            rule("req", "foo", E(IN, (), requires=(Selector.from_match({"k8s.id": "bar"}),))),
        ),
        {Key(BAR, IN, 0, 0, 0): allow(ref("r", "ingress", 0)), **ALLOW_ANY_EG, **LOCALHOST_ALLOW},
        (True, False),
        ((pref("r"), pref("req")), ()),
    ),
    Case(
        "named ports: ingress resolves against the subject's own ports",
        (rule("r", "foo", E(IN, (ep("bar"),), (PortProto(TCP, 0, 0, "http"),))),),
        {Key(BAR, IN, TCP, 8080, 16): allow(ref("r", "ingress", 0)), **ALLOW_ANY_EG, **LOCALHOST_ALLOW},
        (True, False),
        ((pref("r"),), ()),
        named=NamedPorts({("http", TCP): 8080}, {("http", TCP): frozenset({80})}),
    ),
    Case(
        "named ports: egress resolves against the cluster's ports when they agree",
        (rule("r", "foo", E(EG, (ep("bar"),), (PortProto(TCP, 0, 0, "http"),))),),
        {Key(BAR, EG, TCP, 80, 16): allow(ref("r", "egress", 0)), **ALLOW_ANY_IN, **LOCALHOST_ALLOW},
        (False, True),
        ((), (pref("r"),)),
        named=NamedPorts({("http", TCP): 8080}, {("http", TCP): frozenset({80})}),
    ),
    Case(
        "named ports: an ambiguous or unknown name matches nothing",
        (rule("r", "foo", E(EG, (ep("bar"),), (PortProto(TCP, 0, 0, "http"), PortProto(UDP, 0, 0, "dns")))),),
        {**ALLOW_ANY_IN, **LOCALHOST_ALLOW},
        (False, True),
        ((), (pref("r"),)),
        named=NamedPorts({}, {("http", TCP): frozenset({80, 8080})}),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_resolve(case: Case) -> None:
    cache = SelectorCache(IDENTITIES)
    pol = resolve_policy(
        case.subject,
        IDENTITIES[case.subject],
        case.rules,
        cache,
        named_ports=case.named,
        options=case.options,
    )
    assert pol.map_state.entries == case.expected
    assert pol.enforced == case.enforced
    assert pol.default_deny_by == case.default_deny_by


def test_audit_follows_the_selected_policies() -> None:
    cache = SelectorCache(IDENTITIES)
    plain = rule("r", "foo", E(IN, ()))
    audited = PolicyRule(plain.ref._replace(name="a"), "default", plain.subject, False, (), audit=True)
    assert not resolve_policy(FOO, IDENTITIES[FOO], [plain], cache).audit
    assert resolve_policy(FOO, IDENTITIES[FOO], [plain, audited], cache).audit
    assert not resolve_policy(BAR, IDENTITIES[BAR], [plain, audited], cache).audit


def test_authentication_required_marks_entries_and_keeps_l3l4_keys_under_an_l4_wildcard() -> None:
    base = rule("r", "foo", E(IN, (WILD,), L4_80), E(IN, (ep("bar"),), L4_80), E(IN, (ep("foo"),)))
    entries = (base.entries[0], replace(base.entries[1], auth_mode="required"), base.entries[2])
    authed = replace(base, entries=entries)
    pol = resolve_policy(FOO, IDENTITIES[FOO], [authed], SelectorCache(IDENTITIES))
    assert pol.map_state.entries == {
        Key(0, IN, TCP, 80, 16): allow(ref("r", "ingress", 0)),
        Key(BAR, IN, TCP, 80, 16): Entry(False, frozenset({ref("r", "ingress", 1)}), auth_type=1),
        Key(FOO, IN, 0, 0, 0): allow(ref("r", "ingress", 2)),
        **ALLOW_ANY_EG,
        **LOCALHOST_ALLOW,
    }
    # cilia has no mutual-auth handshake: the datapath drops with "Authentication required".
    assert policy_lookup(pol.map_state, BAR, IN, TCP, 80).reason is DropReason.AUTH_REQUIRED
    assert policy_lookup(pol.map_state, BAZ, IN, TCP, 80).allowed
