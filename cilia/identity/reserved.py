"""Reserved identities and policy entities (semantics.md §3.1, §3.2).

Reserved identities 1–11 have fixed numbers and label sets. Entities (``fromEntities``/``toEntities``)
name selectors over reserved labels; ``cluster`` also selects every pod of the local cluster, so it
needs the cluster name.
"""

from __future__ import annotations

from enum import IntEnum

from cilia.identity.errors import IdentityError
from cilia.identity.labels import SOURCE_RESERVED, Label, Labels
from cilia.identity.podlabels import CLUSTER_LABEL, DEFAULT_CLUSTER
from cilia.identity.selector import Selector


class ReservedIdentity(IntEnum):
    """Cilium's reserved numeric identities (``pkg/identity/numericidentity.go``)."""

    UNKNOWN = 0
    HOST = 1
    WORLD = 2
    UNMANAGED = 3
    HEALTH = 4
    INIT = 5
    REMOTE_NODE = 6
    KUBE_APISERVER = 7
    INGRESS = 8
    WORLD_IPV4 = 9
    WORLD_IPV6 = 10
    OVERLAY_TO_ENCRYPT = 11

    @property
    def label_name(self) -> str:
        """The reserved label key (``host``, ``world-ipv4``, …)."""
        return self.name.lower().replace("_", "-")


def reserved_label(name: str) -> Label:
    """``reserved:<name>`` (reserved labels have an empty value)."""
    return Label(SOURCE_RESERVED, name, "")


LABEL_HOST = reserved_label("host")
LABEL_WORLD = reserved_label("world")
LABEL_WORLD_IPV4 = reserved_label("world-ipv4")
LABEL_WORLD_IPV6 = reserved_label("world-ipv6")
LABEL_REMOTE_NODE = reserved_label("remote-node")
LABEL_KUBE_APISERVER = reserved_label("kube-apiserver")
LABEL_INIT = reserved_label("init")
LABEL_HEALTH = reserved_label("health")
LABEL_INGRESS = reserved_label("ingress")
LABEL_UNMANAGED = reserved_label("unmanaged")
LABEL_NONE = reserved_label("none")

# The kube-apiserver identity stands for apiserver backends on other nodes, so it also carries
# the remote-node label.
RESERVED_LABELS: dict[ReservedIdentity, Labels] = {
    rid: (
        Labels([LABEL_KUBE_APISERVER, LABEL_REMOTE_NODE])
        if rid is ReservedIdentity.KUBE_APISERVER
        else Labels([reserved_label(rid.label_name)])
    )
    for rid in ReservedIdentity
    if rid is not ReservedIdentity.UNKNOWN
}

MAX_RESERVED_IDENTITY = max(ReservedIdentity)


def reserved_identity_of(labels: Labels) -> ReservedIdentity | None:
    """The reserved identity whose label set this is exactly, if any."""
    for rid, lbls in RESERVED_LABELS.items():
        if lbls == labels:
            return rid
    return None


class UnknownEntityError(IdentityError, ValueError):
    """An entity name that is not one of Cilium's."""

    def __init__(self, entity: str) -> None:
        super().__init__(f"unsupported entity: {entity}")
        self.entity = entity


ENTITIES: tuple[str, ...] = (
    "all",
    "world",
    "world-ipv4",
    "world-ipv6",
    "cluster",
    "host",
    "remote-node",
    "kube-apiserver",
    "health",
    "init",
    "ingress",
    "unmanaged",
    "none",
)

_CLUSTER_RESERVED = (
    LABEL_HOST,
    LABEL_REMOTE_NODE,
    LABEL_INIT,
    LABEL_INGRESS,
    LABEL_HEALTH,
    LABEL_UNMANAGED,
    LABEL_KUBE_APISERVER,
)


def entity_selectors(entity: str, cluster: str = DEFAULT_CLUSTER) -> tuple[Selector, ...]:
    """The selectors an entity stands for (their union), as Cilium's ``EntitySelectorMapping``."""

    def one(*labels: Label) -> tuple[Selector, ...]:
        return tuple(Selector.from_labels([lb]) for lb in labels)

    match entity:
        case "all":
            return (Selector.wildcard(),)
        case "world":
            return one(LABEL_WORLD, LABEL_WORLD_IPV4, LABEL_WORLD_IPV6)
        case "world-ipv4":
            return one(LABEL_WORLD_IPV4)
        case "world-ipv6":
            return one(LABEL_WORLD_IPV6)
        case "cluster":
            pods = Selector.from_labels([Label("k8s", CLUSTER_LABEL, cluster)])
            return (*one(*_CLUSTER_RESERVED), pods)
        case "host":
            return one(LABEL_HOST)
        case "remote-node":
            return one(LABEL_REMOTE_NODE)
        case "kube-apiserver":
            return one(LABEL_KUBE_APISERVER)
        case "health":
            return one(LABEL_HEALTH)
        case "init":
            return one(LABEL_INIT)
        case "ingress":
            return one(LABEL_INGRESS)
        case "unmanaged":
            return one(LABEL_UNMANAGED)
        case "none":
            return one(LABEL_NONE)
    raise UnknownEntityError(entity)
