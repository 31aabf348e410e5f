"""Port classes cut from the ranges that policies mention."""

from __future__ import annotations

from cilia.analyze.portclasses import PortClass, mentioned_ranges, port_classes
from cilia.identity.selector import Selector
from cilia.policy.rules import Peer, PeerKind, PeerRule, PolicyRule, PortProto
from cilia.policy.types import Direction, Proto, RuleRef

TCP, UDP, SCTP, ICMP, ICMPV6 = Proto.TCP, Proto.UDP, Proto.SCTP, Proto.ICMP, Proto.ICMPV6


def _rule(*ports: PortProto | None) -> PolicyRule:
    ref = RuleRef("CiliumNetworkPolicy", "default", "p", "", -1)
    entries = tuple(
        PeerRule(
            ref._replace(section="ingress", index=i),
            Direction.INGRESS,
            False,
            (Peer(PeerKind.WILDCARD, Selector.wildcard()),),
            None if pp is None else (pp,),
        )
        for i, pp in enumerate(ports)
    )
    return PolicyRule(ref, "default", Selector.wildcard(), False, entries)


def test_mentioned_ranges_resolves_named_ports_and_wildcards() -> None:
    rules = [
        _rule(
            PortProto(TCP, 80, 80),
            PortProto(TCP, 8000, 8080),
            PortProto(UDP, 0, 0),
            PortProto(TCP, 0, 0, name="http"),
            PortProto(ICMP, 8, 8),
            PortProto(ICMPV6, 0, 0),
            None,
        )
    ]
    named = {"http": [(TCP, 8080), (UDP, 9999), (TCP, 81)]}
    assert mentioned_ranges(rules, named) == {
        (TCP, 80, 80),
        (TCP, 8000, 8080),
        (UDP, 0, 65535),
        (TCP, 8080, 8080),
        (TCP, 81, 81),
        (ICMP, 8, 8),
        (ICMPV6, 0, 255),  # type 0 means every type in Cilium 1.18 (cilium/cilium#41304)
    }


def test_no_ranges_gives_only_other() -> None:
    assert port_classes([]) == [
        PortClass(
            "other",
            TCP,
            1,
            ((ICMP, 0, 255), (TCP, 0, 65535), (UDP, 0, 65535), (ICMPV6, 0, 255), (SCTP, 0, 65535)),
        )
    ]


def test_classes_split_overlaps_and_keep_other() -> None:
    classes = port_classes({(TCP, 80, 80), (TCP, 0, 65535), (UDP, 53, 53), (ICMP, 8, 8), (TCP, 8000, 8080)})
    assert [(c.label, c.proto, c.port) for c in classes] == [
        ("1-79,81-7999,8081-65535/TCP", TCP, 1),
        ("80/TCP", TCP, 80),
        ("8000-8080/TCP", TCP, 8000),
        ("8/ICMP", ICMP, 8),
        ("53/UDP", UDP, 53),
        ("other", UDP, 1),
    ]
    other = classes[-1]
    assert other.contains(UDP, 54) and other.contains(ICMP, 0) and not other.contains(TCP, 5)
    assert not other.contains(UDP, 53)


def test_every_port_is_in_exactly_one_class() -> None:
    ranges = {(TCP, 10, 20), (TCP, 15, 30), (TCP, 25, 25), (SCTP, 0, 65535), (ICMPV6, 128, 128)}
    classes = port_classes(ranges)
    for proto in (TCP, UDP, SCTP):
        for port in (1, 9, 10, 14, 15, 20, 21, 25, 26, 30, 31, 65535):
            assert sum(c.contains(proto, port) for c in classes) == 1, (proto, port)
    assert [c.label for c in classes] == [
        "10-14/TCP",
        "15-20/TCP",
        "21-24,26-30/TCP",
        "25/TCP",
        "128/ICMPv6",
        "*/SCTP",
        "other",
    ]
