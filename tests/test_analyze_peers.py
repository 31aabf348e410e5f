"""PEER and PORT argument parsing."""

from __future__ import annotations

import pytest

from cilia.analyze.peers import PeerError, PeerKind, PeerSpec, PortSpec, parse_peer, parse_port
from cilia.policy.types import Proto


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default/app-a", PeerSpec(PeerKind.POD, "default/app-a", namespace="default", name="app-a")),
        ("app-a-7d", PeerSpec(PeerKind.POD, "app-a-7d", namespace="default", name="app-a-7d")),
        ("prod/db-0", PeerSpec(PeerKind.POD, "prod/db-0", namespace="prod", name="db-0")),
        (
            "deployment:prod/backend",
            PeerSpec(PeerKind.DEPLOYMENT, "deployment:prod/backend", namespace="prod", name="backend"),
        ),
        (
            "deployment:app-b",
            PeerSpec(PeerKind.DEPLOYMENT, "deployment:app-b", namespace="default", name="app-b"),
        ),
        ("198.19.0.7", PeerSpec(PeerKind.IP, "198.19.0.7", ip="198.19.0.7")),
        ("2001:db8::0001", PeerSpec(PeerKind.IP, "2001:db8::0001", ip="2001:db8::1")),
        ("entity:world", PeerSpec(PeerKind.ENTITY, "entity:world", name="world")),
        ("entity:kube-apiserver", PeerSpec(PeerKind.ENTITY, "entity:kube-apiserver", name="kube-apiserver")),
        (" entity:host ", PeerSpec(PeerKind.ENTITY, "entity:host", name="host")),
    ],
)
def test_parse_peer(text: str, expected: PeerSpec) -> None:
    assert parse_peer(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty peer"),
        ("entity:cluster", "unknown entity 'cluster'"),
        ("entity:all", "unknown entity 'all'"),
        ("pod:default/x", "expected NAMESPACE/POD"),
        ("a/b/c", "expected NAMESPACE/NAME"),
        ("/app", "expected NAMESPACE/NAME"),
        ("deployment:prod/", "expected NAMESPACE/NAME"),
        ("10.0.0.0/8", "name one inside 10.0.0.0/8, e.g. 10.0.0.1"),
    ],
)
def test_parse_peer_errors(text: str, message: str) -> None:
    with pytest.raises(PeerError, match=message.replace("(", r"\(")):
        parse_peer(text)


@pytest.mark.parametrize(
    ("text", "protocol", "expected"),
    [
        ("80/TCP", None, PortSpec(Proto.TCP, 80)),
        ("53/udp", None, PortSpec(Proto.UDP, 53)),
        ("5432", None, PortSpec(Proto.TCP, 5432)),
        ("5432", "SCTP", PortSpec(Proto.SCTP, 5432)),
        ("8/ICMP", None, PortSpec(Proto.ICMP, 8)),
        ("0", "ICMP", PortSpec(Proto.ICMP, 0)),
        ("128/ICMPv6", None, PortSpec(Proto.ICMPV6, 128)),
        ("65535/TCP", "tcp", PortSpec(Proto.TCP, 65535)),
    ],
)
def test_parse_port(text: str, protocol: str | None, expected: PortSpec) -> None:
    assert parse_port(text, protocol) == expected


def test_port_str() -> None:
    assert [str(PortSpec(Proto.TCP, 80)), str(PortSpec(Proto.ICMPV6, 128))] == ["80/TCP", "128/ICMPv6"]


@pytest.mark.parametrize(
    ("text", "protocol", "message"),
    [
        ("80/GRE", None, "unknown protocol 'GRE'"),
        ("http/TCP", None, "bad port 'http/TCP'"),
        ("0/TCP", None, "must be 1..65535"),
        ("65536", None, "must be 1..65535"),
        ("256/ICMP", None, "bad ICMP type 256"),
        ("80/TCP", "UDP", "contradicts protocol"),
    ],
)
def test_parse_port_errors(text: str, protocol: str | None, message: str) -> None:
    with pytest.raises(PeerError, match=message):
        parse_port(text, protocol)
