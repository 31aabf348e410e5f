"""CIDR and IP syntax as Go parses it (``net/netip`` for Cilium, ``net.ParseCIDR`` for the CRD format)."""

from __future__ import annotations

import ipaddress
import re

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_BITS = r"\A(0|[1-9][0-9]*)\Z"  # \Z: "$" would accept "8\n"; compiled at first use (re's cache)


def parse_addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Go ``netip.ParseAddr`` (no zones, no leading zeros in IPv4 octets); None if invalid."""
    if not text or "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_prefix(text: str) -> IPNetwork | None:
    """Go ``netip.ParsePrefix``/``net.ParseCIDR``: ``addr/bits``, host bits allowed; None if invalid."""
    addr_text, sep, bits = text.partition("/")
    if not sep or not re.match(_BITS, bits):
        return None
    addr = parse_addr(addr_text)
    if addr is None or int(bits) > addr.max_prefixlen:
        return None
    return ipaddress.ip_network(f"{addr}/{bits}", strict=False)


def cidr_problem(text: str) -> str | None:
    """Cilium's ``CIDR.sanitize``: a prefix or a bare IP; the error message, or None."""
    if text == "":
        return "IP must be specified"
    if parse_prefix(text) is not None or parse_addr(text) is not None:
        return None
    return f'unable to parse CIDR: ParseAddr("{text}"): unable to parse IP'


def contains(outer: IPNetwork, inner: IPNetwork) -> bool:
    """``outer`` contains ``inner``'s address (same family), as Cilium checks ``except`` entries."""
    return outer.version == inner.version and inner.network_address in outer
