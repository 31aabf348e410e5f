"""Names of what the lab creates: every one starts with ``cilia`` (host veths with ``lxc``)."""

from __future__ import annotations

import hashlib
import re

NETNS_PREFIX = "cilia-"
NETNS_MAX = 64
IFNAMSIZ = 15  # usable bytes of a Linux interface name
POD_IFNAME = "eth0"
_UNSAFE = re.compile(r"[^a-z0-9.-]")


def _digest(namespace: str, pod: str) -> str:
    return hashlib.sha256(f"{namespace}/{pod}".encode()).hexdigest()


def netns_name(namespace: str, pod: str, *, hashed: bool = False) -> str:
    """``cilia-<ns>-<pod>``; sanitised, at most 64 chars, with a hash suffix when it had to change.

    ``hashed`` forces the suffix: the lab uses it when the plain name is taken by another pod
    (``a-b``/``c`` and ``a``/``b-c`` read the same).
    """
    ns, name = _UNSAFE.sub("-", namespace.lower()), _UNSAFE.sub("-", pod.lower())
    base = f"{NETNS_PREFIX}{ns}-{name}"
    if not hashed and len(base) <= NETNS_MAX and (ns, name) == (namespace, pod):
        return base
    suffix = _digest(namespace, pod)[:8]
    return f"{base[: NETNS_MAX - len(suffix) - 1]}-{suffix}"


def host_ifname(namespace: str, pod: str) -> str:
    """Host side of the pod's veth: ``lxc`` and 12 hex digits of the pod's hash (15 chars)."""
    return "lxc" + _digest(namespace, pod)[: IFNAMSIZ - 3]
