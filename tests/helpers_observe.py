"""A small node for the observe tests: pods with identities, policies through the real engine, and
datapath events crafted byte for byte (layout of cilia/datapath/maps/events.py) from the verdicts the
sim lookup gives, with rule cookies from a real cookie table."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cilia.datapath.bpf.cookies import CookieTable
from cilia.datapath.maps.events import F_ALLOWED, F_AUDITED, F_EXACT, RawEvent
from cilia.datapath.sim import policy_lookup
from cilia.identity.allocator import LocalAllocator
from cilia.identity.cidr import cidr_identity_labels
from cilia.identity.podlabels import pod_identity_labels
from cilia.k8s import api
from cilia.observe.audit import AuditRules, split
from cilia.observe.enrich import LocalEndpoint, NodeView
from cilia.policy.engine import PolicyEngine
from cilia.policy.repository import ResourceKey
from cilia.policy.translate import translate
from cilia.policy.types import Direction

TCP, UDP, ICMP = 6, 17, 1
EPOCH_OFFSET_NS = 1_795_000_000_000_000_000  # 2026-11-19: a fixed wall clock for golden output
WORLD_PREFIX = "198.19.0.0/16"


def raw_event(**fields: Any) -> bytes:
    """A ring-buffer record; addresses as strings, ports in host order."""
    r = RawEvent()
    family = 6 if ":" in fields.get("src", "0.0.0.0") else 4
    r.family = family
    for name in ("saddr", "daddr"):
        text = fields.pop("src" if name == "saddr" else "dst", None)
        if text is not None:
            packed = ipaddress.ip_address(text).packed
            getattr(r, name)[: len(packed)] = packed
    for name in ("sport", "dport"):
        if name in fields:
            setattr(r, name, socket.htons(fields.pop(name)))
    for k, v in fields.items():
        setattr(r, k, v)
    return bytes(r)


@dataclass
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    ip: str
    endpoint_id: int = 0
    identity: int = 0


@dataclass
class Node:
    """Pods + policies → engine; ``event(...)`` crafts the event the datapath would emit."""

    alloc: LocalAllocator = field(default_factory=LocalAllocator)
    pods: dict[str, Pod] = field(default_factory=dict)
    cookies: CookieTable = field(default_factory=lambda: CookieTable(None))
    audit: AuditRules = field(default_factory=AuditRules)
    ts_ns: int = 1_000_000_000

    def __post_init__(self) -> None:
        self.engine = PolicyEngine(identities=self.alloc.identities())
        self.world_id = self.alloc.allocate(cidr_identity_labels(WORLD_PREFIX))
        self.engine.add_identity(self.world_id, self.alloc.lookup(self.world_id))

    def add_pod(self, name: str, labels: dict[str, str], ip: str, namespace: str = "default") -> Pod:
        ident = self.alloc.allocate(pod_identity_labels(labels, namespace))
        self.engine.add_identity(ident, self.alloc.lookup(ident))
        self.engine.add_endpoint(ident)
        pod = Pod(name, namespace, labels, ip, len(self.pods) + 1, ident)
        self.pods[name] = pod
        return pod

    def apply(self, text: str) -> None:
        for doc in yaml.safe_load_all(text):
            model: Any = api.NetworkPolicy if doc["kind"] == "NetworkPolicy" else api.CiliumNetworkPolicy
            rules = translate(model.model_validate(doc))
            enforce, audited = split(rules)
            key = ResourceKey(rules[0].ref.kind, rules[0].ref.namespace, rules[0].ref.name)
            self.engine.apply(key, enforce)
            self.audit.set(key, audited)

    def view(self) -> NodeView:
        policies = {p.identity: self.engine.policy(p.identity) for p in self.pods.values()}
        audit = {}
        for ident, pol in policies.items():
            full = self.audit.full_policy(pol, self.engine.cache.identities, self.engine.options)
            if full is not None:
                audit[ident] = full
        return NodeView(
            endpoints={
                p.ip: LocalEndpoint(p.endpoint_id, p.identity, p.namespace, p.name, p.ip)
                for p in self.pods.values()
            },
            identities=dict(self.alloc.identities()),
            prefixes={WORLD_PREFIX: self.world_id},
            policies=policies,
            audit_policies=audit,
            revision=self.engine.revision,
            node_name="cilia-node-0",
        )

    def identity_of(self, ip: str) -> int:
        for p in self.pods.values():
            if p.ip == ip:
                return p.identity
        return self.world_id

    def event(
        self,
        src: str,
        dst: str,
        proto: int,
        dport: int,
        direction: Direction,
        *,
        sport: int = 43210,
        node_audit: bool = False,
        suppressed: int = 0,
    ) -> bytes:
        """The event the owner side's datapath emits for this packet (decided by the sim lookup on
        the engine's MapState; the cookie names the deciding entry's rules)."""
        src_id, dst_id = self.identity_of(src), self.identity_of(dst)
        owner_ip, peer_id = (src, dst_id) if direction == Direction.EGRESS else (dst, src_id)
        owner = next(p for p in self.pods.values() if p.ip == owner_ip)
        v = policy_lookup(
            self.engine.policy(owner.identity).map_state,
            peer_id,
            int(direction),
            proto,
            dport,
            audit=node_audit,
        )
        flags = (F_ALLOWED if v.allowed else 0) | (F_AUDITED if v.audited else 0)
        if v.key is not None and v.key.identity != 0:
            flags |= F_EXACT
        self.ts_ns += 1_000_000
        return raw_event(
            ts_ns=self.ts_ns, ep_id=owner.endpoint_id, ifindex=100 + owner.endpoint_id, src_identity=src_id,
            dst_identity=dst_id, cookie=self.cookies.cookie_for(v.entry.rules) if v.entry else 0,
            suppressed=suppressed, src=src, dst=dst, sport=0 if proto == ICMP else sport, dport=dport,
            reason=int(v.reason), proto=proto, direction=int(direction), match_type=int(v.match_type),
            lpm_prefix=v.key.lpm_prefix if v.key else 0, flags=flags,
        )  # fmt: skip


DENY_A_TO_B = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: deny-app-a-to-app-b, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: app-a}}
  enableDefaultDeny: {egress: false}
  egressDeny:
  - toEndpoints: [{matchLabels: {app: app-b}}]
"""

