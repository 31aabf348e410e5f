"""Store keys: ``/cilia/v1/<kind>/<namespace>/<name>``.

The version segment lets a later layout live beside this one (an etcd cluster shared by
several cilia versions). Cluster-scoped objects use ``_`` as their namespace segment; no
Kubernetes namespace can be called that (namespaces are DNS labels).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple

from cilia.store.errors import InvalidKeyError

PREFIX = "/cilia/v1/"
CLUSTER_SEGMENT = "_"


class Kind(StrEnum):
    """What the store holds. The value is the key segment."""

    NAMESPACES = "namespaces"
    PODS = "pods"
    DEPLOYMENTS = "deployments"
    SERVICES = "services"
    ENDPOINTS = "endpoints"  # Kubernetes Endpoints of a Service
    CNP = "ciliumnetworkpolicies"
    CCNP = "ciliumclusterwidenetworkpolicies"
    KNP = "networkpolicies"
    IDENTITIES = "identities"  # name: numeric id -> {"id", "labels"}
    IDENTITY_LABELS = "identitylabels"  # name: hash of the label set -> {"id", "labels"}
    CILIUM_ENDPOINTS = "ciliumendpoints"  # runtime state the agent publishes for the CLI
    NODES = "nodes"  # node settings
    IPAM = "ipam"  # name: pod address -> owner
    CIDR_GROUPS = "ciliumcidrgroups"  # CiliumCIDRGroup (cluster-scoped)
    SECRETS = "secrets"  # values of headerMatches secret references; never printed (cilia get: keys only)

    @property
    def namespaced(self) -> bool:
        return self not in _CLUSTER_SCOPED

    def key(self, namespace: str, name: str) -> ObjectKey:
        """The key of ``name`` in ``namespace`` (``""`` for cluster-scoped kinds)."""
        return ObjectKey(self, namespace, name)

    def prefix(self, namespace: str | None = None) -> str:
        """Key prefix of every object of this kind, or of this kind in one namespace."""
        if namespace is None:
            return f"{PREFIX}{self.value}/"
        return f"{PREFIX}{self.value}/{_ns_segment(self, namespace)}/"


_CLUSTER_SCOPED = frozenset(
    {
        Kind.NAMESPACES, Kind.CCNP, Kind.IDENTITIES, Kind.IDENTITY_LABELS, Kind.NODES, Kind.IPAM,
        Kind.CIDR_GROUPS,
    }
)

POLICY_KINDS = (Kind.CNP, Kind.CCNP, Kind.KNP)

# Kubernetes object kind -> store kind.
API_KINDS: dict[str, Kind] = {
    "Namespace": Kind.NAMESPACES,
    "Pod": Kind.PODS,
    "Deployment": Kind.DEPLOYMENTS,
    "Service": Kind.SERVICES,
    "Endpoints": Kind.ENDPOINTS,
    "CiliumNetworkPolicy": Kind.CNP,
    "CiliumClusterwideNetworkPolicy": Kind.CCNP,
    "NetworkPolicy": Kind.KNP,
    "CiliumCIDRGroup": Kind.CIDR_GROUPS,
    "Secret": Kind.SECRETS,
}


def _ns_segment(kind: Kind, namespace: str) -> str:
    if not kind.namespaced:
        if namespace:
            raise InvalidKeyError(f"{kind.value} are cluster-scoped; got namespace {namespace!r}")
        return CLUSTER_SEGMENT
    _check_segment(kind, "namespace", namespace)
    if namespace == CLUSTER_SEGMENT:
        raise InvalidKeyError(f"{kind.value}: namespace {CLUSTER_SEGMENT!r} is reserved")
    return namespace


def _check_segment(kind: Kind, what: str, value: str) -> None:
    if not value or "/" in value or value.strip() != value:
        raise InvalidKeyError(f"{kind.value}: invalid {what} {value!r}")


class ObjectKey(NamedTuple):
    """Identifies one stored object."""

    kind: Kind
    namespace: str  # "" for cluster-scoped kinds
    name: str

    def path(self) -> str:
        """The backend key string; validates every segment."""
        ns = _ns_segment(self.kind, self.namespace)
        _check_segment(self.kind, "name", self.name)
        return f"{PREFIX}{self.kind.value}/{ns}/{self.name}"

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind.value}/{self.namespace}/{self.name}"
        return f"{self.kind.value}/{self.name}"

    @classmethod
    def parse(cls, path: str) -> ObjectKey:
        """Inverse of :meth:`path`."""
        if not path.startswith(PREFIX):
            raise InvalidKeyError(f"{path!r} is not a cilia v1 key")
        parts = path[len(PREFIX) :].split("/")
        if len(parts) != 3:
            raise InvalidKeyError(f"{path!r} is not <kind>/<namespace>/<name>")
        try:
            kind = Kind(parts[0])
        except ValueError:
            raise InvalidKeyError(f"{path!r}: unknown kind {parts[0]!r}") from None
        ns = "" if parts[1] == CLUSTER_SEGMENT and not kind.namespaced else parts[1]
        return cls(kind, ns, parts[2])


def key_for_object(obj: dict[str, Any], default_namespace: str = "default") -> ObjectKey:
    """The key of a Kubernetes object (``kind`` + ``metadata.namespace/name``)."""
    api_kind = obj.get("kind")
    kind = API_KINDS.get(api_kind) if isinstance(api_kind, str) else None
    if kind is None:
        raise InvalidKeyError(f"cannot store objects of kind {api_kind!r}; known: {', '.join(API_KINDS)}")
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str):
        raise InvalidKeyError(f"{api_kind}: metadata.name is missing")
    namespace = (meta.get("namespace") or default_namespace) if kind.namespaced else ""
    key = ObjectKey(kind, namespace, name)
    key.path()
    return key


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
