"""Several lab nodes on this machine: one network namespace per node, joined by an underlay bridge.

Node ``i`` is the namespace ``cilia-node-<i>``; its underlay interface ``cilia-ul`` carries
``198.18.254.<i + 1>/24`` and is the peer of ``cilia-n<i>``, a port of the bridge ``cilia-br0``
in the root namespace (the bridge carries ``198.18.254.254``, only so that agents reach the lab's etcd).
Each node routes every other node's pod /20 via that node's underlay address and forwards IPv4,
so a pod on node 1 reaches a pod on node 2 through both nodes' host stacks, where each node's
datapath sees the packet on the pod's host veth (design.md "Lab network"). Where the kernel has
per-device IPv6 forwarding (:func:`cilia.lab.veth.ipv6_available`), the underlay also carries the
addresses' IPv6 twins (:mod:`cilia.datapath.dualstack`) and each node routes every other node's
IPv6 pod /116 the same way; IPv6 is forwarded only from ``cilia-ul`` and the pods' veths
(``force_forwarding`` per device, never the namespace-wide switch).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyroute2 import IPRoute

from cilia.datapath.dualstack import ipv6_of, prefix6_of
from cilia.lab import bigtcp, netns, veth
from cilia.lab.errors import LabError
from cilia.lab.ipam import pod_cidr

BRIDGE = "cilia-br0"
# The root namespace's address on the underlay: where agents inside node namespaces reach the
# lab's etcd (127.0.0.1 of the root namespace is not theirs).
BRIDGE_ADDRESS = "198.18.254.254"
UNDERLAY_IF = "cilia-ul"
UNDERLAY_PREFIX = 24
UNDERLAY_PREFIX_V6 = 96 + UNDERLAY_PREFIX  # the twin of 198.18.254.0/24
MAX_NODES = 15
NUD_PERMANENT = 0x80


def node_netns(index: int) -> str:
    return f"cilia-node-{index}"


def root_port(index: int) -> str:
    """The bridge port (root namespace) of node ``index``'s underlay veth."""
    return f"cilia-n{index}"


def underlay_address(index: int) -> str:
    return f"198.18.254.{index + 1}"


@contextmanager
def _in(name: str) -> Iterator[IPRoute]:
    # A netlink socket opened inside the namespace stays bound to it.
    with netns.entered(name), IPRoute() as ipr:
        yield ipr


def _write_sysctl(namespace: str, path: str, value: str) -> None:
    with netns.entered(namespace):  # /proc/sys/net shows the namespace of the opening thread
        Path(path).write_text(value)


def create_nodes(count: int) -> list[str]:
    """Create nodes 0‥count-1 (namespaces, bridge, underlay, routes); everything is removed again
    if a step fails. Returns the namespace names."""
    if not 1 <= count <= MAX_NODES:
        raise LabError(f"--nodes {count}: the lab has room for 1..{MAX_NODES} nodes")
    taken = [node_netns(i) for i in range(count) if netns.exists(node_netns(i))]
    if taken:
        raise LabError(f"{', '.join(taken)} exist already (run `cilia down`)")
    try:
        with IPRoute() as ipr:
            if not ipr.link_lookup(ifname=BRIDGE):
                ipr.link("add", ifname=BRIDGE, kind="bridge")
            br = ipr.link_lookup(ifname=BRIDGE)[0]
            ipr.link("set", index=br, state="up")
            if not ipr.get_addr(index=br, address=BRIDGE_ADDRESS):
                ipr.addr("add", index=br, address=BRIDGE_ADDRESS, prefixlen=UNDERLAY_PREFIX)
        ipv6 = veth.ipv6_available()  # the root namespace's kernel and settings: the nodes' too
        macs = [_create_node(i, br, ipv6) for i in range(count)]
        for i in range(count):
            with _in(node_netns(i)) as ipr:
                ul = ipr.link_lookup(ifname=UNDERLAY_IF)[0]
                if ipv6:
                    # Fixed neighbours: bridged IPv6 frames pass the root namespace's forward hook
                    # (bridge-nf-call-ip6tables), where a lab guard drops neighbour solicitations
                    # (multicast, outside 2001:2::/48); unicast between lab addresses passes.
                    for j in range(count):
                        if j != i:
                            ipr.neigh("add", dst=ipv6_of(underlay_address(j)), lladdr=macs[j], ifindex=ul,
                                      state=NUD_PERMANENT, family=socket.AF_INET6)
                for j in range(count):
                    if j != i:
                        ipr.route("add", dst=str(pod_cidr(j)), gateway=underlay_address(j), oif=ul)
                        if ipv6:
                            gw6 = ipv6_of(underlay_address(j))
                            ipr.route("add", dst=prefix6_of(pod_cidr(j)), gateway=gw6, oif=ul,
                                      family=socket.AF_INET6)
    except BaseException as e:  # broad: whatever stopped the set-up (even ^C), undo it, then re-raise
        with contextlib.suppress(Exception):  # the set-up's error is the one to report, not the undo's
            remove_nodes()
        if isinstance(e, LabError):
            raise
        raise LabError(f"create {count} lab nodes: {e}") from e
    return [node_netns(i) for i in range(count)]


