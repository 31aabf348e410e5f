"""The kernel datapath on crafted IPv6 packets (BPF_PROG_TEST_RUN, no network namespaces): the
policy lookup against cilia.datapath.sim for IPv6 peers and ICMPv6 (a differential test like the
IPv4 one), the neighbour discovery and link-scope multicast that pass without policy, extension
headers walked to the real protocol, conntrack for IPv6, and CIDR prefixes in the IPv6 ipcache."""

from __future__ import annotations

import random
import struct

import pytest
from helpers_bpf import LO, private_datapath, run
from helpers_packets import ICMPV6, SCTP, TCP, UDP, frame, l4_header
from test_bpf_lookup import Seen, expected_from_sim, random_mapstate, rule

from cilia.datapath import sim
from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.ipcache import IPCache
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.policy.types import Direction, DropReason, Entry, Key, MatchType

pytestmark = pytest.mark.root

EP, EP_ID = 9, 1001
X, Y, WORLD, CIDR_ID = 1002, 1003, 2, 16777300
WORLD_V6 = 10  # reserved:world-ipv6: an IPv6 address in no prefix (as a dual-stack Cilium)
LOCAL6, X6, Y6 = "2001:2::c612:114", "2001:2::c612:10a", "2001:2::c612:11e"
WORLD6 = "2001:2::c613:9"  # a lab address no identity holds: world
CIDR6_NET, CIDR6_HOST = "2001:2:0:77::/64", "2001:2:0:77::5"  # a CIDR identity's prefix, a host in it
ING, EG = int(Direction.INGRESS), int(Direction.EGRESS)
A = Entry(False, rule("allow"))

PEERS6 = ((X6, X), (Y6, Y), (WORLD6, WORLD_V6), (CIDR6_HOST, CIDR_ID))
PROTOS6 = (TCP, UDP, SCTP, ICMPV6)


@pytest.fixture(scope="module")
def dp(tmp_path_factory: pytest.TempPathFactory):
    with private_datapath(tmp_path_factory.mktemp("ipv6")) as d:
        d.endpoints.set(EndpointInfo(LO, EP, EP_ID, EndpointFlags.enforcing()))
        for prefix, ident in ((X6, X), (Y6, Y), (LOCAL6, EP_ID), (CIDR6_NET, CIDR_ID)):
            d.upsert_ipcache(prefix, ident)
        yield d


_sport = iter(range(1024, 65536))


def send(d: Datapath, direction: int, peer: str, proto: int, port: int, packet: bytes | None = None) -> Seen:
    src, dst = (peer, LOCAL6) if direction == ING else (LOCAL6, peer)
    if packet is None:
        packet = (frame(src, dst, proto, icmp_type=port, icmp_id=next(_sport)) if proto == ICMPV6
                  else frame(src, dst, proto, sport=next(_sport), dport=port))
    passed, events = run(d, "to_container" if direction == ING else "from_container", packet)
    mine = [e for e in events if e.endpoint_id == EP]
    assert len(mine) <= 1, mine
    if not mine:
        return Seen(passed, DropReason.NONE, MatchType.NONE, False, 0, None, False)
    e = mine[0]
    return Seen(passed, e.reason, e.match_type, e.exact, e.lpm_prefix, d.rules_for(e.cookie), e.audited)


