"""The flow pipeline: crafted ring-buffer records → decoded, enriched, attributed flows (allow,
explicit deny, default deny, world CIDR, audit), the bounded ring, and history across a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_observe import (
    CLIENT,
    EPOCH_OFFSET_NS,
    ICMP,
    TCP,
    UDP,
    WORLD_IP,
    A,
    B,
    Node,
    raw_event,
    seed_node,
)

from cilia.agent.flows import DnsRecord
from cilia.datapath.maps.events import EVENT_SIZE, decode
from cilia.identity.labels import Labels
from cilia.observe.enrich import LocalEndpoint, NodeView
from cilia.observe.flow import L4, Endpoint, Flow, PolicyRef, TrafficDirection, Verdict, flow_from_json
from cilia.observe.pipeline import FlowPipeline
from cilia.policy.types import Direction, DropReason, MatchType, RuleRef
from tests.conftest import REPO

E, IN = Direction.EGRESS, Direction.INGRESS
SYNTHETIC = "reserved:io.cilium.policy.derived-from=default-allow-egress"
NS_LABELS = (
    "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
    "k8s:io.cilium.k8s.policy.cluster=default",
    "k8s:io.kubernetes.pod.namespace=default",
)


def cnp(name: str, rule: str = "", revision: int = 0) -> PolicyRef:
    labels = (
        "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy",
        f"k8s:io.cilium.k8s.policy.name={name}",
        "k8s:io.cilium.k8s.policy.namespace=default",
    )
    return PolicyRef(name, "default", "CiliumNetworkPolicy", labels, revision, rule)


def pod(ep_id: int, identity: int, name: str, app: str) -> Endpoint:
    return Endpoint(ep_id, identity, "default", name, (f"k8s:app={app}", *NS_LABELS))


@pytest.fixture
def node() -> Node:
    return seed_node()


def pipeline(node: Node, **kw: object) -> FlowPipeline:
    return FlowPipeline(node.view, node.cookies.rules_for, clock_offset_ns=EPOCH_OFFSET_NS, **kw)  # type: ignore[arg-type]


def test_decode_crafted_record() -> None:
    data = raw_event(ts_ns=7, ep_id=3, ifindex=9, src_identity=256, dst_identity=2, cookie=5, suppressed=4,
                     src="198.18.0.10", dst="198.19.0.1", sport=40000, dport=443, reason=133, proto=TCP,
                     direction=1, match_type=0, lpm_prefix=0, flags=0)  # fmt: skip
    assert len(data) == EVENT_SIZE
    ev = decode(data)
    assert (ev.ts_ns, ev.endpoint_id, ev.src, ev.dst, ev.sport, ev.dport, ev.direction, ev.allowed,
            ev.reason, ev.cookie, ev.suppressed_before) == (
        7, 3, "198.18.0.10", "198.19.0.1", 40000, 443, E, False, DropReason.POLICY_DENIED, 5, 4)  # fmt: skip


def test_explicit_deny_names_the_deny_rule(node: Node) -> None:
    f = pipeline(node).ingest(node.event(A, B, TCP, 80, E))
    rev = node.engine.revision
    assert f == Flow(
        seq=1, time_ns=EPOCH_OFFSET_NS + 1_001_000_000, verdict=Verdict.DROPPED,
        traffic_direction=TrafficDirection.EGRESS,
        source=pod(1, 256, "app-a-7d4b9", "app-a"), destination=pod(2, 257, "app-b-5c8f2", "app-b"),
        ip_source=A, ip_destination=B, l4=L4(TCP, 43210, 80), drop_reason=DropReason.POLICY_DENY,
        policy_match_type=MatchType.L3_ONLY, node_name="cilia-node-0",
        egress_denied_by=(cnp("deny-app-a-to-app-b", "egressDeny[0]", rev),),
    )  # fmt: skip


def test_allow_names_the_allow_rule_on_each_side(node: Node) -> None:
    p = pipeline(node)
    out = p.ingest(node.event(CLIENT, B, TCP, 80, E))
    inn = p.ingest(node.event(CLIENT, B, TCP, 80, IN))
    rev = node.engine.revision
    assert (out.verdict, out.policy_match_type, out.egress_allowed_by, out.ingress_allowed_by, out.l4) == (
        Verdict.FORWARDED, MatchType.L3_L4, (cnp("client-egress", "egress[0]", rev),), (),
        L4(TCP, 43210, 80, syn=True))  # fmt: skip
    assert (inn.verdict, inn.ingress_allowed_by, inn.egress_allowed_by, inn.seq) == (
        Verdict.FORWARDED,
        (cnp("app-b-ingress-80", "ingress[0]", rev),),
        (),
        2,
    )


def test_default_deny_names_the_policies_that_enabled_it(node: Node) -> None:
    p = pipeline(node)
    world = p.ingest(node.event(WORLD_IP, B, TCP, 80, IN))
    rev = node.engine.revision
    assert (world.verdict, world.drop_reason, world.policy_match_type, world.default_deny_by,
            world.ingress_denied_by, world.world_cidr) == (
        Verdict.DROPPED, DropReason.POLICY_DENIED, MatchType.NONE, (cnp("app-b-ingress-80", "", rev),), (),
        "198.19.0.0/16")  # fmt: skip
    assert world.source == Endpoint(0, node.world_id, "", "", ("cidr:198.19.0.0/16", "reserved:world"))
    lateral = p.ingest(node.event(CLIENT, A, TCP, 8080, E))
    assert (lateral.default_deny_by, lateral.world_cidr) == ((cnp("client-egress", "", rev),), "")


def test_world_peer_names_the_matching_cidr(node: Node) -> None:
    f = pipeline(node).ingest(node.event(CLIENT, WORLD_IP, UDP, 53, E))
    assert (f.verdict, f.world_cidr, f.egress_allowed_by[0].rule, f.l4) == (
        Verdict.FORWARDED,
        "198.19.0.0/16",
        "egress[1]",
        L4(UDP, 43210, 53),
    )


def test_icmp_type_and_synthetic_allow(node: Node) -> None:
    f = pipeline(node).ingest(node.event(A, CLIENT, ICMP, 8, E))
    assert (f.verdict, f.l4, f.policy_match_type, f.egress_allowed_by) == (
        Verdict.FORWARDED, L4(ICMP, icmp_type=8), MatchType.ALL,
        (PolicyRef("default-allow-egress", "", "reserved", (SYNTHETIC,), node.engine.revision),))  # fmt: skip


def test_unknown_peer_without_view_keeps_numbers() -> None:
    p = FlowPipeline(clock_offset_ns=0)
    f = p.ingest(raw_event(src="198.18.0.1", dst="198.18.0.2", src_identity=1, dst_identity=300, proto=TCP,
                           sport=1, dport=2, direction=0, reason=133, ts_ns=5))  # fmt: skip
    assert (f.source, f.destination, f.default_deny_by, f.time_ns) == (
        Endpoint(0, 1, "", "", ("reserved:host",)),
        Endpoint(0, 300),
        (),
        5,
    )


# ------------------------------------------------------------------------------------------ audit

AUDIT_DENY_DNS = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: audit-no-world-dns
  namespace: default
  annotations: {cilia.io/audit: "true"}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egressDeny:
  - toCIDR: ["198.19.0.0/16"]
    toPorts: [{ports: [{port: "53", protocol: UDP}]}]
"""

