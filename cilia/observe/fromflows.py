"""``cilia policy from-flows``: least-privilege CiliumNetworkPolicies that allow exactly the observed
forwarded (and audited) flows.

Each flow is one side's verdict: an egress flow becomes an egress rule of the source pod, an ingress
flow an ingress rule of the destination pod. Pods are grouped by namespace and identity-relevant
labels (the subject's ``endpointSelector``); peers are selected the narrowest way the flow allows:

* a pod: ``fromEndpoints``/``toEndpoints`` with its identity labels and its namespace;
* a node-local reserved identity (host, remote-node, kube-apiserver, health, ingress, init): that
  entity;
* an address outside the cluster: ``fromCIDR``/``toCIDR`` with the single address (/32 or /128);
  on egress, where the flow carries the DNS names the node learned for the address (Hubble's
  ``destination_names``), ``toFQDNs`` ``matchName`` of each name instead: the address may change,
  the name is what the workload asked for.

A ``toFQDNs`` rule selects addresses only once the DNS proxy saw them in answers, so a subject with
such peers gets its DNS traffic (the egress it was seen sending to port 53) as a ``toPorts`` entry
with ``rules.dns``: ``matchName`` of each name it was seen using (the names of its toFQDNs peers and
of its DNS queries). When no DNS flow of the subject was seen, a note says that the rule is missing.

Each peer gets the protocol/ports it was seen on (ICMP types as ``icmps``), so the policy puts the
observed direction into default deny and allows nothing more than what was seen.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from cilia.observe.flow import DnsInfo, Endpoint, Flow, TrafficDirection, Verdict

NS_LABEL = "io.kubernetes.pod.namespace"
# identity labels that describe where a pod is, not what it is: never part of a generated selector
NON_SELECTOR_PREFIXES = (NS_LABEL, "io.cilium.k8s.")
ENTITIES = {
    "host": "host",
    "remote-node": "remote-node",
    "kube-apiserver": "kube-apiserver",
    "health": "health",
    "ingress": "ingress",
    "init": "init",
}
WORLD = ("world", "world-ipv4", "world-ipv6")
MAX_PER_RULE = 40  # ports per PortRule and fields per ICMPRule (semantics.md §5.6)
L4_PROTOCOLS = {6: "TCP", 17: "UDP", 132: "SCTP"}
DNS_PORTS = {(17, 53), (6, 53)}
ICMP_FAMILIES = {1: "IPv4", 58: "IPv6"}


class FromFlowsError(ValueError):
    """No policy can be generated (for example: no forwarded flow of a local pod)."""


@dataclass(frozen=True, order=True)
class PeerSpec:
    """How a peer is selected: ``kind`` endpoints | entity | cidr | fqdn (a DNS name)."""

    kind: str
    value: tuple[tuple[str, str], ...] | str


@dataclass
class _Subject:
    namespace: str
    labels: tuple[tuple[str, str], ...]
    flows: int = 0
    names: set[str] = field(default_factory=set)  # DNS names it was seen using (queries, toFQDNs peers)
    rules: dict[TrafficDirection, dict[PeerSpec, set[tuple[int, int]]]] = field(
        default_factory=lambda: {TrafficDirection.INGRESS: {}, TrafficDirection.EGRESS: {}}
    )


def _parse_labels(labels: Iterable[str]) -> list[tuple[str, str, str]]:
    out = []
    for lb in labels:
        source, _, kv = lb.partition(":")
        key, _, value = kv.partition("=")
        out.append((source, key, value))
    return out


def selector_labels(ep: Endpoint) -> tuple[tuple[str, str], ...]:
    """The identity-relevant ``k8s:`` labels of a pod, as matchLabels items."""
    return tuple(sorted(
        (key, value) for source, key, value in _parse_labels(ep.labels)
        if source == "k8s" and not key.startswith(NON_SELECTOR_PREFIXES)
    ))  # fmt: skip


def peer_spec(ep: Endpoint, ip: str) -> PeerSpec | None:
    """The narrowest selector of a flow's peer; None if the flow does not say enough."""
    parsed = _parse_labels(ep.labels)
    reserved = {key for source, key, _ in parsed if source == "reserved"}
    ns = next((v for s, k, v in parsed if s == "k8s" and k == NS_LABEL), "") or ep.namespace
    if ns and not reserved:
        return PeerSpec("endpoints", (*selector_labels(ep), (f"k8s:{NS_LABEL}", ns)))
    for name, entity in ENTITIES.items():
        if name in reserved:
            return PeerSpec("entity", entity)
    if (reserved & set(WORLD) or any(s == "cidr" for s, _, _ in parsed)) and ip:
        addr = ipaddress.ip_address(ip)
        return PeerSpec("cidr", f"{addr}/{addr.max_prefixlen}")
    return None