def test_differential_ipv6_kernel_equals_sim(dp: Datapath) -> None:
    """Random MapStates; IPv6 peers of every kind (endpoint, world, CIDR prefix), ICMPv6 types as
    ports: the kernel's verdict, match type, prefix and rules equal the sim's."""
    rnd = random.Random(20261207)
    sim_ipcache = IPCache()
    for prefix, ident in ((X6, X), (Y6, Y), (LOCAL6, EP_ID), (CIDR6_NET, CIDR_ID)):
        sim_ipcache.upsert(prefix, ident)
    checked = 0
    for _ in range(40):
        ms = random_mapstate(rnd)
        for _ in range(3):  # ICMPv6 and CIDR-identity keys too
            ident = rnd.choice((0, X, CIDR_ID, WORLD_V6))
            key = rnd.choice((Key(ident, rnd.choice((ING, EG)), ICMPV6, rnd.choice((128, 129, 1)), 16),
                              Key(ident, rnd.choice((ING, EG)), ICMPV6, 0, 0)))
            ms[key] = Entry(rnd.random() < 0.3, rule(f"r{rnd.randint(0, 5)}"))
        audit = rnd.random() < 0.15
        dp.set_policy(EP, ms)
        dp.set_audit(EP, audit)
        for _ in range(8):
            direction = rnd.choice((ING, EG))
            peer, ident = rnd.choice(PEERS6)
            assert sim_ipcache.lookup(peer) == ident
            proto = rnd.choice(PROTOS6)
            port = rnd.choice((128, 129, 1)) if proto == ICMPV6 else rnd.choice((80, 443, 8080, 1024, 13, 0))
            v = sim.policy_lookup(ms, ident, direction, proto, port, audit=audit)
            assert send(dp, direction, peer, proto, port) == expected_from_sim(dp, v, audit), (
                ms, direction, peer, proto, port, audit)
            checked += 1
    dp.set_audit(EP, False)
    assert checked == 320


def test_neighbour_discovery_and_link_multicast_pass_without_policy(dp: Datapath) -> None:
    """Like ARP for IPv4: NS/NA/RS/RA/redirect (133-137) and link-scope multicast pass with no
    allow at all (the link keeps working), and the sim says the same; other ICMPv6 is policy's."""
    dp.set_policy(EP, {})
    nd = {t: send(dp, ING, "fe80::1" if t in (133, 134) else X6, ICMPV6, t).passed for t in range(133, 138)}
    assert nd == dict.fromkeys(range(133, 138), True)
    assert send(dp, EG, "ff02::16", ICMPV6, 143).passed  # an MLD report, link scope
    assert send(dp, EG, "ff02::1:ff00:10a", ICMPV6, 135).passed  # NS to a solicited-node group
    denied = {t: send(dp, ING, X6, ICMPV6, t) for t in (1, 128, 138)}
    assert {t: (s.passed, s.reason) for t, s in denied.items()} == dict.fromkeys(
        (1, 128, 138), (False, DropReason.POLICY_DENIED))
    node = sim.Datapath()
    node.upsert_endpoint(sim.SimEndpoint(EP, LOCAL6, EP_ID))
    assert node.flow(X6, LOCAL6, ICMPV6, 135).allowed
    assert node.flow(LOCAL6, "ff02::16", ICMPV6, 143).allowed
    assert not node.flow(X6, LOCAL6, ICMPV6, 128).allowed
    # a global-scope multicast destination is not link control: outside the lab, dropped
    assert send(dp, EG, "ff0e::1", UDP, 53).reason == DropReason.OUTSIDE_LAB


def _ext_frame(src: str, dst: str, chain: list[tuple[int, bytes]], proto: int, l4: bytes) -> bytes:
    """An IPv6 frame whose extension headers are ``chain`` ((header type, body after the
    next-header byte)) before ``proto``'s header ``l4``."""
    import ipaddress

    body, next_types = b"", [t for t, _ in chain[1:]] + [proto]
    for (_, rest), nxt in zip(chain, next_types, strict=True):
        body += bytes([nxt]) + rest
    payload = body + l4
    first = chain[0][0] if chain else proto
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(payload), first, 64,
                      ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x86\xdd" + ip6 + payload


HBH = (0, b"\x00" + b"\x01\x04\x00\x00\x00\x00")  # hdr ext len 0, a PadN option: 8 bytes
DSTOPT = (60, b"\x00" + b"\x01\x04\x00\x00\x00\x00")


