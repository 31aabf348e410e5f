"""The reference datapath: policy lookup (semantics.md §5.5), flows over endpoints + ipcache."""

from __future__ import annotations

import pytest

from cilia.datapath.ipcache import IPCache
from cilia.datapath.sim import Datapath, FlowVerdict, SimEndpoint, lpm_lookup, policy_lookup
from cilia.policy.types import DropReason, Entry, Key, MatchType, RuleRef, Verdict

TCP, UDP, ICMP = 6, 17, 1
IN, EG = 0, 1
R = RuleRef("CiliumNetworkPolicy", "default", "r", "ingress", 0)
D = RuleRef("CiliumNetworkPolicy", "default", "d", "ingressDeny", 0)
A = Entry(False, frozenset({R}))
X = Entry(True, frozenset({D}))


def test_lpm_lookup_prefers_longest_port_prefix_then_any_protocol() -> None:
    policy = {
        Key(5, IN, TCP, 80, 16): A,
        Key(5, IN, TCP, 64, 10): X,
        Key(5, IN, 0, 0, 0): A,
    }
    assert lpm_lookup(policy, 5, IN, TCP, 80) == (Key(5, IN, TCP, 80, 16), A)
    assert lpm_lookup(policy, 5, IN, TCP, 81) == (Key(5, IN, TCP, 64, 10), X)
    assert lpm_lookup(policy, 5, IN, UDP, 81) == (Key(5, IN, 0, 0, 0), A)
    assert lpm_lookup(policy, 6, IN, UDP, 81) is None
    assert lpm_lookup(policy, 5, EG, TCP, 80) is None


LOOKUP_CASES = [
    (
        "no entry: default deny",
        {},
        (5, TCP, 80),
        Verdict(False, DropReason.POLICY_DENIED, MatchType.NONE, None, None),
    ),
    (
        "L3-only allow",
        {Key(5, IN, 0, 0, 0): A},
        (5, TCP, 80),
        Verdict(True, DropReason.NONE, MatchType.L3_ONLY, Key(5, IN, 0, 0, 0), A),
    ),
    (
        "L3-L4 allow",
        {Key(5, IN, TCP, 80, 16): A},
        (5, TCP, 80),
        Verdict(True, DropReason.NONE, MatchType.L3_L4, Key(5, IN, TCP, 80, 16), A),
    ),
    (
        "L3-proto allow",
        {Key(5, IN, TCP, 0, 0): A},
        (5, TCP, 80),
        Verdict(True, DropReason.NONE, MatchType.L3_PROTO, Key(5, IN, TCP, 0, 0), A),
    ),
    (
        "L4-only allow",
        {Key(0, IN, TCP, 80, 16): A},
        (5, TCP, 80),
        Verdict(True, DropReason.NONE, MatchType.L4_ONLY, Key(0, IN, TCP, 80, 16), A),
    ),
    (
        "proto-only allow",
        {Key(0, IN, UDP, 0, 0): A},
        (5, UDP, 53),
        Verdict(True, DropReason.NONE, MatchType.PROTO_ONLY, Key(0, IN, UDP, 0, 0), A),
    ),
    (
        "allow all",
        {Key(0, IN, 0, 0, 0): A},
        (5, ICMP, 8),
        Verdict(True, DropReason.NONE, MatchType.ALL, Key(0, IN, 0, 0, 0), A),
    ),
    (
        "L3 deny drops before the L4-only lookup",
        {Key(5, IN, 0, 0, 0): X, Key(0, IN, TCP, 80, 16): A},
        (5, TCP, 80),
        Verdict(False, DropReason.POLICY_DENY, MatchType.L3_ONLY, Key(5, IN, 0, 0, 0), X),
    ),
    (
        "L4-only deny beats an L3 allow",
        {Key(5, IN, 0, 0, 0): A, Key(0, IN, TCP, 80, 16): X},
        (5, TCP, 80),
        Verdict(False, DropReason.POLICY_DENY, MatchType.L4_ONLY, Key(0, IN, TCP, 80, 16), X),
    ),
    (
        "longer L4-only prefix beats a shorter L3 allow",
        {Key(5, IN, 0, 0, 0): A, Key(0, IN, TCP, 80, 16): A},
        (5, TCP, 80),
        Verdict(True, DropReason.NONE, MatchType.L4_ONLY, Key(0, IN, TCP, 80, 16), A),
    ),
    (
        "equal prefixes: the L3 entry is chosen",
        {Key(5, IN, TCP, 80, 16): A, Key(0, IN, TCP, 80, 16): A},
        (5, TCP, 80),
        Verdict(True, DropReason.NONE, MatchType.L3_L4, Key(5, IN, TCP, 80, 16), A),
    ),
    (
        "higher proxy priority wins over a longer prefix",
        {Key(5, IN, 0, 0, 0): A._replace(proxy_port=15001, proxy_priority=2), Key(0, IN, TCP, 80, 16): A},
        (5, TCP, 80),
        Verdict(
            True,
            DropReason.NONE,
            MatchType.L3_ONLY,
            Key(5, IN, 0, 0, 0),
            A._replace(proxy_port=15001, proxy_priority=2),
        ),
    ),
    (
        "ICMP type takes the port's place",
        {Key(5, IN, ICMP, 8, 16): A},
        (5, ICMP, 0),
        Verdict(False, DropReason.POLICY_DENIED, MatchType.NONE, None, None),
    ),
    (
        "auth required",
        {Key(5, IN, 0, 0, 0): A._replace(auth_type=1)},
        (5, TCP, 80),
        Verdict(
            False, DropReason.AUTH_REQUIRED, MatchType.L3_ONLY, Key(5, IN, 0, 0, 0), A._replace(auth_type=1)
        ),
    ),
]