def dns_name(name: str) -> str:
    """A DNS name as toFQDNs ``matchName`` takes it: lower case, without the final dot."""
    return name.strip().rstrip(".").lower()


def fqdn_peers(flow: Flow) -> list[PeerSpec]:
    """toFQDNs peers for an egress flow to an outside address whose names the node learned."""
    if flow.traffic_direction is not TrafficDirection.EGRESS:
        return []
    return [PeerSpec("fqdn", n) for n in sorted({dns_name(x) for x in flow.destination_names}) if n]


def _port_key(flow: Flow) -> tuple[int, int]:
    l4 = flow.l4
    return (l4.proto, l4.icmp_type if l4.is_icmp else l4.destination_port)


def collect(
    flows: Iterable[Flow],
) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], _Subject], list[str]]:
    """Group allowed flows by subject and peer; also the reasons flows were skipped."""
    subjects: dict[tuple[str, tuple[tuple[str, str], ...]], _Subject] = {}
    skipped: list[str] = []
    for f in flows:
        if f.verdict not in (Verdict.FORWARDED, Verdict.AUDIT, Verdict.REDIRECTED):
            continue
        owner = f.owner
        if not owner.pod_name or not owner.namespace:
            skipped.append(f"flow {f.seq}: the {f.traffic_direction.value.lower()} side is not a local pod")
            continue
        egress = f.traffic_direction is TrafficDirection.EGRESS
        peer = peer_spec(f.peer, f.ip_destination if egress else f.ip_source)
        if peer is None:
            skipped.append(f"flow {f.seq}: cannot select the peer (identity {f.peer.identity})")
            continue
        proto, port = _port_key(f)
        if proto not in L4_PROTOCOLS and proto not in ICMP_FAMILIES:
            skipped.append(f"flow {f.seq}: protocol {proto} cannot be written as a port rule")
            continue
        key = (owner.namespace, selector_labels(owner))
        subj = subjects.setdefault(key, _Subject(*key))
        subj.flows += 1
        if isinstance(f.l7, DnsInfo) and egress and f.l7.query:
            subj.names.add(dns_name(f.l7.query))
        named = fqdn_peers(f) if peer.kind == "cidr" else []
        for fqdn in named:
            subj.names.add(str(fqdn.value))
        for p in named or [peer]:
            subj.rules[f.traffic_direction].setdefault(p, set()).add((proto, port))
    return subjects, skipped


def _peer_fields(direction: TrafficDirection, peer: PeerSpec) -> dict[str, Any]:
    side = "from" if direction is TrafficDirection.INGRESS else "to"
    if peer.kind == "endpoints":
        return {f"{side}Endpoints": [{"matchLabels": dict(peer.value)}]}  # type: ignore[arg-type]
    if peer.kind == "entity":
        return {f"{side}Entities": [peer.value]}
    if peer.kind == "fqdn":
        return {"toFQDNs": [{"matchName": peer.value}]}
    return {f"{side}CIDR": [peer.value]}


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(items), MAX_PER_RULE):
        yield items[i : i + MAX_PER_RULE]