def test_extension_headers_are_walked_to_the_real_protocol(dp: Datapath) -> None:
    dp.set_policy(EP, {Key(X, ING, TCP, 80, 16): A})
    tcp80, tcp81 = l4_header(TCP, 41000, 80), l4_header(TCP, 41001, 81)
    first_frag = (44, b"\x00" + struct.pack("!HI", 0x0001, 7))  # offset 0, more fragments
    later_frag = (44, b"\x00" + struct.pack("!HI", 0x0010, 7))  # offset 2 (x8 bytes): no L4 header
    cases = {
        "hop-by-hop, tcp 80": _ext_frame(X6, LOCAL6, [HBH], TCP, tcp80),
        "hop-by-hop + dest options, tcp 81": _ext_frame(X6, LOCAL6, [HBH, DSTOPT], TCP, tcp81),
        "first fragment, tcp 80": _ext_frame(X6, LOCAL6, [first_frag], TCP, l4_header(TCP, 41002, 80)),
        "later fragment": _ext_frame(X6, LOCAL6, [later_frag], TCP, b"\xaa" * 16),
        "four headers, tcp 80": _ext_frame(X6, LOCAL6, [HBH, DSTOPT, DSTOPT, DSTOPT], TCP,
                                           l4_header(TCP, 41004, 80)),
        "five headers": _ext_frame(X6, LOCAL6, [HBH, DSTOPT, DSTOPT, DSTOPT, DSTOPT], TCP,
                                   l4_header(TCP, 41003, 80)),
    }
    got = {name: send(dp, ING, X6, TCP, 0, packet=pkt) for name, pkt in cases.items()}
    assert {n: (s.passed, s.reason, s.match_type) for n, s in got.items()} == {
        "hop-by-hop, tcp 80": (True, DropReason.NONE, MatchType.L3_L4),
        "hop-by-hop + dest options, tcp 81": (False, DropReason.POLICY_DENIED, MatchType.NONE),
        "first fragment, tcp 80": (True, DropReason.NONE, MatchType.L3_L4),
        "later fragment": (False, DropReason.POLICY_DENIED, MatchType.NONE),  # port 0: as IPv4's
        "four headers, tcp 80": (True, DropReason.NONE, MatchType.L3_L4),
        "five headers": (False, DropReason.POLICY_DENIED, MatchType.NONE),  # refused: malformed
    }


def test_ipv6_conntrack_replies_and_echo(dp: Datapath) -> None:
    dp.set_policy(EP, {Key(X, EG, TCP, 80, 16): A, Key(X, EG, ICMPV6, 128, 16): A})
    assert run(dp, "from_container", frame(LOCAL6, X6, TCP, sport=6100, dport=80))[0]
    assert run(dp, "to_container", frame(X6, LOCAL6, TCP, sport=80, dport=6100, tcp_flags=0x12)) == (True, [])
    # the same ports from IPv4 addresses are another connection
    assert not run(dp, "to_container", frame("198.18.1.10", "198.18.1.20", TCP, sport=80, dport=6100,
                                             tcp_flags=0x12))[0]
    assert run(dp, "from_container", frame(LOCAL6, X6, ICMPV6, icmp_type=128, icmp_id=91))[0]
    assert run(dp, "to_container", frame(X6, LOCAL6, ICMPV6, icmp_type=129, icmp_id=91)) == (True, [])
    assert not run(dp, "to_container", frame(X6, LOCAL6, ICMPV6, icmp_type=129, icmp_id=92))[0]
    entries = [e for e in dp.ct.dump(EP) if e.sport == 6100]
    assert [(e.src, e.dst) for e in entries] == [(LOCAL6, X6)]


def test_cidr_prefix_in_the_ipv6_ipcache(dp: Datapath) -> None:
    """A host inside a CIDR identity's IPv6 prefix gets that identity (LPM), one outside is world."""
    dp.set_policy(EP, {Key(CIDR_ID, EG, TCP, 443, 16): A})
    assert send(dp, EG, CIDR6_HOST, TCP, 443) == Seen(True, DropReason.NONE, MatchType.L3_L4, True, 24,
                                                      A.rules, False)
    outside = send(dp, EG, "2001:2:0:78::5", TCP, 443)
    assert (outside.passed, outside.reason) == (False, DropReason.POLICY_DENIED)
    assert dp.ipcache.identity_of(CIDR6_HOST) == CIDR_ID
    assert dp.ipcache.identity_of("2001:2:0:78::5") == WORLD_V6



