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
import socket
from collections.abc import Sequence
from pathlib import Path

from pyroute2 import IPRoute

from cilia.datapath.dualstack import ipv6_of
from cilia.lab import bigtcp, netns
from cilia.lab.names import POD_IFNAME

RT_SCOPE_LINK = 253
IFA_F_NODAD = 0x02  # no duplicate address detection: the address is usable at once (the lab owns it)
LAB_RANGE_V6 = "2001:2::/48"
_CONF6 = Path("/proc/sys/net/ipv6/conf")


def ipv6_available() -> bool:
    """Whether this thread's network namespace can carry the lab's IPv6: IPv6 is on for new
    devices, and the kernel has per-device ``force_forwarding`` (6.17+), with which the node
    forwards IPv6 only from its lab devices (a namespace-wide ``forwarding`` would make every
    device of the machine a router). Without it the lab is IPv4 only, as before."""
    try:
        return (_CONF6 / "default" / "disable_ipv6").read_text().strip() == "0" and (
            _CONF6 / "default" / "force_forwarding").exists()
    except OSError:
        return False


def add_pair(host_ifname: str, namespace: str) -> int:
    """Create the pair (peer ``eth0`` in ``namespace``), set the host side up, BIG TCP on both sides
    (:mod:`cilia.lab.bigtcp`) unless turned off; its ifindex.

    The host side does no duplicate address detection: while its link-local address is tentative
    (about a second after the pod's side comes up) the node sends no neighbour solicitation from it,
    so the first IPv6 packets routed to a pod that just started waited a second for the retry."""
    with IPRoute() as ipr:
        ipr.link("add", ifname=host_ifname, kind="veth", peer={"ifname": POD_IFNAME, "net_ns_fd": namespace})
        idx: int = ipr.link_lookup(ifname=host_ifname)[0]
        with contextlib.suppress(FileNotFoundError):  # IPv6 off on this machine
            (_CONF6 / host_ifname / "accept_dad").write_text("0\n")
        ipr.link("set", index=idx, state="up")
    if bigtcp.wanted():  # every lab device takes 192 KiB packets (a smaller one would segment them)
        bigtcp.set_max_sizes(host_ifname)
        bigtcp.set_max_sizes(POD_IFNAME, namespace=namespace)
    return idx


def address_host_side(idx: int, gateway: str, ip: str, ipv6: bool = False) -> None:
    """The gateway /32 on the host side and the route to the workload's /32 through it; with
    ``ipv6`` also their IPv6 twins (/128) and IPv6 forwarding from this device."""
    with IPRoute() as ipr:
        ipr.addr("add", index=idx, address=gateway, prefixlen=32)
        ipr.route("add", dst=f"{ip}/32", oif=idx, scope=RT_SCOPE_LINK)
        if ipv6:
            name = ipr.get_links(idx)[0].get_attr("IFLA_IFNAME")
            # force_forwarding: this device's packets are forwarded; forwarding (per device, a
            # router's behaviour on it) is what bpf_fib_lookup checks before eBPF host routing
            for key in ("force_forwarding", "forwarding"):
                (_CONF6 / name / key).write_text("1\n")
            ipr.addr("add", index=idx, address=ipv6_of(gateway), prefixlen=128, flags=IFA_F_NODAD)
            ipr.route("add", dst=f"{ipv6_of(ip)}/128", oif=idx, family=socket.AF_INET6)


LAB_ROUTES = ("198.18.0.0/15",)  # pods, services, world hosts, nodes' underlay: every lab address


def configure_peer(namespace: str, ip: str, gateway: str, routes: Sequence[str] = LAB_ROUTES,
                   ipv6: bool = False) -> None:
    """Inside ``namespace``: ``lo`` and ``eth0`` up, ``ip``/32, the gateway on-link, then
    ``routes`` via the gateway: the lab's ranges only, never a default route (the first of the lab's
    two guards; :mod:`cilia.lab.guard` is the second). With ``ipv6`` the same for the IPv6 twins
    (:func:`cilia.datapath.dualstack.ipv6_of`) and 2001:2::/48; without it IPv6 is off."""
    # A netlink socket opened inside the namespace stays bound to it (no helper process).
    with netns.entered(namespace), IPRoute() as p:
        # (/proc/sys/net shows the namespace of the thread that opens it.)
        for conf in ("all", "default", POD_IFNAME):
            if ipv6:  # addresses only from the lab: no router advertisements, no autoconfiguration
                for key, value in (("accept_ra", "0"), ("autoconf", "0"), ("accept_dad", "0")):
                    (_CONF6 / conf / key).write_text(value + "\n")
            else:  # IPv4 only: no IPv6 packet may leave the workload
                (_CONF6 / conf / "disable_ipv6").write_text("1\n")
        p.link("set", index=p.link_lookup(ifname="lo")[0], state="up")
        eth = p.link_lookup(ifname=POD_IFNAME)[0]
        p.link("set", index=eth, state="up")
        p.addr("add", index=eth, address=ip, prefixlen=32)
        p.route("add", dst=f"{gateway}/32", oif=eth, scope=RT_SCOPE_LINK)
        for dst in routes:
            p.route("add", dst=dst, gateway=gateway, oif=eth)
        if ipv6:
            gw6 = ipv6_of(gateway)
            p.addr("add", index=eth, address=ipv6_of(ip), prefixlen=128, flags=IFA_F_NODAD)
            p.route("add", dst=f"{gw6}/128", oif=eth, family=socket.AF_INET6)
            p.route("add", dst=LAB_RANGE_V6, gateway=gw6, oif=eth, family=socket.AF_INET6)


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
