"""Documents that name the same object: as with ``kubectl apply -f``, the later one replaces the earlier.

Two documents are the same object when their API group (not version: ``cilium.io/v2`` and
``cilium.io/v2alpha1`` name one resource), kind, namespace (``default`` when a namespaced kind omits
it) and name are equal. Everything that builds a cluster from manifests keeps only the last of them,
and says so with a warning naming both places.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from cilia.k8s.frozen import frozen
from cilia.k8s.source import Document

# Kinds without a namespace (a namespace written on them is ignored by the API server).
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "Node",
        "CiliumClusterwideNetworkPolicy",
        "CiliumCIDRGroup",
        "CiliumNode",
        "CiliumIdentity",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)

ObjectKey = tuple[str, str, str, str]  # (API group, kind, namespace, name)


def object_key(doc: Document, default_namespace: str = "default") -> ObjectKey | None:
    """The identity of the object a document writes; ``None`` when it has no kind or name
    (the validator reports those)."""
    kind, name = doc.kind, doc.name
    if not isinstance(kind, str) or not kind or not name:
        return None
    api_version = doc.api_version if isinstance(doc.api_version, str) else ""
    group = api_version.rpartition("/")[0]
    namespace = "" if kind in CLUSTER_SCOPED else (doc.namespace or default_namespace)
    return group, kind, namespace, name


def where(doc: Document) -> str:
    """``file:line`` of a document."""
    return f"{doc.file}:{doc.line}"


@frozen
class Duplicate:
    """A document (``later``) that replaces an ``earlier`` one of the same object."""

    earlier: Document
    later: Document
    key: ObjectKey

    @property
    def describe(self) -> str:
        """``Kind namespace/name`` (``Kind name`` for cluster-scoped kinds)."""
        _, kind, namespace, name = self.key
        return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"

    def warning(self) -> str:
        """The warning printed by every command that reads both documents."""
        return (
            f"{where(self.later)}: {self.describe} replaces the one at {where(self.earlier)} "
            "(the later document of the same kind, namespace and name wins, as with kubectl apply)"
        )


def find_duplicates(documents: Iterable[Document], default_namespace: str = "default") -> Iterator[Duplicate]:
    """Every document that replaces an earlier one, in load order (a third copy replaces the second)."""
    last: dict[ObjectKey, Document] = {}
    for doc in documents:
        key = object_key(doc, default_namespace)
        if key is None:
            continue
        if key in last:
            yield Duplicate(last[key], doc, key)
        last[key] = doc


def latest_documents(documents: Sequence[Document], default_namespace: str = "default") -> list[Document]:
    """The documents that take effect: for each object, only the last document that names it."""
    replaced = {id(d.earlier) for d in find_duplicates(documents, default_namespace)}
    return [doc for doc in documents if id(doc) not in replaced]


def duplicate_warnings(documents: Iterable[Document], default_namespace: str = "default") -> list[str]:
    """One warning per replaced document."""
    return [d.warning() for d in find_duplicates(documents, default_namespace)]