def test_ipv6_dns_of_a_dns_proxied_endpoint_fails_closed(dp: Datapath) -> None:
    """DNS rules send IPv4 queries to the DNS proxy by rewriting; an IPv6 query (not rewritten) is
    not let past the DNS rules to the server: it takes the generic redirect and, with no IPv6
    listener, is dropped (proxy lookup failed)."""
    dp.set_policy(EP, {Key(X, EG, UDP, 53, 16): Entry(False, rule("dns"), 15997)})
    dp.set_dns_redirect(EP, ("198.18.0.1", 10053))
    try:
        passed, events = run(dp, "from_container", frame(LOCAL6, X6, UDP, sport=5300, dport=53))
    finally:
        dp.set_dns_redirect(EP, None)
    assert not passed
    assert [(e.allowed, e.reason) for e in events if e.endpoint_id == EP][-1] == (
        False, DropReason.PROXY_LOOKUP_FAILED)


def test_differential_ipv6_services_kernel_equals_sim(dp: Datapath) -> None:
    """Packets from the endpoint to IPv6 ClusterIPs (cilia_lb6): translated, then decided on the
    backend (endpoint, world, CIDR identity) and its target port — the kernel's verdict, match
    type, prefix and rules equal the sim's, which translates the same (one backend per frontend,
    so the kernel's random pick is the sim's); a frontend without backends drops in both."""
    from cilia.datapath.maps.lb import Backend, Frontend

    vip6 = "2001:2:0:ff::9"
    table = {Frontend(vip6, 80, "TCP"): (Backend(X6, 8080),), Frontend(vip6, 443, "TCP"): (Backend(Y6, 443),),
             Frontend(vip6, 53, "UDP"): (Backend(CIDR6_HOST, 5353),),
             Frontend(vip6, 1024, "TCP"): (Backend(WORLD6, 80),), Frontend(vip6, 7070, "TCP"): ()}
    rnd = random.Random(20261208)
    sim_ipcache = IPCache()
    for prefix, ident in ((X6, X), (Y6, Y), (LOCAL6, EP_ID), (CIDR6_NET, CIDR_ID)):
        sim_ipcache.upsert(prefix, ident)
    node = sim.Datapath(sim_ipcache)
    node.set_services(table)
    dp.sync_services(table)
    fronts = [(fe, 6 if fe.protocol == "TCP" else 17) for fe in table]
    checked = dropped = 0
    try:
        for _ in range(20):
            ms = random_mapstate(rnd)
            audit = rnd.random() < 0.15
            dp.set_policy(EP, ms)
            dp.set_audit(EP, audit)
            node.upsert_endpoint(sim.SimEndpoint(EP, LOCAL6, EP_ID, ms, audit=audit))
            for _ in range(6):
                fe, proto = rnd.choice(fronts)
                passed, events = run(dp, "from_container",
                                     frame(LOCAL6, vip6, proto, sport=next(_sport), dport=fe.port))
                mine = [e for e in events if e.endpoint_id == EP]
                want = node.flow(LOCAL6, vip6, proto, fe.port)
                assert want.egress is not None
                if not table[fe]:
                    assert (passed, mine, want.egress.allowed) == (False, [], False)
                    dropped += 1
                    continue
                assert want.translated == tuple(table[fe][0]) and len(mine) == 1, (fe, mine)
                e = mine[0]
                assert (e.dst, e.dport) == want.translated
                seen = Seen(passed, e.reason, e.match_type, e.exact, e.lpm_prefix, dp.rules_for(e.cookie),
                            e.audited)
                assert seen == expected_from_sim(dp, want.egress, audit), (ms, fe, audit)
                checked += 1
    finally:
        dp.set_audit(EP, False)
        dp.sync_services({})
    assert checked + dropped == 120 and checked > 80 and dropped
