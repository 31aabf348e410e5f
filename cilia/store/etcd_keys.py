"""Keys of cluster runtime state: what agents publish on their node lease (etcd only).

Desired state lives under ``/cilia/v1/<kind>/…`` (:mod:`cilia.store.keys`), and a store listing
of every kind parses each key there into a :class:`~cilia.store.keys.Kind`. Runtime state that
dies with a node (its registration, its endpoints' IP → identity entries, its identity
references) is therefore kept beside it, under its own versioned prefix::

    /cilia/cluster/v1/nodes/<node>                 {"name", "index", "address", "podCIDR"}
    /cilia/cluster/v1/ipcache/<node>/<ip>          {"ip", "identity", "node", "pod"}
    /cilia/cluster/v1/identityrefs/<id>/<node>     {"node"}

Identities themselves stay desired-state kinds (``identities``/``identitylabels``).
"""

from __future__ import annotations

from cilia.store.errors import InvalidKeyError

CLUSTER_PREFIX = "/cilia/cluster/v1/"
NODES_PREFIX = CLUSTER_PREFIX + "nodes/"
IPCACHE_PREFIX = CLUSTER_PREFIX + "ipcache/"
REFS_PREFIX = CLUSTER_PREFIX + "identityrefs/"


def segment(what: str, value: str) -> str:
    """Check one key segment (no ``/``, not empty, no surrounding spaces)."""
    if not value or "/" in value or value.strip() != value:
        raise InvalidKeyError(f"invalid {what} {value!r} for a cluster key")
    return value


def node_key(node: str) -> str:
    return NODES_PREFIX + segment("node name", node)


def ipcache_prefix(node: str) -> str:
    return f"{IPCACHE_PREFIX}{segment('node name', node)}/"


def ipcache_key(node: str, ip: str) -> str:
    return ipcache_prefix(node) + segment("address", ip)


def refs_prefix(identity: int) -> str:
    return f"{REFS_PREFIX}{identity}/"


def ref_key(identity: int, node: str) -> str:
    return refs_prefix(identity) + segment("node name", node)


def split(key: str, prefix: str) -> list[str]:
    """The segments of ``key`` after ``prefix``."""
    if not key.startswith(prefix):
        raise InvalidKeyError(f"{key!r} is not under {prefix!r}")
    return key[len(prefix):].split("/")
