"""Offline toFQDNs: what a node learned from DNS answers (its saved cache, written by the agent's own
code on a simulated node) decides toFQDNs rules in the analysis as on that node — by matchName, by
matchPattern, not after the TTL; fqdn:NAME peers, IP peers the node learned, and the errors and notes
when nothing was learned. Every offline verdict is compared with the node's own (sim datapath)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cilia.agent.fqdn import learn
from cilia.analyze.cluster import Analysis, analyse_paths, rule_fqdn_selectors
from cilia.analyze.flow import EndKind
from cilia.analyze.learned import LearnedAddress, NodeDns, NodeStateError
from cilia.analyze.peers import PeerError, PeerKind, PeerSpec, PortSpec, parse_peer
from cilia.analyze.trace import trace
from cilia.policy.types import DropReason, Proto
from tests.helpers_fqdn import CLIENT, DNS_RULE, Node, _obj

API, CDN, OTHER, OLD = "198.19.0.5", "198.19.0.6", "198.19.0.7", "198.19.0.8"
UNKNOWN = "198.19.0.9"

POLICY = _obj("CiliumNetworkPolicy", "fqdn", {
    "endpointSelector": {"matchLabels": {"app": "client"}},
    "egress": [
        DNS_RULE,
        {"toFQDNs": [{"matchName": "api.example.com"}],
         "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]},
        {"toFQDNs": [{"matchPattern": "*.example.org"}],
         "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]},
    ]})
SELECTORS = ("*.example.org", "api.example.com")  # the DNS rule's matchPattern "*" is not a toFQDNs one


def learned_node(tmp_path: Path, docs: tuple[dict[str, Any], ...] = (CLIENT, POLICY)) -> Node:
    """A simulated node that resolved four names at t=1000: api (matchName), cdn (matchPattern),
    other (no selector), old (TTL 5 s)."""
    node = Node(tmp_path / "node")
    node.apply(*docs)
    learn(node.rec, node.state, "api.example.com", {API: 60})
    learn(node.rec, node.state, "cdn.example.org", {CDN: 60})
    learn(node.rec, node.state, "other.example.net", {OTHER: 60})
    learn(node.rec, node.state, "old.example.org", {OLD: 5})
    (tmp_path / "m.yaml").write_text(yaml.safe_dump_all(docs))
    return node


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return learned_node(tmp_path)


def offline(tmp_path: Path, now: float, state: bool = True) -> Analysis:
    dns = NodeDns(tmp_path / "node" if state else None, now=now)
    return analyse_paths([tmp_path / "m.yaml"], dns=dns)


def verdict(a: Analysis, dst: str, port: int) -> bool:
    return trace(a, "default/client", dst, PortSpec(Proto.TCP, port)).allowed


def test_fqdn_peer_parsing() -> None:
    assert parse_peer("fqdn:API.Example.com.") == PeerSpec(PeerKind.FQDN, "fqdn:API.Example.com.",
                                                           name="api.example.com")
    for text, message in [("fqdn:*.example.com", "not a pattern"), ("fqdn:", "expected fqdn:NAME"),
                          ("fqdn:a b", "expected fqdn:NAME"), ("fqdn:-x.com", "expected fqdn:NAME")]:
        with pytest.raises(PeerError, match=message):
            parse_peer(text)


def test_selectors_and_learned_identities(node: Node, tmp_path: Path) -> None:
    a = offline(tmp_path, now=1010)
    assert a.fqdn_selectors == SELECTORS
    assert rule_fqdn_selectors(a.rules) == SELECTORS
    learned = {ip: found for ip, (found, _) in a.learned.items()}
    assert learned == {
        API: LearnedAddress(API, ("api.example.com",), ("api.example.com",)),
        CDN: LearnedAddress(CDN, ("cdn.example.org",), ("*.example.org",)),
    }
    # the label sets the node gave them (OTHER has no selector, OLD expired at t=1005)
    node.expire(1010)
    assert {ip: a.labels_of(ident) for ip, (_, ident) in a.learned.items()} == {
        ip: node.rec.allocator.identities()[ident] for ip, ident in node.state.identities.items()}
    (other,) = a.resolve(OTHER)
    assert (other.identity, other.learned) == (2, LearnedAddress(OTHER, ("other.example.net",), ()))


@pytest.mark.parametrize(("dst", "port", "allowed"), [
    ("fqdn:api.example.com", 80, True),  # matchName
    ("fqdn:api.example.com", 443, False),
    ("fqdn:cdn.example.org", 443, True),  # matchPattern *.example.org
    ("fqdn:cdn.example.org", 80, False),
    (API, 80, True),  # an IP peer the node learned: the same identity
    (CDN, 443, True),
    ("fqdn:other.example.net", 80, False),  # learned, but no selector of these ports matches
    (OTHER, 443, False),
    (OLD, 443, False),  # expired at t=1005
    (UNKNOWN, 80, False),
])
def test_offline_agrees_with_the_node(node: Node, tmp_path: Path, dst: str, port: int, allowed: bool) -> None:
    node.expire(1010)
    ip = node.state.cache.lookup(dst.removeprefix("fqdn:"), 1010)[0] if dst.startswith("fqdn:") else dst
    assert node.allowed(ip, port) is allowed
    assert verdict(offline(tmp_path, now=1010), dst, port) is allowed


def test_a_name_expires_offline_as_on_the_node(node: Node, tmp_path: Path) -> None:
    assert verdict(offline(tmp_path, now=1004), "fqdn:old.example.org", 443)
    assert verdict(offline(tmp_path, now=1004), OLD, 443)
    assert node.allowed(OLD, 443)
    # past the TTL, before the node's timer collected it (the file still holds the answer)
    a = offline(tmp_path, now=1005)
    assert not verdict(a, OLD, 443)
    with pytest.raises(PeerError) as err:
        a.resolve("fqdn:old.example.org")
    assert str(err.value) == (
        f"no address learned for old.example.org on this node (state dir {tmp_path / 'node'}; its last "
        "answer expired at 1970-01-01T00:16:45Z); toFQDNs rules are decided by DNS answers: look the "
        "name up from a pod first, or trace to its IP")
    node.expire(1005)
    assert not node.allowed(OLD, 443)
    a = offline(tmp_path, now=1005)
    assert not verdict(a, OLD, 443)
    with pytest.raises(PeerError) as err:
        a.resolve("fqdn:old.example.org")
    assert f"(state dir {tmp_path / 'node'}); toFQDNs rules" in str(err.value)  # no answer left to date


def test_nothing_learned_errors(node: Node, tmp_path: Path) -> None:
    a = offline(tmp_path, now=1010)
    with pytest.raises(PeerError) as err:
        a.resolve("fqdn:never.example.com")
    assert str(err.value) == (
        f"no address learned for never.example.com on this node (state dir {tmp_path / 'node'}); "
        "toFQDNs rules are decided by DNS answers: look the name up from a pod first, or trace to its IP")
    with pytest.raises(PeerError, match=r"\(no node state read: --no-state\)"):
        offline(tmp_path, now=1010, state=False).resolve("fqdn:api.example.com")
    # an absent file is nothing learned, not an error
    empty = analyse_paths([tmp_path / "m.yaml"], dns=NodeDns(tmp_path / "elsewhere", now=1010))
    assert empty.learned == {} and not verdict(empty, API, 80)


def test_a_damaged_cache_is_an_error_naming_the_file(node: Node, tmp_path: Path) -> None:
    (tmp_path / "node" / "fqdn.json").write_text("{not json")
    with pytest.raises(NodeStateError, match=r"node/fqdn\.json.*--no-state analyses without it"):
        offline(tmp_path, now=1010)


def test_default_deny_to_an_address_toFQDNs_did_not_apply_to_says_so(node: Node, tmp_path: Path) -> None:
    a = offline(tmp_path, now=1010)
    (flow,) = trace(a, "default/client", UNKNOWN, PortSpec(Proto.TCP, 80)).flows
    assert (flow.allowed, flow.egress.reason, flow.dst.learned) == (False, DropReason.POLICY_DENIED, None)
    assert flow.notes == (
        f"toFQDNs rules (*.example.org, api.example.com) were not applied to {UNKNOWN}: no node "
        f"learned it from a DNS answer (state dir {tmp_path / 'node'}); on a node, a pod's lookup of a "
        "selected name through the DNS proxy gives its addresses fqdn identities (then trace --to "
        "fqdn:NAME)",)
    # learned, selected: the rules applied (no note even though this port is denied)
    (flow,) = trace(a, "default/client", "fqdn:api.example.com", PortSpec(Proto.TCP, 443)).flows
    assert (flow.allowed, flow.notes) == (False, ())
    assert (flow.dst.kind, flow.dst.name, flow.dst.to_dict()["fqdn"]) == (
        EndKind.EXTERNAL, API, {"names": ["api.example.com"], "selectors": ["api.example.com"]})
