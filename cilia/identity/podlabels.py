"""The identity labels of a pod endpoint (semantics.md §2.3, Cilium ``SanitizePodLabels``)."""

from __future__ import annotations

from collections.abc import Mapping

from cilia.identity.labelfilter import DEFAULT_FILTER, LabelFilter
from cilia.identity.labels import SOURCE_K8S, Label, Labels

CILIUM_LABEL_PREFIX = "io.cilium.k8s"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
SERVICE_ACCOUNT_LABEL = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DEFAULT_CLUSTER = "default"
# What Kubernetes' ServiceAccount admission sets when a pod names none; Cilium's identity carries it.
DEFAULT_SERVICE_ACCOUNT = "default"


def sanitized_pod_labels(
    pod_labels: Mapping[str, str],
    namespace: str,
    namespace_labels: Mapping[str, str] | None = None,
    service_account: str = "",
    cluster: str = DEFAULT_CLUSTER,
) -> dict[str, str]:
    """All k8s labels of a pod endpoint, before the identity filter: the pod's own labels minus
    any ``io.cilium.k8s*`` key (users cannot forge those), the namespace's labels under
    ``io.cilium.k8s.namespace.labels.``, the namespace name, service account and cluster name.
    ``namespace_labels`` defaults to what Kubernetes sets on every namespace
    (``kubernetes.io/metadata.name=<ns>``)."""
    out = {k: v for k, v in pod_labels.items() if not k.startswith(CILIUM_LABEL_PREFIX)}
    if namespace_labels is None:
        namespace_labels = {NAMESPACE_NAME_LABEL: namespace}
    for k, v in namespace_labels.items():
        out[NAMESPACE_LABELS_PREFIX + k] = v
    out[POD_NAMESPACE_LABEL] = namespace
    if service_account:
        out[SERVICE_ACCOUNT_LABEL] = service_account
    out[CLUSTER_LABEL] = cluster
    return out


def pod_identity_labels(
    pod_labels: Mapping[str, str],
    namespace: str,
    namespace_labels: Mapping[str, str] | None = None,
    service_account: str = "",
    cluster: str = DEFAULT_CLUSTER,
    label_filter: LabelFilter = DEFAULT_FILTER,
) -> Labels:
    """The security-identity labels of a pod: :func:`sanitized_pod_labels` as ``k8s:`` labels,
    reduced to the identity-relevant ones."""
    raw = sanitized_pod_labels(pod_labels, namespace, namespace_labels, service_account, cluster)
    return label_filter.filter(Label(SOURCE_K8S, k, v) for k, v in raw.items())
