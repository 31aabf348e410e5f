"""Nodes in offline analysis: the host endpoint of each node and what other nodes are to it.

What Cilium 1.18 does, and cilia with it (facts from Cilium's source, tested in
``tests/test_analyze_nodes.py``):

* A node's own host endpoint has identity 1 (``reserved:host``) whatever its labels. Its labels are
  ``reserved:host`` plus the Node's labels as ``k8s:`` labels *after the identity label filter*
  (``InitWithNodeLabels``: ``labelsfilter.Filter``, the same filter as for pods), so
  ``kubernetes.io/os``, ``kubernetes.io/hostname``, ``kubernetes.io/arch``, ``beta.kubernetes.io/…``
  and ``failure-domain.beta.kubernetes.io/…`` never reach it: a ``nodeSelector`` on them selects no
  host. ``node-role.kubernetes.io/…``, ``node.kubernetes.io/…`` and ``topology.kubernetes.io/…`` pass.
* A node whose address is a kube-apiserver backend (the ``default/kubernetes`` Endpoints) also
  carries ``reserved:kube-apiserver``.
* Every other node is ``reserved:remote-node`` (identity 6; 7 with ``reserved:kube-apiserver``).
  With ``--enable-node-selector-labels`` (``PerNodeLabelsEnabled``) remote nodes have no reserved
  identity: each distinct label set — ``reserved:remote-node`` plus the Node's labels as ``node:``
  labels, kept by the ``--node-labels`` filter (none given: all of them) — gets a remote-node-scoped
  identity (``2<<24`` …, node-local), which ``fromNodes``/``toNodes`` select.
* A hostNetwork pod has no endpoint of its own: it is its node (host policies decide for it).

Which node is which depends on where a packet is decided, so an identity is looked up *as seen
from* a node (:meth:`NodeSet.identity_seen_from`). Pods without ``spec.nodeName`` run on the local
node: the one named with ``--node``, else the only Node of the manifests, or an anonymous one when
there is none (then every pod runs
there, ``spec.nodeName`` or not); with several Nodes such a pod runs on none of them, and every node
is a remote node to it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import field

from cilia.identity.labelfilter import LabelFilter
from cilia.identity.labels import Labels
from cilia.identity.nodelabels import host_labels, remote_labels
from cilia.identity.reserved import (
    LABEL_KUBE_APISERVER,
    ReservedIdentity,
)
from cilia.k8s.frozen import frozen
from cilia.k8s.objects import Cluster, Node

# Cilium's IdentityScopeRemoteNode: node-local identities of remote nodes under node-selector labels.
REMOTE_NODE_SCOPE = 2 << 24
# The local node when the manifests name none (pods without nodeName run there).
ANONYMOUS_NODE = "host"
APISERVER_SERVICE = ("default", "kubernetes")


def _norm(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


@frozen
class NodeInfo:
    """One node as analysis sees it."""

    name: str
    labels: tuple[tuple[str, str], ...]
    ips: tuple[str, ...]
    apiserver: bool
    host: Labels = field(compare=False)  # on itself
    remote: Labels = field(compare=False)  # on every other node
    declared: bool = True  # False for the anonymous local node

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def apiserver_ips(cluster: Cluster) -> frozenset[str]:
    """The kube-apiserver backends: the addresses of the ``default/kubernetes`` Endpoints."""
    found = [ep for ep in cluster.endpoints if (ep.namespace, ep.service) == APISERVER_SERVICE]
    return frozenset(ip for ep in found for ip in ep.addresses)


class NodeSet:
    """The cluster's nodes, the local node, and the identities nodes have on each other."""

    def __init__(
        self,
        nodes: Sequence[Node],
        apiserver: Iterable[str] = (),
        node_selector_labels: bool = False,
        node_label_patterns: Sequence[str] = (),
        local_node: str = "",
    ) -> None:
        self.node_selector_labels = node_selector_labels
        api_ips = frozenset(_norm(ip) for ip in apiserver)
        flt = LabelFilter(node_label_patterns, defaults=())
        infos = []
        for n in nodes:
            on_api = any(_norm(ip) in api_ips for ip in n.ips)
            infos.append(
                NodeInfo(
                    n.name,
                    n.labels,
                    n.ips,
                    on_api,
                    host_labels(n.label_map, on_api),
                    remote_labels(n.label_map, on_api, node_selector_labels, flt),
                )
            )
        if not infos:
            infos.append(
                NodeInfo(
                    ANONYMOUS_NODE,
                    (),
                    (),
                    False,
                    host_labels({}),
                    remote_labels({}, False, node_selector_labels, flt),
                    declared=False,
                )
            )
        self.nodes: dict[str, NodeInfo] = {i.name: i for i in infos}
        if local_node and local_node not in self.nodes:
            known = ", ".join(n.name for n in self.declared) or "none"
            raise ValueError(f"--node {local_node}: no such Node in the manifests (Nodes: {known})")
        self.local_node = local_node
        # by the address as ipaddress writes it (2001:2:0:fe::1, however the manifest spelt it)
        self.by_ip: dict[str, NodeInfo] = {_norm(ip): i for i in infos for ip in i.ips}
        # remote-node-scoped identities (node-selector labels): one per distinct label set, numbered
        # in a stable order (they are node-local in Cilium, so any consistent numbering is as good)
        self.scoped: dict[Labels, int] = {}
        if node_selector_labels:
            sets = {i.remote for i in infos} | {remote_labels({}, False, True)}
            for n, labels in enumerate(sorted(sets, key=lambda lb: lb.strings()), start=1):
                self.scoped[labels] = REMOTE_NODE_SCOPE | n

    @property
    def declared(self) -> list[NodeInfo]:
        """The Nodes of the manifests (not the anonymous local node)."""
        return [i for i in self.nodes.values() if i.declared]

    @property
    def local(self) -> NodeInfo | None:
        """The local node: the one named (``--node``), else the only node there is (None when the
        manifests have several)."""
        if self.local_node:
            return self.nodes[self.local_node]
        return next(iter(self.nodes.values())) if len(self.nodes) == 1 else None

    def node_of_pod(self, node_name: str | None) -> str:
        """The node a pod runs on: its ``spec.nodeName``, else the local node ("" if ambiguous).
        Without Node manifests every pod runs on the anonymous local node, whatever its nodeName."""
        if not self.declared:
            return ANONYMOUS_NODE
        if node_name:
            return node_name
        local = self.local
        return local.name if local is not None else ""

    def remote_identity(self, labels: Labels) -> int:
        """The identity a node with remote labels ``labels`` has on other nodes."""
        if self.node_selector_labels:
            return self.scoped[labels]
        if LABEL_KUBE_APISERVER in labels:
            return int(ReservedIdentity.KUBE_APISERVER)
        return int(ReservedIdentity.REMOTE_NODE)

    def identity_seen_from(self, node: str, viewpoint: str) -> int:
        """The identity of node ``node`` where ``viewpoint`` decides: the host (1) on itself, a
        remote node elsewhere."""
        if node == viewpoint:
            return int(ReservedIdentity.HOST)
        return self.remote_identity(self.nodes[node].remote)

    def scoped_identities(self) -> dict[int, Labels]:
        """The remote-node-scoped identities (empty without node-selector labels)."""
        return {n: labels for labels, n in self.scoped.items()}
