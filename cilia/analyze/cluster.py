"""The offline cluster: manifests → pods with identities, policy rules, and each identity's policy.

:class:`Analysis` is what trace, connectivity, verify and lint work on. It holds the loaded objects,
allocates identities exactly as a node would (pod labels §2.3/§2.4, reserved identities, one CIDR
identity per prefix the policies name §3.3, and — given what a node learned from DNS answers
(:class:`cilia.analyze.learned.NodeDns`) — an fqdn identity per learned address that a toFQDNs
selector of the policies selects, §7), translates the policies into rules and asks the engine
for each identity's :class:`SidePolicy` (enforcement, default-deny attribution, MapState lookup).
No store, no root, no kernel.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import field, replace
from functools import cached_property
from pathlib import Path
from typing import IO

from cilia.analyze import engine_adapter
from cilia.analyze.cidrgroups import cidr_group_ends
from cilia.analyze.flow import EndKind, FlowEnd
from cilia.analyze.learned import LearnedAddress, NodeDns
from cilia.analyze.manifests import load_cluster
from cilia.analyze.nodes import NodeInfo, NodeSet, apiserver_ips
from cilia.analyze.peers import PEER_ENTITIES, PeerError, PeerKind, PeerSpec, parse_peer
from cilia.identity.allocator import LocalAllocator
from cilia.identity.cidr import inherited_group_labels, prefix_identity_labels
from cilia.identity.fqdn import fqdn_identity_labels
from cilia.identity.labels import Labels
from cilia.identity.podlabels import DEFAULT_SERVICE_ACCOUNT, pod_identity_labels
from cilia.identity.reserved import RESERVED_LABELS, ReservedIdentity
from cilia.k8s.cilium_rules import Flags
from cilia.k8s.frozen import frozen
from cilia.k8s.objects import Cluster, Pod
from cilia.policy.engine import rule_prefixes
from cilia.policy.resolve import AllowLocalhost, EnforcementMode, EngineOptions
from cilia.policy.rules import PolicyRule
from cilia.policy.types import Direction

_DS_SUFFIX = r"[bcdfghjklmnpqrstvwxz2456789]{5}"  # Kubernetes' random name suffix alphabet (re's cache)


@frozen
class Options:
    """Node settings that change verdicts (semantics.md "Choices")."""

    enforcement_mode: EnforcementMode = EnforcementMode.DEFAULT
    allow_localhost: AllowLocalhost = AllowLocalhost.ALWAYS
    # --enable-node-selector-labels: fromNodes/toNodes allowed, remote nodes keep their labels
    node_selector_labels: bool = False
    # --node-labels: label prefix patterns of the remote nodes' labels kept (none: all of them)
    node_labels: tuple[str, ...] = ()
    # --node: the Node the analysis decides as (entity:host, pods without nodeName, the host row)
    local_node: str = ""
    # enable-host-firewall: host policies (CCNP nodeSelector) are enforced on the nodes. None: on
    # when the manifests have a host policy (whoever writes one means it to be enforced), else off
    # as Cilium's default (with it on, enforcement mode always would deny all of a host's traffic)
    host_firewall: bool | None = None

    def engine_options(self, host_policies: bool = False) -> EngineOptions:
        """The same settings as the policy engine takes them (``host_policies``: the rules have
        some, which turns the host firewall on unless :attr:`host_firewall` says otherwise)."""
        return EngineOptions(
            enforcement=EnforcementMode(self.enforcement_mode),
            allow_localhost=AllowLocalhost(self.allow_localhost) is AllowLocalhost.ALWAYS,
            host_firewall=host_policies if self.host_firewall is None else self.host_firewall,
        )

    @property
    def flags(self) -> Flags:
        """The agent flags validation judges the manifests with."""
        return Flags(node_selector_labels=self.node_selector_labels)


@frozen
class PodEndpoint:
    """A pod as an endpoint: its identity number and label set."""

    pod: Pod
    identity: int
    labels: Labels = field(compare=False)

    @property
    def name(self) -> str:
        return f"{self.pod.namespace}/{self.pod.name}"

    @property
    def deployment(self) -> str:
        owner = self.pod.owner or ""
        return owner.removeprefix("Deployment/") if owner.startswith("Deployment/") else ""


def rule_fqdn_selectors(rules: Iterable[PolicyRule]) -> tuple[str, ...]:
    """Every toFQDNs selector (matchName or matchPattern) of the rules, as a node collects them."""
    return tuple(sorted({p for rule in rules for e in rule.entries for p in e.fqdn_patterns if p}))


class Analysis:
    """One loaded cluster, ready for flow questions (build it from a Cluster, or with
    :func:`analyse_paths`)."""

    def __init__(
        self,
        cluster: Cluster,
        options: Options = Options(),
        cluster_name: str = "default",
        dns: NodeDns | None = None,
    ) -> None:
        self.cluster = cluster
        self.options = options
        self.cluster_name = cluster_name
        self.dns = dns  # what a node learned from DNS answers (None: nothing)
        self.allocator = LocalAllocator()
        ns_labels = {ns.name: ns.label_map for ns in cluster.namespaces}
        try:
            self.nodes = NodeSet(
                cluster.nodes,
                apiserver_ips(cluster),
                options.node_selector_labels,
                options.node_labels,
                options.local_node,
            )
        except ValueError as exc:  # --node naming no Node: bad input
            raise PeerError(str(exc)) from None
        local = self.nodes.local
        if local is not None:  # the host identity carries the local node's labels
            self.allocator.allocate(local.host)
        # hostNetwork pods have no endpoint (nor identity) of their own: they are their node
        self.host_network_pods: tuple[Pod, ...] = tuple(p for p in cluster.pods if p.host_network)
        endpoints = []
        # Replicas share their labels: compute each distinct label set once.
        known: dict[tuple[tuple[tuple[str, str], ...], str, str], tuple[Labels, int]] = {}
        for pod in sorted(cluster.pods, key=lambda p: (p.namespace, p.name)):
            if pod.host_network:
                continue
            sa = pod.service_account or DEFAULT_SERVICE_ACCOUNT
            memo_key = (pod.labels, pod.namespace, sa)
            found = known.get(memo_key)
            if found is None:
                labels = pod_identity_labels(
                    pod.label_map, pod.namespace, ns_labels.get(pod.namespace), sa, cluster_name
                )
                found = known[memo_key] = (labels, self.allocator.allocate(labels))
            endpoints.append(PodEndpoint(pod, found[1], found[0]))
        self.endpoints: tuple[PodEndpoint, ...] = tuple(endpoints)
        self.prefixes = rule_prefixes(self.rules)
        self._cidr_ids: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]] = []
        # the policies' prefixes and the CIDR groups', labelled as a node's ipcache labels them
        groups = [(g.name, g.selector_labels, g.cidrs) for g in cluster.cidr_groups]
        self.prefix_labels = prefix_identity_labels(self.prefixes, groups)
        for prefix, labels in self.prefix_labels.items():
            ident = self.allocator.allocate(labels)
            self._cidr_ids.append((ipaddress.ip_network(prefix), ident))
        # Longest prefix first, for the LPM of external addresses.
        self._cidr_ids.sort(key=lambda item: -item[0].prefixlen)
        self.fqdn_selectors = rule_fqdn_selectors(self.rules)
        # address -> (how the node knows it, its fqdn identity): allocated before the engine is
        # built, as the node's policies learn an fqdn identity before its ipcache entry
        self.learned: dict[str, tuple[LearnedAddress, int]] = {}
        if dns is not None and self.fqdn_selectors:
            pod_ips = {ip for ep in self.endpoints for ip in ep.pod.addresses}
            for ip in dns.all_addresses():
                found = dns.learned(ip, self.fqdn_selectors)
                if ip in pod_ips or found is None or not found.selectors:
                    continue  # in-cluster addresses keep their pods' identities; unselected stay world
                labels = fqdn_identity_labels(ip, found.names, self.fqdn_selectors)
                if labels is not None:  # and the CIDR groups around it, as on the node
                    labels = labels.union(inherited_group_labels(ip, self.prefix_labels))
                    self.learned[ip] = (found, self.allocator.allocate(labels))

    # ------------------------------------------------------------------ identities

    @property
    def identities(self) -> dict[int, Labels]:
        ids = dict(self.allocator.identities())
        ids.update(self.nodes.scoped_identities())  # remote nodes under node-selector labels
        return ids

    def labels_of(self, identity: int) -> Labels:
        labels = self.allocator.lookup(identity) or self.nodes.scoped_identities().get(identity)
        if labels is None:
            raise KeyError(identity)
        return labels

    @property
    def prefix_identities(self) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]]:
        """Every prefix of the ipcache (the policies' and the CIDR groups'), longest first, with its
        identity."""
        return list(self._cidr_ids)

    def external_identity(self, ip: str) -> int:
        """The identity of an address outside the cluster: the CIDR identity of the longest policy
        prefix containing it, else world (§3.4): ``reserved:world-ipv6`` for IPv6, as the datapath."""
        addr = ipaddress.ip_address(ip)
        for net, ident in self._cidr_ids:
            if addr.version == net.version and addr in net:
                return ident
        return int(ReservedIdentity.WORLD_IPV6 if addr.version == 6 else ReservedIdentity.WORLD)

    @cached_property
    def rules(self) -> tuple[PolicyRule, ...]:
        """Every policy translated into engine rules."""
        return engine_adapter.translate_all(self.cluster, self.cluster_name)

    @cached_property
    def oracle(self) -> engine_adapter.PolicyOracle:
        return engine_adapter.PolicyOracle(
            replace(self.options.engine_options(self.has_host_policies), secrets=self.cluster.secrets),
            self.identities,
            self.rules,
            ((ep.identity, ep.pod) for ep in self.endpoints),
        )

    def side(self, identity: int, direction: Direction) -> engine_adapter.SidePolicy:
        """The policy of ``identity`` in ``direction``: enforcement, attribution, lookup."""
        return self.oracle.side(identity, direction)

    # ------------------------------------------------------------------ nodes

    def oracle_on(self, node: str) -> engine_adapter.PolicyOracle:
        """The engine as node ``node`` has it: the host identity carries that node's labels (the
        local node's oracle is :attr:`oracle`)."""
        info = self.nodes.nodes.get(node)
        if info is None or info.host == self.labels_of(1):
            return self.oracle
        found = self._node_oracles.get(node)
        if found is None:
            ids = self.identities
            ids[1] = info.host
            found = self._node_oracles[node] = engine_adapter.PolicyOracle(
                replace(self.options.engine_options(self.has_host_policies), secrets=self.cluster.secrets),
                ids,
                self.rules,
                ((ep.identity, ep.pod) for ep in self.endpoints),
            )
        return found

    @cached_property
    def _node_oracles(self) -> dict[str, engine_adapter.PolicyOracle]:
        return {}

    @cached_property
    def has_host_policies(self) -> bool:
        """Some policy is a host policy (CCNP ``nodeSelector``)."""
        return any(r.node_selector for r in self.rules)

    @property
    def host_firewall(self) -> bool:
        """Host policies are enforced (:attr:`Options.host_firewall`, or auto)."""
        return self.options.engine_options(self.has_host_policies).host_firewall

    def side_of(self, owner: FlowEnd, direction: Direction) -> engine_adapter.SidePolicy:
        """The policy that decides ``direction`` for ``owner``: a pod's endpoint policy, or the host
        policies of a node (identity 1 on that node), as the owner's node has them (there identity 1
        carries that node's labels, which a cluster-wide selector may match)."""
        if owner.kind is EndKind.NODE:
            return self.oracle_on(owner.node).side(1, direction)
        return self.oracle_on(owner.node).side(owner.identity, direction)

    def identity_seen_by(self, peer: FlowEnd, owner: FlowEnd) -> int:
        """``peer``'s identity where ``owner``'s policy decides: a node is the host on itself and a
        remote node elsewhere; everything else has one identity everywhere."""
        if peer.kind is EndKind.NODE and peer.node in self.nodes.nodes:
            # a pod on no known node (no spec.nodeName, several Nodes): every node is remote to it
            return self.nodes.identity_seen_from(peer.node, owner.node or "")
        return peer.identity

    def node_end(self, info: NodeInfo, name: str = "", ip: str = "") -> FlowEnd:
        """A node's host endpoint as a flow end (``name``: how the user named it)."""
        return FlowEnd(
            name or f"node:{info.name}",
            EndKind.NODE,
            1,
            info.host,
            ip=ip or (info.ips[0] if info.ips else ""),
            node=info.name,
        )

    def _named_node(self, name: str, text: str) -> NodeInfo:
        if name == "":  # entity:host: the local node
            local = self.nodes.local
            if local is None:
                known = ", ".join(f"node:{n}" for n in self.nodes.nodes)
                raise PeerError(f"{text}: the manifests have several Nodes; name one ({known})")
            return local
        info = self.nodes.nodes.get(name)
        if info is None:
            known = ", ".join(self.nodes.nodes) if self.nodes.declared else "none"
            raise PeerError(f"no Node {name} in the manifests (Nodes: {known})")
        return info

    def host_network_end(self, pod: Pod) -> FlowEnd:
        """A hostNetwork pod: its node's host endpoint (Cilium gives it no endpoint of its own)."""
        node = self.nodes.node_of_pod(pod.node_name)
        if not node:
            raise PeerError(
                f"hostNetwork pod {pod.namespace}/{pod.name} has no spec.nodeName and the manifests have "
                "several Nodes: it is its node, so say which (spec.nodeName)"
            )
        info = self.nodes.nodes.get(node)
        if info is None:
            raise PeerError(f"hostNetwork pod {pod.namespace}/{pod.name} runs on node {node}, which the "
                            "manifests do not have (add its Node object)")
        return self.node_end(info, f"{pod.namespace}/{pod.name} (hostNetwork on node:{info.name})")

    # ------------------------------------------------------------------ peers

    def resolve(self, peer: str | PeerSpec) -> list[FlowEnd]:
        """The flow ends a PEER argument stands for (several for a Deployment)."""
        spec = parse_peer(peer) if isinstance(peer, str) else peer
        if spec.kind is PeerKind.SERVICE:
            raise PeerError(f"{spec.text}: a Service is a destination only (a flow comes from its backends)")
        if spec.kind is PeerKind.CIDR_GROUP:
            return cidr_group_ends(self, spec.name)
        if spec.kind is PeerKind.NODE:
            return [self.node_end(self._named_node(spec.name, spec.text))]
        if spec.kind is PeerKind.ENTITY and spec.name == "host":
            return [self.node_end(self._named_node("", spec.text), "host")]
        if spec.kind is PeerKind.ENTITY and spec.name == "remote-node" and self.options.node_selector_labels:
            labels = self.nodes.remote_identity(RESERVED_LABELS[ReservedIdentity.REMOTE_NODE])
            return [FlowEnd(spec.name, EndKind.ENTITY, labels, self.labels_of(labels))]
        if spec.kind is PeerKind.ENTITY:
            rid = ReservedIdentity[PEER_ENTITIES[spec.name].upper().replace("-", "_")]
            return [FlowEnd(spec.name, EndKind.ENTITY, int(rid), RESERVED_LABELS[rid])]
        if spec.kind is PeerKind.IP:
            return [self._address_end(spec.ip)]
        if spec.kind is PeerKind.FQDN:
            dns = self.dns if self.dns is not None else NodeDns(None)
            addresses = dns.addresses(spec.name)
            if not addresses:
                raise PeerError(dns.unknown_name(spec.name))
            return [self._address_end(ip, by_name=True) for ip in addresses]
        if spec.kind is PeerKind.DEPLOYMENT:
            found = [
                ep
                for ep in self.endpoints
                if ep.pod.namespace == spec.namespace and ep.deployment == spec.name
            ]
            if not found:
                known = sorted({f"{d.namespace}/{d.name}" for d in self.cluster.deployments})
                raise PeerError(
                    f"no Deployment {spec.namespace}/{spec.name} in the manifests"
                    + (f" (known: {', '.join(known)})" if known else "")
                )
            return [self.pod_end(ep) for ep in found]
        if spec.kind in (PeerKind.STATEFULSET, PeerKind.DAEMONSET):
            return [self.pod_end(ep) for ep in self._workload_endpoints(spec)]
        in_ns = [ep for ep in self.endpoints if ep.pod.namespace == spec.namespace]
        exact = [ep for ep in in_ns if ep.pod.name == spec.name]
        matches = exact or [ep for ep in in_ns if ep.pod.name.startswith(spec.name)]
        hostnet = [p for p in self.host_network_pods if (p.namespace, p.name) == (spec.namespace, spec.name)]
        if hostnet and not exact:
            return [self.host_network_end(hostnet[0])]
        if not matches:
            known = ", ".join(ep.name for ep in in_ns[:8]) or "none"
            raise PeerError(f"no pod {spec.namespace}/{spec.name} in the manifests (pods there: {known})")
        if len(matches) > 1:
            names = ", ".join(ep.name for ep in matches[:8])
            raise PeerError(
                f"pod name {spec.namespace}/{spec.name} is ambiguous: {names}; give more of the name, "
                f"or deployment:{spec.namespace}/NAME for all pods of a Deployment"
            )
        return [self.pod_end(matches[0])]

    def _workload_endpoints(self, spec: PeerSpec) -> list[PodEndpoint]:
        """The pods of a StatefulSet or DaemonSet: those it makes (the manifests have the object),
        else listed pods named as it names them (``NAME-0``, … or ``NAME-xxxxx``)."""
        kind = "StatefulSet" if spec.kind is PeerKind.STATEFULSET else "DaemonSet"
        owner = f"{kind}/{spec.name}"
        found = [ep for ep in self.endpoints if ep.pod.namespace == spec.namespace and ep.pod.owner == owner]
        if found:
            return found
        for ep in self.endpoints:
            if ep.pod.namespace != spec.namespace or not ep.pod.name.startswith(spec.name + "-"):
                continue
            suffix = ep.pod.name[len(spec.name) + 1 :]
            if suffix.isdigit() if kind == "StatefulSet" else re.fullmatch(_DS_SUFFIX, suffix):
                found.append(ep)
        if not found:
            how = f"{spec.name}-0, {spec.name}-1, …" if kind == "StatefulSet" else f"{spec.name}-xxxxx"
            known = sorted(f"{w.namespace}/{w.name}" for w in self.cluster.workloads if w.kind == kind)
            raise PeerError(
                f"no {kind} {spec.namespace}/{spec.name} in the manifests"
                + (f" (known: {', '.join(known)})" if known else "")
                + f", and no pod listed as {how}"
            )
        return found

    def _address_end(self, ip: str, by_name: bool = False) -> FlowEnd:
        """A pod's IP is that pod; an address a node learned under a toFQDNs-selected name has its
        fqdn identity; any other is world or the CIDR identity of its longest policy prefix."""
        addr = ipaddress.ip_address(ip)
        for ep in self.endpoints:  # any of its addresses (podIPs: IPv4 and IPv6 of a dual-stack pod)
            if any(ipaddress.ip_address(a) == addr for a in ep.pod.addresses):
                return self.pod_end(ep)
        node = self.nodes.by_ip.get(str(addr))
        if node is not None:  # a node's address is the node, never world (§3.3)
            return self.node_end(node, f"{ip} (node:{node.name})", ip)
        for pod in self.host_network_pods:  # a hostNetwork pod's IP is its node's
            if any(ipaddress.ip_address(a) == addr for a in pod.addresses):
                return self.host_network_end(pod)
        if ip in self.learned:
            found, ident = self.learned[ip]
            return FlowEnd(ip, EndKind.EXTERNAL, ident, self.labels_of(ident), ip=ip, learned=found)
        ident = self.external_identity(ip)
        # Known under names no selector matches: said, so a trace shows why toFQDNs did not apply.
        learned = None
        if self.dns is not None and (by_name or self.fqdn_selectors):
            learned = self.dns.learned(ip, self.fqdn_selectors)
        return FlowEnd(ip, EndKind.EXTERNAL, ident, self.labels_of(ident), ip=ip, learned=learned)

    def pod_end(self, ep: PodEndpoint) -> FlowEnd:
        """The flow end of one pod endpoint."""
        return FlowEnd(
            ep.name,
            EndKind.POD,
            ep.identity,
            ep.labels,
            ip=ep.pod.pod_ip or "",
            namespace=ep.pod.namespace,
            pod=ep.pod.name,
            node=self.nodes.node_of_pod(ep.pod.node_name),
        )


def analyse_paths(
    paths: Sequence[str | Path],
    options: Options = Options(),
    stdin: IO[bytes] | None = None,
    dns: NodeDns | None = None,
) -> Analysis:
    """Load and validate manifests and build the :class:`Analysis`
    (:class:`cilia.analyze.manifests.ManifestInputError` when they are unreadable or invalid;
    :class:`cilia.analyze.learned.NodeStateError` when ``dns`` is needed and cannot be read)."""
    _, cluster = load_cluster(paths, stdin, options.flags)
    return Analysis(cluster, options, dns=dns)
