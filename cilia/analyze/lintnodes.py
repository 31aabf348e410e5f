"""Lint rules CL017: a host policy whose ``nodeSelector`` selects no Node of the linted manifests;
CL018: a ``fromNodes``/``toNodes`` selector that selects no Node's remote-node identity.

Judged only when the manifests have Nodes. A node's host endpoint carries the Node's labels after the
identity label filter (:func:`cilia.analyze.nodes.host_labels`), so a selector on
``kubernetes.io/hostname``, ``kubernetes.io/os`` or another filtered key selects no host even though
``kubectl get nodes -l`` finds the node: the policy is accepted and enforces nothing. The selector is
matched by the policy layer (:func:`cilia.policy.resolve.rule_selects`), as the engine matches it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from cilia.analyze.findings import Finding
from cilia.analyze.nodes import NodeInfo
from cilia.analyze.policydocs import PolicyDoc
from cilia.identity.labels import SOURCE_K8S, Label, Labels
from cilia.identity.nodelabels import stripped_labels
from cilia.identity.reserved import LABEL_HOST
from cilia.k8s.source import FieldPath
from cilia.policy.resolve import rule_selects
from cilia.policy.rules import PeerKind, PolicyRule
from cilia.policy.types import Direction


def _unfiltered(info: NodeInfo) -> Labels:
    """The host labels the node would have if the label filter kept every Node label."""
    return Labels([LABEL_HOST, *(Label(SOURCE_K8S, k, v) for k, v in info.labels)])


def _prefix(pol: PolicyDoc, rule: PolicyRule) -> FieldPath:
    if rule.ref.spec_index == 0 and pol.obj.spec is not None:
        return ("spec",)
    return ("specs", rule.ref.spec_index - (1 if pol.obj.spec is not None else 0))


def unmatched_node_selectors(
    pol: PolicyDoc, rules: Sequence[PolicyRule], nodes: Sequence[NodeInfo]
) -> Iterator[Finding]:
    """CL017 for every host rule of ``pol`` (its translated ``rules``) that selects none of ``nodes``."""
    if not nodes:
        return
    names = ", ".join(n.name for n in nodes)
    for rule in rules:
        if not rule.node_selector or any(rule_selects(rule, n.host, "") for n in nodes):
            continue
        filtered = [n for n in nodes if rule_selects(rule, _unfiltered(n), "")]
        if filtered:
            keys = sorted({k for n in filtered for k in stripped_labels(n.label_map)})
            why = (
                f"it matches Node {', '.join(n.name for n in filtered)} only through "
                f"{', '.join(keys)}, which the identity label filter keeps off the host endpoint "
                "(Cilium drops kubernetes.io/…, beta.kubernetes.io/…, k8s.io/… labels)"
            )
            fix = (
                "select the nodes by a label the filter keeps: add one (kubectl label node NAME "
                "node-access=ssh) and select it, or use node-role.kubernetes.io/…, topology.kubernetes.io/…"
            )
        else:
            why = f"no Node in the manifests has these labels (Nodes: {names})"
            fix = "check the label keys and values against the Nodes (kubectl get nodes --show-labels)"
        file, line, col, text = pol.where((*_prefix(pol, rule), "nodeSelector"))
        yield Finding(
            "CL017", file, line, col, pol.describe, text,
            f"the nodeSelector ({rule.subject}) selects no node's host endpoint: {why}; this host "
            "policy enforces nothing",
            fix,
        )  # fmt: skip


def unmatched_node_peers(
    pol: PolicyDoc, rules: Sequence[PolicyRule], nodes: Sequence[NodeInfo]
) -> Iterator[Finding]:
    """CL018 for every ``fromNodes``/``toNodes`` selector of ``pol`` that matches no node as other nodes
    see it (``reserved:remote-node`` and its ``node:`` labels; judged only when the manifests have
    Nodes). It never matches a node's own host: there, traffic from the node is ``host``."""
    if not nodes:
        return
    names = ", ".join(n.name for n in nodes)
    for rule in rules:
        for entry in rule.entries:
            field = "fromNodes" if entry.direction == Direction.INGRESS else "toNodes"
            node_peers = [p for p in entry.peers if p.kind is PeerKind.NODES]
            for j, peer in enumerate(node_peers):
                if any(peer.selector.matches(n.remote) for n in nodes):
                    continue
                ref = entry.ref
                file, line, col, text = pol.where((*_prefix(pol, rule), ref.section, ref.index, field, j))
                yield Finding(
                    "CL018", file, line, col, pol.describe, text,
                    f"this {field} selector ({peer.selector}) matches none of the Nodes in the manifests "
                    f"({names}) as other nodes see them (reserved:remote-node plus the Node's labels), so "
                    "the rule allows or denies nothing for it",
                    "check the label keys and values against the Nodes (kubectl get nodes --show-labels)",
                )  # fmt: skip
