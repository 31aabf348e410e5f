"""The kernel policy lookup on crafted packets (BPF_PROG_TEST_RUN), no network namespaces needed:
a table of cases asserting the whole verdict, and a differential test against cilia.datapath.sim."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers_bpf import LO, private_datapath, run
from helpers_packets import ICMP, ICMPV6, SCTP, TCP, UDP, arp_frame, frame

from cilia.datapath import sim
from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.datapath.maps.events import PolicyEvent
from cilia.policy.types import Direction, DropReason, Entry, Key, MatchType, RuleRef, Verdict

pytestmark = pytest.mark.root

EP, EP_ID = 7, 1001
X, Y, WORLD = 1002, 1003, 2
LOCAL4, X4, Y4, WORLD4 = "198.18.1.20", "198.18.1.10", "198.18.1.30", "198.19.0.9"
LOCAL6, X6 = "2001:2::20", "2001:2::10"
ING, EG = int(Direction.INGRESS), int(Direction.EGRESS)


def rule(name: str) -> frozenset[RuleRef]:
    return frozenset({RuleRef("CiliumNetworkPolicy", "default", name, "ingress", 0)})


class Seen(NamedTuple):
    """What the kernel reported for one packet."""

    passed: bool
    reason: DropReason
    match_type: MatchType
    exact: bool
    lpm_prefix: int
    rules: frozenset[RuleRef] | None
    audited: bool


@pytest.fixture(scope="module")
def dp(tmp_path_factory: pytest.TempPathFactory):
    with private_datapath(tmp_path_factory.mktemp("lookup")) as d:
        d.endpoints.set(EndpointInfo(LO, EP, EP_ID, EndpointFlags.enforcing()))
        for prefix, ident in ((X4, X), (Y4, Y), (X6, X), (LOCAL4, EP_ID), (LOCAL6, EP_ID)):
            d.upsert_ipcache(prefix, ident)
        yield d


_sport = iter(range(1024, 65536))


def send(d: Datapath, direction: int, peer: str, proto: int, port: int, **kw: int) -> Seen:
    """A packet from the peer to the endpoint (ingress) or from the endpoint to the peer (egress)."""
    local = LOCAL6 if ":" in peer else LOCAL4
    src, dst = (peer, local) if direction == ING else (local, peer)
    if proto in (ICMP, ICMPV6):
        pkt = frame(src, dst, proto, icmp_type=port, icmp_id=next(_sport))
    else:
        pkt = frame(src, dst, proto, sport=next(_sport), dport=port, **kw)
    passed, events = run(d, "to_container" if direction == ING else "from_container", pkt)
    policy_events = [e for e in events if e.endpoint_id == EP]
    assert len(policy_events) <= 1, policy_events
    if not policy_events:
        return Seen(passed, DropReason.NONE, MatchType.NONE, False, 0, None, False)
    e: PolicyEvent = policy_events[0]
    return Seen(passed, e.reason, e.match_type, e.exact, e.lpm_prefix, d.rules_for(e.cookie), e.audited)


A = Entry(False, rule("allow"))
D = Entry(True, rule("deny"))
W = Entry(False, rule("wild"))
NONE_RULES: frozenset[RuleRef] = frozenset()

CASES = [
    # (name, mapstate, (direction, peer, proto, port), expected)
    ("default deny", {}, (ING, X4, TCP, 80),
     Seen(False, DropReason.POLICY_DENIED, MatchType.NONE, False, 0, NONE_RULES, False)),
    ("L3-L4 exact port", {Key(X, ING, TCP, 80, 16): A}, (ING, X4, TCP, 80),
     Seen(True, DropReason.NONE, MatchType.L3_L4, True, 24, A.rules, False)),
    ("port is per protocol", {Key(X, ING, TCP, 80, 16): A}, (ING, X4, UDP, 80),
     Seen(False, DropReason.POLICY_DENIED, MatchType.NONE, False, 0, NONE_RULES, False)),
    ("other peer", {Key(X, ING, TCP, 80, 16): A}, (ING, Y4, TCP, 80),
     Seen(False, DropReason.POLICY_DENIED, MatchType.NONE, False, 0, NONE_RULES, False)),
    ("L3-only allows ICMP", {Key(X, ING, 0, 0, 0): A}, (ING, X4, ICMP, 8),
     Seen(True, DropReason.NONE, MatchType.L3_ONLY, True, 0, A.rules, False)),
    ("L3-proto", {Key(X, EG, UDP, 0, 0): A}, (EG, X4, UDP, 5353),
     Seen(True, DropReason.NONE, MatchType.L3_PROTO, True, 8, A.rules, False)),
    ("port range 8-15 hits 13", {Key(X, ING, TCP, 8, 13): A}, (ING, X4, TCP, 13),
     Seen(True, DropReason.NONE, MatchType.L3_L4, True, 21, A.rules, False)),
    ("port range 8-15 misses 16", {Key(X, ING, TCP, 8, 13): A}, (ING, X4, TCP, 16),
     Seen(False, DropReason.POLICY_DENIED, MatchType.NONE, False, 0, NONE_RULES, False)),
    ("SCTP port", {Key(0, ING, SCTP, 9000, 16): W}, (ING, Y4, SCTP, 9000),
     Seen(True, DropReason.NONE, MatchType.L4_ONLY, False, 24, W.rules, False)),
    ("L4-only wildcard identity covers world", {Key(0, ING, TCP, 443, 16): W}, (ING, WORLD4, TCP, 443),
     Seen(True, DropReason.NONE, MatchType.L4_ONLY, False, 24, W.rules, False)),
    ("proto-only", {Key(0, EG, ICMP, 0, 0): W}, (EG, Y4, ICMP, 8),
     Seen(True, DropReason.NONE, MatchType.PROTO_ONLY, False, 8, W.rules, False)),
    ("allow all", {Key(0, ING, 0, 0, 0): W}, (ING, Y4, UDP, 53),
     Seen(True, DropReason.NONE, MatchType.ALL, False, 0, W.rules, False)),
    ("ICMP type as port", {Key(X, ING, ICMP, 8, 16): A}, (ING, X4, ICMP, 13),
     Seen(False, DropReason.POLICY_DENIED, MatchType.NONE, False, 0, NONE_RULES, False)),
    ("exact deny beats wildcard allow", {Key(X, ING, TCP, 80, 16): D, Key(0, ING, 0, 0, 0): W},
     (ING, X4, TCP, 80), Seen(False, DropReason.POLICY_DENY, MatchType.L3_L4, True, 24, D.rules, False)),
    ("wildcard deny beats exact allow", {Key(X, ING, TCP, 80, 16): A, Key(0, ING, TCP, 0, 0): D},
     (ING, X4, TCP, 80), Seen(False, DropReason.POLICY_DENY, MatchType.PROTO_ONLY, False, 8, D.rules, False)),
    ("longer wildcard prefix wins at equal priority", {Key(X, ING, 0, 0, 0): A, Key(0, ING, TCP, 80, 16): W},
     (ING, X4, TCP, 80), Seen(True, DropReason.NONE, MatchType.L4_ONLY, False, 24, W.rules, False)),
    ("exact wins at equal prefix", {Key(X, ING, TCP, 80, 16): A, Key(0, ING, TCP, 80, 16): W},
     (ING, X4, TCP, 80), Seen(True, DropReason.NONE, MatchType.L3_L4, True, 24, A.rules, False)),
    ("higher proxy priority wins", {Key(X, ING, TCP, 80, 16): A,
                                    Key(0, ING, TCP, 0, 0): Entry(False, W.rules, 15001, 2)},
     (ING, X4, TCP, 80), Seen(True, DropReason.NONE, MatchType.PROTO_ONLY, False, 8, W.rules, False)),
    ("deny on another port does not cut", {Key(X, ING, TCP, 80, 16): D, Key(X, ING, 0, 0, 0): A},
     (ING, X4, TCP, 81), Seen(True, DropReason.NONE, MatchType.L3_ONLY, True, 0, A.rules, False)),
    ("auth required", {Key(X, ING, TCP, 80, 16): Entry(False, A.rules, auth_type=1)}, (ING, X4, TCP, 80),
     Seen(False, DropReason.AUTH_REQUIRED, MatchType.L3_L4, True, 24, A.rules, False)),
    ("egress direction is separate", {Key(X, ING, TCP, 80, 16): A}, (EG, X4, TCP, 80),
     Seen(False, DropReason.POLICY_DENIED, MatchType.NONE, False, 0, NONE_RULES, False)),
    ("IPv6 TCP", {Key(X, ING, TCP, 80, 16): A}, (ING, X6, TCP, 80),
     Seen(True, DropReason.NONE, MatchType.L3_L4, True, 24, A.rules, False)),
    ("IPv6 ICMPv6 echo", {Key(X, EG, ICMPV6, 128, 16): A}, (EG, X6, ICMPV6, 128),
     Seen(True, DropReason.NONE, MatchType.L3_L4, True, 24, A.rules, False)),
    ("IPv6 deny", {Key(X, EG, 0, 0, 0): D}, (EG, X6, UDP, 53),
     Seen(False, DropReason.POLICY_DENY, MatchType.L3_ONLY, True, 0, D.rules, False)),
]


@pytest.mark.parametrize(("name", "mapstate", "packet", "expected"), CASES, ids=[c[0] for c in CASES])
def test_lookup_table(dp: Datapath, name: str, mapstate: dict[Key, Entry], packet: tuple[int, str, int, int],
                      expected: Seen) -> None:
    dp.set_policy(EP, mapstate)
    assert send(dp, *packet) == expected


def test_audit_mode_turns_drop_into_allow(dp: Datapath) -> None:
    dp.set_policy(EP, {Key(X, ING, TCP, 80, 16): D})
    dp.set_audit(EP, True)
    try:
        assert send(dp, ING, X4, TCP, 80) == Seen(True, DropReason.POLICY_DENY, MatchType.L3_L4, True, 24,
                                                  D.rules, True)
        assert send(dp, ING, Y4, TCP, 80) == Seen(True, DropReason.POLICY_DENIED, MatchType.NONE, False, 0,
                                                  NONE_RULES, True)
    finally:
        dp.set_audit(EP, False)
    assert send(dp, ING, X4, TCP, 80).passed is False


def test_unenforced_direction_passes_without_lookup(dp: Datapath) -> None:
    dp.set_policy(EP, {})
    dp.set_enforcement(EP, ingress=False, egress=True)
    try:
        unenforced = Seen(True, DropReason.NONE, MatchType.NONE, False, 0, None, False)
        assert send(dp, ING, Y4, UDP, 53) == unenforced
        assert send(dp, EG, Y4, UDP, 53).passed is False
    finally:
        dp.set_enforcement(EP, ingress=True, egress=True)


def test_arp_passes_and_unknown_device_drops(dp: Datapath) -> None:
    dp.set_policy(EP, {})
    assert run(dp, "to_container", arp_frame()) == (True, [])
    dp.endpoints.delete(LO)
    try:
        passed, events = run(dp, "from_container", frame(LOCAL4, X4, TCP))
        assert passed is False
        seen = [(e.endpoint_id, e.no_endpoint, e.reason) for e in events]
        assert seen == [(0, True, DropReason.POLICY_DENIED)]
    finally:
        dp.endpoints.set(EndpointInfo(LO, EP, EP_ID, EndpointFlags.enforcing() | EndpointFlags.POLICY_READY))


def test_reply_of_allowed_connection_skips_policy_and_syn_only_ct(dp: Datapath) -> None:
    dp.set_policy(EP, {Key(X, EG, TCP, 80, 16): A})  # egress to X:80 only; no ingress allow at all
    # a mid-stream ACK does not open a connection: its reply is checked (and denied)
    run(dp, "from_container", frame(LOCAL4, X4, TCP, sport=5555, dport=80, tcp_flags=0x10))
    assert run(dp, "to_container", frame(X4, LOCAL4, TCP, sport=80, dport=5555, tcp_flags=0x12))[0] is False
    # a SYN does: the reply passes without an ingress allow and without an event
    assert run(dp, "from_container", frame(LOCAL4, X4, TCP, sport=5556, dport=80))[0] is True
    assert run(dp, "to_container", frame(X4, LOCAL4, TCP, sport=80, dport=5556, tcp_flags=0x12)) == (True, [])
    # forward packets are re-checked: revoke, and the next forward packet drops, replies still pass
    dp.set_policy(EP, {})
    assert run(dp, "from_container", frame(LOCAL4, X4, TCP, sport=5556, dport=80, tcp_flags=0x10))[0] is False
    assert dp.flush_ct(EP) >= 1
    assert run(dp, "to_container", frame(X4, LOCAL4, TCP, sport=80, dport=5556, tcp_flags=0x10))[0] is False


def test_icmp_echo_reply_matches_request(dp: Datapath) -> None:
    dp.set_policy(EP, {Key(X, EG, ICMP, 8, 16): A})
    assert run(dp, "from_container", frame(LOCAL4, X4, ICMP, icmp_type=8, icmp_id=77))[0] is True
    assert run(dp, "to_container", frame(X4, LOCAL4, ICMP, icmp_type=0, icmp_id=77)) == (True, [])
    assert run(dp, "to_container", frame(X4, LOCAL4, ICMP, icmp_type=0, icmp_id=78))[0] is False


def test_events_rate_limited_per_endpoint(tmp_path: Path) -> None:
    from cilia.datapath.maps.config import DatapathConfig

    with private_datapath(tmp_path, config=DatapathConfig(events_per_sec=5)) as d:
        d.endpoints.set(EndpointInfo(LO, EP, EP_ID, EndpointFlags.enforcing()))
        d.set_policy(EP, {})
        events = [e for i in range(12)
                  for e in run(d, "to_container", frame(X4, LOCAL4, UDP, sport=2000 + i))[1]]
        assert len(events) == 5
        suppressed = {(r.verdict, r.packets) for r in d.metrics() if r.verdict == "events suppressed"}
        assert suppressed == {("events suppressed", 7)}
        time.sleep(1.05)  # next rate-limit window: the first event reports what was suppressed
        [after] = run(d, "to_container", frame(X4, LOCAL4, UDP, sport=3000))[1]
        assert (after.suppressed_before, after.reason) == (7, DropReason.POLICY_DENIED)


# ----------------------------------------------------------------------------- differential test

PROTOS = (0, TCP, UDP, SCTP, ICMP)
PEERS = ((X4, X), (Y4, Y), (WORLD4, WORLD))


def random_mapstate(rnd: random.Random) -> dict[Key, Entry]:
    out: dict[Key, Entry] = {}
    for _ in range(rnd.randint(0, 8)):
        ident = rnd.choice((0, X, Y, WORLD))
        direction = rnd.choice((ING, EG))
        proto = rnd.choice(PROTOS)
        if proto == 0:
            key = Key(ident, direction, 0, 0, 0)
        else:
            plen = rnd.choice((0, 16, 16, 14, 12, 8))
            base = rnd.choice((80, 443, 8080, 1024, 0, 8, 13)) & ((0xFFFF << (16 - plen)) & 0xFFFF)
            key = Key(ident, direction, proto, base, plen)
        out[key] = Entry(rnd.random() < 0.3, rule(f"r{rnd.randint(0, 5)}"), 0,
                         rnd.choice((0, 0, 0, 1, 2)), 1 if rnd.random() < 0.05 else 0)
    return out


def expected_from_sim(d: Datapath, v: Verdict, audited_mode: bool) -> Seen:
    rules = d.cookies.rules_for(d.cookies.cookie_for(v.entry.rules)) if v.entry is not None else NONE_RULES
    if v.allowed and not v.audited:
        return Seen(True, DropReason.NONE, v.match_type, v.key.identity != 0, v.key.lpm_prefix, rules, False)
    return Seen(v.allowed, v.reason, v.match_type, v.key is not None and v.key.identity != 0,
                v.key.lpm_prefix if v.key is not None else 0, rules, audited_mode)


def test_differential_kernel_equals_sim(dp: Datapath) -> None:
    rnd = random.Random(20261127)
    checked = 0
    for _ in range(60):
        ms = random_mapstate(rnd)
        audit = rnd.random() < 0.15
        dp.set_policy(EP, ms)
        dp.set_audit(EP, audit)
        for _ in range(8):
            direction = rnd.choice((ING, EG))
            peer, ident = rnd.choice(PEERS)
            proto = rnd.choice(PROTOS[1:])
            port = rnd.choice((80, 81, 443, 8080, 8081, 1024, 1030, 13, 8, 0, 65535))
            if proto == ICMP:
                port = rnd.choice((8, 0, 13))
            v = sim.policy_lookup(ms, ident, direction, proto, port, audit=audit)
            want = expected_from_sim(dp, v, audit)
            got = send(dp, direction, peer, proto, port)
            assert got == want, (ms, direction, ident, proto, port, audit)
            checked += 1
    dp.set_audit(EP, False)
    assert checked == 480


def test_fin_shortens_conntrack_and_new_syn_renews(dp: Datapath) -> None:
    dp.set_policy(EP, {Key(X, EG, TCP, 80, 16): A})
    assert run(dp, "from_container", frame(LOCAL4, X4, TCP, sport=6000, dport=80))[0]

    def expires() -> float:
        [e] = [e for e in dp.ct.dump(EP) if e.sport == 6000]
        return e.expires_in_s

    assert 50 < expires() <= 60  # an unanswered SYN is forgotten after the opening timeout
    run(dp, "from_container", frame(LOCAL4, X4, TCP, sport=6000, dport=80, tcp_flags=0x10))  # ACK
    assert 50 < expires() <= 60  # forward packets alone do not open the connection
    run(dp, "to_container", frame(X4, LOCAL4, TCP, sport=80, dport=6000, tcp_flags=0x12))  # SYN|ACK reply
    assert expires() > 21000
    run(dp, "to_container", frame(X4, LOCAL4, TCP, sport=80, dport=6000, tcp_flags=0x11))  # FIN|ACK reply
    assert 0 < expires() <= 10
    run(dp, "from_container", frame(LOCAL4, X4, TCP, sport=6000, dport=80))  # the tuple is reused
    assert 50 < expires() <= 60
    run(dp, "to_container", frame(X4, LOCAL4, TCP, sport=80, dport=6000, tcp_flags=0x12))
    assert expires() > 21000


def test_ip_options_and_short_packets_take_the_careful_parser(dp: Datapath) -> None:
    """IPv4 options and headers shorter than the fast path reads are parsed by the helper-based
    path: same verdicts as plain packets."""
    dp.set_policy(EP, {Key(X, ING, UDP, 53, 16): A, Key(X, ING, TCP, 80, 16): D})
    nop4 = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    cases = {
        "udp with options": frame(X4, LOCAL4, UDP, sport=7001, dport=53, ip_options=nop4),
        "tcp with options": frame(X4, LOCAL4, TCP, sport=7002, dport=80, ip_options=nop4),
        "short udp": frame(X4, LOCAL4, UDP, sport=7003, dport=53, payload=b""),
        "short udp, other port": frame(X4, LOCAL4, UDP, sport=7004, dport=54, payload=b""),
    }
    got = {name: (lambda r: (r[0], [e.reason for e in r[1]]))(run(dp, "to_container", pkt))
           for name, pkt in cases.items()}
    assert got == {
        "udp with options": (True, [DropReason.NONE]),
        "tcp with options": (False, [DropReason.POLICY_DENY]),
        "short udp": (True, [DropReason.NONE]),
        "short udp, other port": (False, [DropReason.POLICY_DENIED]),
    }