def _entries(
    direction: TrafficDirection,
    peers: dict[PeerSpec, set[tuple[int, int]]],
    dns_names: Collection[str] = (),
) -> list[dict[str, Any]]:
    """``dns_names``: where toFQDNs peers need the DNS proxy to see lookups, the port-53 ports of
    every peer get ``rules.dns`` allowing these names."""
    out = []
    for peer in sorted(peers):
        ports = sorted(peers[peer])
        l4 = [
            {"port": str(port), "protocol": L4_PROTOCOLS[proto]}
            for proto, port in ports
            if proto in L4_PROTOCOLS and not (dns_names and (proto, port) in DNS_PORTS)
        ]
        dns = [{"port": str(port), "protocol": L4_PROTOCOLS[proto]} for proto, port in ports
               if dns_names and (proto, port) in DNS_PORTS]
        icmp = [{"type": t, "family": ICMP_FAMILIES[proto]} for proto, t in ports if proto in ICMP_FAMILIES]
        if dns:
            rules = {"dns": [{"matchName": name} for name in sorted(dns_names)]}
            out.append({**_peer_fields(direction, peer), "toPorts": [{"ports": dns, "rules": rules}]})
        for chunk in _chunks(l4):
            out.append({**_peer_fields(direction, peer), "toPorts": [{"ports": chunk}]})
        for chunk in _chunks(icmp):
            out.append({**_peer_fields(direction, peer), "icmps": [{"fields": chunk}]})
    return out


def _name(labels: tuple[tuple[str, str], ...], taken: set[tuple[str, str]], namespace: str) -> str:
    values = dict(labels)
    base = (
        values.get("app")
        or values.get("app.kubernetes.io/name")
        or "-".join(v for _, v in labels)
        or "all-pods"
    )
    base = re.sub(r"[^a-z0-9-]+", "-", f"from-flows-{base}".lower()).strip("-")[:240]
    name, n = base, 1
    while (namespace, name) in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add((namespace, name))
    return name


def _selector_text(labels: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels) or "all pods"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def policies_from_flows(flows: Iterable[Flow]) -> tuple[list[dict[str, Any]], list[str]]:
    """CiliumNetworkPolicy documents allowing exactly the forwarded/audited flows, and notes about
    flows that could not be turned into rules. Raises :class:`FromFlowsError` if nothing remains."""
    subjects, skipped = collect(flows)
    if not subjects:
        raise FromFlowsError("no forwarded or audited flow of a local pod to build a policy from")
    taken: set[tuple[str, str]] = set()
    docs = []
    for (ns, labels), subj in sorted(subjects.items()):
        spec: dict[str, Any] = {
            "description": f"generated by cilia policy from-flows from {plural(subj.flows, 'flow')}",
            "endpointSelector": {"matchLabels": dict(labels)} if labels else {},
        }
        egress = subj.rules[TrafficDirection.EGRESS]
        fqdns = any(peer.kind == "fqdn" for peer in egress)
        seen_dns = any(ports & DNS_PORTS for peer, ports in egress.items() if peer.kind != "fqdn")
        if fqdns and not seen_dns:
            skipped.append(
                f"{ns}/{_selector_text(labels)}: toFQDNs rules need a DNS rule (egress to the DNS server on "
                "port 53 with rules.dns) for the DNS proxy to learn the addresses; no DNS flow of these pods "
                "was seen: add one"
            )
        for direction, section in (
            (TrafficDirection.INGRESS, "ingress"),
            (TrafficDirection.EGRESS, "egress"),
        ):
            names = subj.names if fqdns and direction is TrafficDirection.EGRESS else set()
            entries = _entries(direction, subj.rules[direction], names)
            if entries:
                spec[section] = entries
        docs.append({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": _name(labels, taken, ns), "namespace": ns},
            "spec": spec,
        })  # fmt: skip
    return docs, skipped


def to_yaml(docs: list[dict[str, Any]]) -> str:
    """Multi-document YAML, keys in the order written."""
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)
