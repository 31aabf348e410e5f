"""A pure-Python ipcache: longest-prefix match of an IP (v4 or v6) to a security identity.

The kernel keeps the same mapping in an LPM trie (semantics.md §3.3): pod and node IPs as /32 or
/128 entries, CIDR identities for the prefixes policies name. An address with no entry is world:
``reserved:world`` (2) for IPv4, ``reserved:world-ipv6`` (10) for IPv6, as the kernel's
``lookup_identity`` (a dual-stack Cilium's numbering for IPv6; IPv4 keeps the single-stack one).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

WORLD_IDENTITY = 2
WORLD_IPV6_IDENTITY = 10

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class IPCache:
    """prefix -> identity with longest-prefix lookup; unknown addresses map to ``default``
    (``default6`` for IPv6)."""

    def __init__(self, default: int = WORLD_IDENTITY, default6: int = WORLD_IPV6_IDENTITY) -> None:
        self.default = default
        self.default6 = default6
        # (version, prefix_len) -> masked address -> identity
        self._tables: dict[tuple[int, int], dict[int, int]] = {}
        self._lengths: dict[int, list[int]] = {4: [], 6: []}

    @staticmethod
    def _net(prefix: str) -> _Net:
        return ipaddress.ip_network(prefix, strict=False)

    def upsert(self, prefix: str, identity: int) -> None:
        net = self._net(prefix)
        table = self._tables.get((net.version, net.prefixlen))
        if table is None:
            table = self._tables[(net.version, net.prefixlen)] = {}
            lengths = self._lengths[net.version]
            lengths.append(net.prefixlen)
            lengths.sort(reverse=True)
        table[int(net.network_address)] = identity

    def delete(self, prefix: str) -> None:
        net = self._net(prefix)
        table = self._tables.get((net.version, net.prefixlen))
        if table is not None:
            table.pop(int(net.network_address), None)

    def lookup_prefix(self, ip: str) -> tuple[str, int] | None:
        """The longest prefix containing ``ip`` and its identity, or None."""
        addr = ipaddress.ip_address(ip)
        bits = 32 if addr.version == 4 else 128
        value = int(addr)
        for length in self._lengths[addr.version]:
            table = self._tables[(addr.version, length)]
            masked = (value >> (bits - length)) << (bits - length) if length else 0
            ident = table.get(masked)
            if ident is not None:
                net = ipaddress.ip_network((masked, length))
                return str(net), ident
        return None

    def lookup(self, ip: str) -> int:
        """The identity of ``ip`` (``default``/``default6``, i.e. world, when no prefix contains it)."""
        found = self.lookup_prefix(ip)
        if found is None:
            return self.default6 if ":" in ip else self.default
        return found[1]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for (version, length), table in sorted(self._tables.items()):
            for addr, ident in sorted(table.items()):
                net = (
                    ipaddress.IPv4Network((addr, length))
                    if version == 4
                    else ipaddress.IPv6Network((addr, length))
                )
                yield str(net), ident

    def __len__(self) -> int:
        return sum(len(t) for t in self._tables.values())