AUDIT_A_INGRESS = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: audit-a-ingress
  namespace: default
  annotations: {cilia.io/audit: "true"}
spec:
  endpointSelector: {matchLabels: {app: app-a}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
"""


def test_policy_audit_reports_what_only_audited_policies_drop(node: Node) -> None:
    node.apply(AUDIT_DENY_DNS)
    node.apply(AUDIT_A_INGRESS)
    p = pipeline(node)
    rev = node.engine.revision
    # the kernel forwards it (audited policies are not installed); the full policy denies it
    dns = p.ingest(node.event(CLIENT, WORLD_IP, UDP, 53, E))
    assert (dns.verdict, dns.drop_reason, dns.egress_denied_by, dns.egress_allowed_by) == (
        Verdict.AUDIT,
        DropReason.POLICY_DENY,
        (cnp("audit-no-world-dns", "egressDeny[0]", rev),),
        (),
    )
    # only the audited policy puts app-a's ingress into default deny
    web = p.ingest(node.event(CLIENT, A, TCP, 80, IN))
    assert (web.verdict, web.drop_reason, web.default_deny_by) == (
        Verdict.AUDIT,
        DropReason.POLICY_DENIED,
        (cnp("audit-a-ingress", "", rev),),
    )
    # allowed by the audited policy too: plain FORWARDED
    tls = p.ingest(node.event(CLIENT, A, TCP, 443, IN))
    assert (tls.verdict, tls.drop_reason) == (Verdict.FORWARDED, DropReason.NONE)
    # a drop of an enforced policy stays a drop
    deny = p.ingest(node.event(A, B, TCP, 80, E))
    assert (deny.verdict, deny.egress_denied_by[0].name) == (Verdict.DROPPED, "deny-app-a-to-app-b")
    # audited policies never reach the enforced MapState
    enforced = node.engine.policy(node.pods["client-0"].identity)
    assert all(r.kind != "CiliumNetworkPolicy" or not r.name.startswith("audit") for r in enforced.rules)


def test_node_audit_flag_from_the_kernel(node: Node) -> None:
    f = pipeline(node).ingest(node.event(A, B, TCP, 80, E, node_audit=True))
    assert (f.verdict, f.drop_reason, f.egress_denied_by[0].rule, f.l4.syn) == (
        Verdict.AUDIT,
        DropReason.POLICY_DENY,
        "egressDeny[0]",
        False,
    )


# ------------------------------------------------------------------------------- ring and restart


def test_ring_is_bounded_and_resumable(node: Node) -> None:
    p = pipeline(node, capacity=5)
    for _ in range(12):
        p.ingest(node.event(CLIENT, B, TCP, 80, E))
    snap = p.snapshot(0, 100)
    assert [f["seq"] for f in snap["flows"]] == [8, 9, 10, 11, 12]
    assert [f["seq"] for f in p.snapshot(10, 100)["flows"]] == [11, 12]
    assert snap["last_seq"] == 12


def test_flows_survive_a_restart(node: Node, tmp_path: Path) -> None:
    p1 = pipeline(node, state_dir=tmp_path, capacity=4)
    first = [p1.ingest(node.event(CLIENT, B, TCP, 80, E, suppressed=i)) for i in range(6)]
    p1.close()
    p2 = pipeline(node, state_dir=tmp_path, capacity=4)
    assert [flow_from_json(d) for d in p2.snapshot(0, 100)["flows"]] == first[-4:]
    nxt = p2.ingest(node.event(A, B, TCP, 80, E))
    assert nxt.seq == 7
    assert list(p2.log.read()) == [*first, nxt]  # type: ignore[union-attr]


def test_suppressed_counts_and_unknown_cookies(node: Node) -> None:
    p = FlowPipeline(NodeView, lambda c: None, clock_offset_ns=0)
    p.ingest(node.event(CLIENT, B, TCP, 80, E, suppressed=3))
    p.ingest(node.event(CLIENT, B, TCP, 80, E, suppressed=2))
    assert (p.suppressed, p.unknown_cookies, p.snapshot(0, 0)["suppressed"]) == (5, 2, 5)


def test_rule_ref_spec_index_is_kept() -> None:
    ref = PolicyRef.of(RuleRef("CiliumClusterwideNetworkPolicy", "", "cw", "ingress", 2, 1), 9)
    assert (ref.describe(), ref.labels) == (
        "CiliumClusterwideNetworkPolicy cw specs[1].ingress[2]",
        ("k8s:io.cilium.k8s.policy.derived-from=CiliumClusterwideNetworkPolicy",
         "k8s:io.cilium.k8s.policy.name=cw"))  # fmt: skip


def test_drops_before_any_policy_lookup_name_no_rule(node: Node) -> None:
    from cilia.datapath.maps.events import F_NOT_READY
    from cilia.observe.render import compact

    p = pipeline(node)
    f = p.ingest(raw_event(src=CLIENT, dst=B, src_identity=258, dst_identity=257, proto=TCP, sport=1,
                           dport=80, direction=1, reason=133, ep_id=3, flags=F_NOT_READY))  # fmt: skip
    assert (f.verdict, f.drop_reason, f.default_deny_by, f.egress_denied_by, f.note) == (
        Verdict.DROPPED, DropReason.POLICY_DENIED, (), (),
        "endpoint policy not ready: dropped until its first policy is installed")  # fmt: skip
    assert compact(f).endswith(
        "Policy denied: endpoint policy not ready: dropped until its first policy is installed"
    )
    assert flow_from_json(f.to_json()) == f


# ------------------------------------------------------------------------------------------ DNS


def test_dns_proxy_records_become_the_l7_flows_observe_shows() -> None:
    client, server = ("198.18.0.10", 40001), ("198.19.0.53", 53)
    view = NodeView(
        endpoints={"198.18.0.10": LocalEndpoint(3, 1234, "default", "client-5b8f7-x2k9q", "198.18.0.10")},
        identities={1234: Labels.parse(["k8s:app=client"]),
                    16777217: Labels.parse(["cidr:198.19.0.53/32", "reserved:world"])},
        node_name="node-1",
    )
    p = FlowPipeline(lambda: view, clock_offset_ns=0)
    base = {"time_ns": 1_795_000_001_500_000_000, "client": client, "server": server, "proto": UDP,
            "client_identity": 1234, "server_identity": 16777217}
    flows = [
        p.ingest_dns(DnsRecord(response=False, query="web.example.test", **base)),
        p.ingest_dns(DnsRecord(response=True, query="web.example.test", ips=("198.19.0.5",), ttl=30,
                               latency_ns=1_200_000, **base)),
        p.ingest_dns(DnsRecord(response=True, query="evil.test", rcode=5, refused=True, **base)),
    ]
    golden = (REPO / "tests/golden/observe/dns.jsonl").read_text().splitlines()
    assert [f.to_json() for f in flows] == [json.loads(line) for line in golden]
    assert [f.seq for f in p.ring.since(0, -1)] == [1, 2, 3]
    aaaa = p.ingest_dns(DnsRecord(response=False, query="x.test", qtype=28, **base)).l7
    assert aaaa is not None and aaaa.qtypes == ("AAAA",)
