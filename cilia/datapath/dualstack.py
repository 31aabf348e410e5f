"""A lab address's IPv6 twin: every lab address (pods, world hosts, gateways) in 198.18.0.0/15 has
one IPv6 address in 2001:2::/48, its IPv4 address in the low 32 bits (``198.18.16.5`` ->
``2001:2::c612:1005``). The lab's IPv6 allocation is thereby the IPv4 one: node ``i``'s IPv6 pod
range is the /116 that holds its /20, and the agent, the lab and the offline tools agree on a
pod's IPv6 address without storing it anywhere else.
"""

from __future__ import annotations

import ipaddress

V6_BASE = ipaddress.IPv6Network("2001:2::/96")  # inside the lab's IPv6 range, 2001:2::/48
_V4_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
HOST_PREFIX_V6 = 128


def ipv6_of(ipv4: str | ipaddress.IPv4Address) -> str:
    """The IPv6 twin of a lab IPv4 address (``""`` for an address outside 198.18.0.0/15)."""
    addr = ipaddress.IPv4Address(ipv4)
    if addr not in _V4_RANGE:
        return ""
    return str(V6_BASE.network_address + int(addr))


def ipv4_of(ipv6: str | ipaddress.IPv6Address) -> str:
    """The IPv4 address whose twin ``ipv6`` is (``""`` when it is none's)."""
    addr = ipaddress.IPv6Address(ipv6)
    if addr not in V6_BASE:
        return ""
    v4 = ipaddress.IPv4Address(int(addr) - int(V6_BASE.network_address))
    return str(v4) if v4 in _V4_RANGE else ""


def prefix6_of(prefix4: str | ipaddress.IPv4Network) -> str:
    """The IPv6 twin of a lab IPv4 prefix (198.18.16.0/20 -> 2001:2::c612:1000/116)."""
    net = ipaddress.IPv4Network(prefix4)
    return f"{ipv6_of(net.network_address)}/{96 + net.prefixlen}"


def host_prefixes(ipv4: str) -> list[str]:
    """The ipcache host prefixes of a lab address: its /32 and its twin's /128."""
    six = ipv6_of(ipv4)
    return [f"{ipv4}/32", f"{six}/{HOST_PREFIX_V6}"] if six else [f"{ipv4}/32"]