B_INGRESS_80 = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: app-b-ingress-80, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: app-b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"""

CLIENT_EGRESS = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: client-egress, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: app-b}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - toCIDR: ["198.19.0.0/16"]
"""

A, B, CLIENT, WORLD_IP = "198.18.0.10", "198.18.0.20", "198.18.0.30", "198.19.0.1"


def seed_node() -> Node:
    """app-a, app-b and a client pod, with the three policies above."""
    node = Node()
    node.add_pod("app-a-7d4b9", {"app": "app-a"}, A)
    node.add_pod("app-b-5c8f2", {"app": "app-b"}, B)
    node.add_pod("client-0", {"app": "client"}, CLIENT)
    node.apply(DENY_A_TO_B)
    node.apply(B_INGRESS_80)
    node.apply(CLIENT_EGRESS)
    return node


def seed_flows(node: Node | None = None) -> list[Any]:
    """A fixed sequence of flows of the seed node: deny, allows on both sides, default deny from the
    world, world egress, lateral default deny, ICMP, and a flow after suppressed events."""
    from cilia.observe.pipeline import FlowPipeline

    node = node or seed_node()
    p = FlowPipeline(node.view, node.cookies.rules_for, clock_offset_ns=EPOCH_OFFSET_NS)
    eg, ing = Direction.EGRESS, Direction.INGRESS
    events = [
        node.event(A, B, TCP, 80, eg),
        node.event(CLIENT, B, TCP, 80, eg),
        node.event(CLIENT, B, TCP, 80, ing),
        node.event(WORLD_IP, B, TCP, 80, ing, sport=51000),
        node.event(CLIENT, WORLD_IP, UDP, 53, eg),
        node.event(CLIENT, A, TCP, 8080, eg),
        node.event(A, CLIENT, ICMP, 8, eg),
        node.event(A, B, TCP, 80, eg, sport=43300, suppressed=7),
    ]
    return [p.ingest(e) for e in events]


GOLDEN = Path(__file__).resolve().parent / "golden" / "observe"


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/observe/<name> exactly (write it with CILIA_UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if os.environ.get("CILIA_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with CILIA_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{path} differs; CILIA_UPDATE_GOLDEN=1 to accept"
