"""The veth pair that connects a lab namespace (a pod or a world host) to the node.

The host side ``lxc…``/``cilia-w…`` stays in the node's namespace and carries the gateway as a /32;
the peer ``eth0`` inside the namespace carries the workload's /32 and routes the lab's ranges (and
nothing else: no default route) through the gateway, so that without any agent running a workload
cannot even address a packet to the world outside the lab. Both pods and world hosts are plumbed
this way; only what happens between creating the pair and addressing the host side differs (a
pod's datapath is attached in between, so that no packet is ever routed to it unenforced).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from pyroute2 import IPRoute

from cilia.lab import netns
from cilia.lab.names import POD_IFNAME

RT_SCOPE_LINK = 253


def add_pair(host_ifname: str, namespace: str) -> int:
    """Create the pair (peer ``eth0`` in ``namespace``), set the host side up; its ifindex."""
    with IPRoute() as ipr:
        ipr.link("add", ifname=host_ifname, kind="veth", peer={"ifname": POD_IFNAME, "net_ns_fd": namespace})
        idx: int = ipr.link_lookup(ifname=host_ifname)[0]
        ipr.link("set", index=idx, state="up")
    return idx


def address_host_side(idx: int, gateway: str, ip: str) -> None:
    """The gateway /32 on the host side and the route to the workload's /32 through it."""
    with IPRoute() as ipr:
        ipr.addr("add", index=idx, address=gateway, prefixlen=32)
        ipr.route("add", dst=f"{ip}/32", oif=idx, scope=RT_SCOPE_LINK)


LAB_ROUTES = ("198.18.0.0/15",)  # pods, services, world hosts, nodes' underlay: every lab address


def configure_peer(namespace: str, ip: str, gateway: str, routes: Sequence[str] = LAB_ROUTES) -> None:
    """Inside ``namespace``: IPv6 off, ``lo`` and ``eth0`` up, ``ip``/32, the gateway on-link, then
    ``routes`` via the gateway: the lab's ranges only, never a default route (the first of the lab's
    two guards; :mod:`cilia.lab.guard` is the second)."""
    # A netlink socket opened inside the namespace stays bound to it (no helper process).
    with netns.entered(namespace), IPRoute() as p:
        # IPv4-only workloads: the datapath enforces IPv4, so no IPv6 traffic may leave one.
        # (/proc/sys/net shows the namespace of the thread that opens it.)
        for conf in ("all", "default", POD_IFNAME):
            Path(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6").write_text("1\n")
        p.link("set", index=p.link_lookup(ifname="lo")[0], state="up")
        eth = p.link_lookup(ifname=POD_IFNAME)[0]
        p.link("set", index=eth, state="up")
        p.addr("add", index=eth, address=ip, prefixlen=32)
        p.route("add", dst=f"{gateway}/32", oif=eth, scope=RT_SCOPE_LINK)
        for dst in routes:
            p.route("add", dst=dst, gateway=gateway, oif=eth)


def remove(host_ifname: str, namespace: str, own_link: bool = True) -> list[str]:
    """Delete the host side (its peer, route and address go with it) and the namespace; the errors.
    ``own_link`` False: creating the pair failed, so a link of that name is someone else's."""
    errors: list[str] = []
    try:
        with IPRoute() as ipr:
            for idx in ipr.link_lookup(ifname=host_ifname) if own_link else ():
                ipr.link("del", index=idx)
    except Exception as e:  # broad: collected and returned; the namespace is removed all the same
        errors.append(f"delete {host_ifname}: {e}")
    try:
        netns.remove(namespace)
    except Exception as e:  # broad: collected and returned to the caller, which reports them
        errors.append(f"remove netns {namespace}: {e}")
    return errors


def remove_log(log_path: str) -> None:
    """A workload's log file, and its directory once empty."""
    with contextlib.suppress(FileNotFoundError):
        Path(log_path).unlink()
    with contextlib.suppress(OSError):
        Path(log_path).parent.rmdir()