@pytest.mark.parametrize(
    ("name", "policy", "flow", "verdict"), LOOKUP_CASES, ids=[c[0] for c in LOOKUP_CASES]
)
def test_policy_lookup(name: str, policy: dict, flow: tuple[int, int, int], verdict: Verdict) -> None:
    assert policy_lookup(policy, flow[0], IN, flow[1], flow[2]) == verdict


def test_audit_mode_turns_drops_into_allows() -> None:
    assert policy_lookup({}, 5, IN, TCP, 80, audit=True) == Verdict(
        True, DropReason.POLICY_DENIED, MatchType.NONE, None, None, True
    )


# --------------------------------------------------------------------------------- ipcache


def test_ipcache_longest_prefix_match_v4_v6() -> None:
    c = IPCache()
    c.upsert("10.0.0.0/8", 100)
    c.upsert("10.1.0.0/16", 101)
    c.upsert("198.18.0.5", 300)
    c.upsert("2001:db8::/32", 200)
    c.upsert("2001:db8::1/128", 201)
    assert [c.lookup(ip) for ip in ("10.1.2.3", "10.2.0.1", "198.18.0.5", "198.18.0.6")] == [101, 100, 300, 2]
    # an IPv6 miss is reserved:world-ipv6 (10), as the kernel's lookup_identity
    assert [c.lookup(ip) for ip in ("2001:db8::1", "2001:db8::2", "2001:db9::1")] == [201, 200, 10]
    assert c.lookup_prefix("10.1.2.3") == ("10.1.0.0/16", 101)
    c.delete("10.1.0.0/16")
    assert c.lookup("10.1.2.3") == 100
    assert list(c) == [
        ("10.0.0.0/8", 100),
        ("198.18.0.5/32", 300),
        ("2001:db8::/32", 200),
        ("2001:db8::1/128", 201),
    ]


# --------------------------------------------------------------------------------- flows


def test_flow_checks_source_egress_then_destination_ingress() -> None:
    dp = Datapath()
    a = SimEndpoint(1, "198.18.0.10", 300, {Key(301, EG, TCP, 80, 16): A}, "a")
    b = SimEndpoint(2, "198.18.0.11", 301, {Key(300, IN, 0, 0, 0): A}, "b")
    dp.upsert_endpoint(a)
    dp.upsert_endpoint(b)
    dp.ipcache.upsert("198.19.0.0/16", 0x01000001)
    ok = dp.flow("198.18.0.10", "198.18.0.11", TCP, 80)
    assert ok == FlowVerdict(
        300,
        301,
        Verdict(True, DropReason.NONE, MatchType.L3_L4, Key(301, EG, TCP, 80, 16), A),
        Verdict(True, DropReason.NONE, MatchType.L3_ONLY, Key(300, IN, 0, 0, 0), A),
    )
    assert ok.allowed and ok.deciding == ("ingress", ok.ingress)
    dropped = dp.flow("198.18.0.10", "198.18.0.11", TCP, 81)
    assert dropped == FlowVerdict(
        300, 301, Verdict(False, DropReason.POLICY_DENIED, MatchType.NONE, None, None), None
    )
    assert dropped.reason is DropReason.POLICY_DENIED and dropped.deciding == ("egress", dropped.egress)
    # From outside: only the destination's ingress; the source identity comes from the ipcache.
    world = dp.flow("198.19.1.1", "198.18.0.11", TCP, 80)
    assert world == FlowVerdict(
        0x01000001, 301, None, Verdict(False, DropReason.POLICY_DENIED, MatchType.NONE, None, None)
    )
    unknown = dp.flow("203.0.113.1", "198.18.0.11", TCP, 80)
    assert unknown.src_identity == 2 and not unknown.allowed
    # Leaving the node: only the source's egress.
    out = dp.flow("198.18.0.10", "198.19.1.1", TCP, 80)
    assert out == FlowVerdict(
        300, 0x01000001, Verdict(False, DropReason.POLICY_DENIED, MatchType.NONE, None, None), None
    )
    dp.remove_endpoint("198.18.0.11")
    assert dp.identity_of("198.18.0.11") == 2
