"""A pod's own ``/etc/resolv.conf`` and ``/etc/hosts``, written as the kubelet writes them.

The files live in ``/etc/netns/<pod netns>/``: ``ip netns exec <netns>`` (how everything is run in a
pod: ``cilia exec`` and container commands) gives the program a private mount namespace in which
each file of that directory is bind-mounted over its namesake in ``/etc``. The directory is created
with the pod and removed with it.

* ``resolv.conf``: the lab's DNS server of the pod's node (198.19.<node>.53), the search path of a
  pod in ``<ns>`` with ``dnsPolicy: ClusterFirst`` and ``options ndots:5``;
* ``hosts``: the kubelet's localhost lines and the pod's own address and name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ETC_NETNS = Path("/etc/netns")
CLUSTER_DOMAIN = "cluster.local"


def dns_address(node_index: int) -> str:
    """The lab's DNS server of node ``node_index`` (a world host's address)."""
    return f"198.19.{node_index}.53"


def directory(netns_name: str) -> Path:
    return ETC_NETNS / netns_name


def resolv_conf(namespace: str, nameserver: str) -> str:
    search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
    return f"search {search}\nnameserver {nameserver}\noptions ndots:5\n"


def hosts(ip: str, name: str, ip6: str = "") -> str:
    """The kubelet's hosts file: the localhost lines, then the pod's addresses with its name (a
    dual-stack pod's IPv6 one first, so the last line stays its IPv4 address, podIP)."""
    return (
        "# Kubernetes-managed hosts file.\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
        + (f"{ip6}\t{name}\n" if ip6 else "")
        + f"{ip}\t{name}\n"
    )


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)  # read by the pod's unprivileged commands, as /etc/resolv.conf is
    os.replace(tmp, path)


def write(netns_name: str, namespace: str, name: str, ip: str, nameserver: str, ip6: str = "") -> Path:
    """Write the pod's two files; their directory."""
    d = directory(netns_name)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    _write(d / "resolv.conf", resolv_conf(namespace, nameserver))
    _write(d / "hosts", hosts(ip, name, ip6))
    return d


def remove(netns_name: str) -> None:
    """Remove the pod's directory (no error if it is gone). /etc/netns itself stays: it is the
    machine's (``ip netns`` uses it), not the lab's."""
    shutil.rmtree(directory(netns_name), ignore_errors=True)
