"""The lab's address guard as the datapath applies it (``bpf/guard.h``): lab traffic stays inside
198.18.0.0/15 and 2001:2::/48. A packet on an endpoint's device whose source or destination is
outside these ranges is dropped with :attr:`DropReason.OUTSIDE_LAB`, before conntrack and policy."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

LAB_RANGES: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.IPv4Network("198.18.0.0/15"),
    ipaddress.IPv6Network("2001:2::/48"),
)


@lru_cache(maxsize=65536)
def in_lab(ip: str) -> bool:
    """Whether the address is inside the lab's ranges."""
    addr = ipaddress.ip_address(ip)
    return any(addr.version == net.version and addr in net for net in LAB_RANGES)