def _create_node(i: int, bridge_index: int, ipv6: bool) -> str:
    """Node ``i``'s namespace and underlay; the underlay's MAC address."""
    name = node_netns(i)
    netns.create(name)
    with IPRoute() as ipr:
        ipr.link("add", ifname=root_port(i), kind="veth",
                 peer={"ifname": UNDERLAY_IF, "net_ns_fd": name})
        port = ipr.link_lookup(ifname=root_port(i))[0]
        ipr.link("set", index=port, master=bridge_index, state="up")
    if bigtcp.wanted():  # as the pods' devices: a pod's 192 KiB packets cross the underlay whole
        bigtcp.set_max_sizes(root_port(i))
        bigtcp.set_max_sizes(UNDERLAY_IF, namespace=name)
    if ipv6:  # addresses only from the lab: no router advertisements, no autoconfiguration
        for conf in ("all", "default", UNDERLAY_IF):
            for key in ("accept_ra", "autoconf", "accept_dad"):
                _write_sysctl(name, f"/proc/sys/net/ipv6/conf/{conf}/{key}", "0\n")
        _write_sysctl(name, f"/proc/sys/net/ipv6/conf/{UNDERLAY_IF}/force_forwarding", "1\n")
    else:
        for conf in ("all", "default"):
            _write_sysctl(name, f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "1\n")
    with _in(name) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        ul = ipr.link_lookup(ifname=UNDERLAY_IF)[0]
        ipr.link("set", index=ul, state="up")
        ipr.addr("add", index=ul, address=underlay_address(i), prefixlen=UNDERLAY_PREFIX)
        if ipv6:
            ipr.addr("add", index=ul, address=ipv6_of(underlay_address(i)), prefixlen=UNDERLAY_PREFIX_V6,
                     flags=veth.IFA_F_NODAD)
        mac: str = ipr.get_links(ul)[0].get_attr("IFLA_ADDRESS")
    _write_sysctl(name, "/proc/sys/net/ipv4/ip_forward", "1\n")
    return mac


def node_exists(index: int) -> bool:
    return netns.exists(node_netns(index))


def existing_nodes() -> list[str]:
    """Node namespaces that exist now (``cilia-node-<i>``)."""
    wanted = {node_netns(i) for i in range(MAX_NODES)}
    return sorted(n for n in netns.names() if n in wanted)


def remove_nodes() -> list[str]:
    """Remove every node namespace, underlay port and the bridge; returns what was removed."""
    removed: list[str] = []
    errors: list[str] = []
    with IPRoute() as ipr:
        for i in range(MAX_NODES):
            for idx in ipr.link_lookup(ifname=root_port(i)):
                try:
                    ipr.link("del", index=idx)
                    removed.append(f"link {root_port(i)}")
                except Exception as e:  # broad: collected into one LabError after every step ran
                    errors.append(f"delete {root_port(i)}: {e}")
    for name in existing_nodes():
        try:
            netns.remove(name)
            removed.append(f"node namespace {name}")
        except Exception as e:  # broad: collected into one LabError after every step ran
            errors.append(f"remove {name}: {e}")
    with IPRoute() as ipr:
        for idx in ipr.link_lookup(ifname=BRIDGE):
            try:
                ipr.link("del", index=idx)
                removed.append(f"bridge {BRIDGE}")
            except Exception as e:  # broad: collected into one LabError after every step ran
                errors.append(f"delete {BRIDGE}: {e}")
    if errors:
        raise LabError("remove lab nodes: " + "; ".join(errors))
    return removed


def leftovers() -> list[str]:
    """What of the lab nodes still exists."""
    with IPRoute() as ipr:
        links = [n for n in [BRIDGE, *(root_port(i) for i in range(MAX_NODES))] if ipr.link_lookup(ifname=n)]
    return [f"node namespace {n}" for n in existing_nodes()] + [f"link {n}" for n in links]
