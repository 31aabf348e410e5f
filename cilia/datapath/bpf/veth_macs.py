"""The two MACs of a pod's veth pair, read by netlink from the node's side: the host veth's own and its
peer's (the pod's ``eth0``, in the pod's namespace, named by the link's netnsid), so the agent can
register a pod for host routing (cilia_lxc) without entering the pod's namespace."""

from __future__ import annotations

from pyroute2 import IPRoute

from cilia.datapath.errors import DatapathError


class VethError(DatapathError, RuntimeError):
    """The device is not a veth whose peer can be read."""


def veth_macs(ifindex: int) -> tuple[str, str]:
    """(the peer's MAC, the device's MAC) of the host-side veth ``ifindex`` in this namespace."""
    with IPRoute() as ipr:
        try:
            link = ipr.get_links(ifindex)[0]
        except Exception as e:  # pyroute2 raises NetlinkError (no such device) and others
            raise VethError(f"device {ifindex}: {e}") from e
        host_mac = link.get_attr("IFLA_ADDRESS")
        peer = link.get_attr("IFLA_LINK")
        nsid = link.get_attr("IFLA_LINK_NETNSID")
        if not host_mac or not peer:
            raise VethError(f"device {ifindex} has no veth peer")
        try:
            # IFLA_IF_NETNSID (IFLA_TARGET_NETNSID): the peer's index in the namespace of that id
            peer_link = (ipr.link("get", index=peer, IFLA_IF_NETNSID=nsid) if nsid is not None
                         else ipr.get_links(peer))[0]
        except Exception as e:  # see above
            raise VethError(f"device {ifindex}: peer {peer} (netnsid {nsid}): {e}") from e
        pod_mac = peer_link.get_attr("IFLA_ADDRESS")
        if peer_link.get_attr("IFLA_LINK") != ifindex or not pod_mac:
            raise VethError(f"device {ifindex}: its peer {peer} does not point back at it")
        return str(pod_mac), str(host_mac)
