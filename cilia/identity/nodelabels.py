"""The labels a node carries as an identity: its own host endpoint's, and what other nodes see.

One definition for the agent (the live host endpoint) and offline analysis, so the two cannot
disagree on which Node labels reach a host policy's ``nodeSelector``. Cilium 1.18: the host endpoint
is ``reserved:host`` plus the Node's labels as ``k8s:`` labels after the identity label filter (the
pods' filter: ``kubernetes.io/os``, ``kubernetes.io/hostname`` … never reach it); a node that is a
kube-apiserver backend also carries ``reserved:kube-apiserver``; other nodes see it as
``reserved:remote-node`` plus, under ``--enable-node-selector-labels``, its labels as ``node:``
labels kept by the ``--node-labels`` filter.
"""

from __future__ import annotations

from collections.abc import Mapping

from cilia.identity.labelfilter import DEFAULT_FILTER, LabelFilter
from cilia.identity.labels import SOURCE_K8S, SOURCE_NODE, Label, Labels
from cilia.identity.reserved import LABEL_HOST, LABEL_KUBE_APISERVER, LABEL_REMOTE_NODE


def host_labels(node_labels: Mapping[str, str], apiserver: bool = False) -> Labels:
    """The host endpoint's labels on its own node."""
    kept = DEFAULT_FILTER.filter(Label(SOURCE_K8S, k, v) for k, v in node_labels.items())
    extra = [LABEL_KUBE_APISERVER] if apiserver else []
    return Labels([LABEL_HOST, *kept, *extra])


def stripped_labels(node_labels: Mapping[str, str]) -> tuple[str, ...]:
    """The Node label keys the label filter keeps off the host endpoint (sorted)."""
    return tuple(
        sorted(k for k, v in node_labels.items() if not DEFAULT_FILTER.is_relevant(Label(SOURCE_K8S, k, v)))
    )


def remote_labels(
    node_labels: Mapping[str, str],
    apiserver: bool = False,
    node_selector_labels: bool = False,
    node_filter: LabelFilter | None = None,
) -> Labels:
    """A node's labels on every other node."""
    out = [LABEL_REMOTE_NODE, *([LABEL_KUBE_APISERVER] if apiserver else [])]
    if node_selector_labels:
        flt = node_filter if node_filter is not None else LabelFilter(defaults=())
        out += flt.filter(Label(SOURCE_NODE, k, v) for k, v in node_labels.items())
    return Labels(out)
