"""The DNS redirection maps: ``cilia_dns_redirect`` (endpoint id → the DNS proxy's address and port,
for endpoints whose egress policy has DNS rules) and ``cilia_dns_rev`` (the proxy-side tuple of a
redirected query, UDP or TCP → the DNS server it was sent to)."""

from __future__ import annotations

import ipaddress
import socket
from ctypes import c_uint8, c_uint32

from cilia.datapath.bpf.libbpf import MapFd
from cilia.datapath.maps.lb import Lb4Addr, Lb4Tuple

MAP = "cilia_dns_redirect"
REV_MAP = "cilia_dns_rev"


def _addr(ip: str) -> c_uint8 * 4:  # type: ignore[valid-type]
    return (c_uint8 * 4)(*ipaddress.IPv4Address(ip).packed)


class DnsMaps:
    def __init__(self, redirect: MapFd, rev: MapFd) -> None:
        self.redirect, self.rev = redirect, rev

    def set_redirect(self, endpoint_id: int, proxy: tuple[str, int] | None) -> None:
        """Send the endpoint's DNS queries to ``proxy`` (None: stop redirecting)."""
        if proxy is None:
            self.redirect.delete(c_uint32(endpoint_id))
        else:
            self.redirect.update(c_uint32(endpoint_id), Lb4Addr(_addr(proxy[0]), socket.htons(proxy[1]), 0))

    def redirects(self) -> dict[int, tuple[str, int]]:
        out = {}
        for k in self.redirect.keys(c_uint32):  # type: ignore[arg-type]
            val = Lb4Addr()
            if self.redirect.lookup(k, val):
                out[int(k.value)] = (str(ipaddress.IPv4Address(bytes(val.addr))), socket.ntohs(val.port))  # type: ignore[attr-defined]
        return dict(sorted(out.items()))

    def origin(self, client: tuple[str, int], proxy: tuple[str, int],
               proto: int = socket.IPPROTO_UDP) -> tuple[str, int] | None:
        """The DNS server a query that reached the proxy from ``client`` (over UDP or TCP) was sent to."""
        key = Lb4Tuple(_addr(client[0]), _addr(proxy[0]), socket.htons(client[1]), socket.htons(proxy[1]),
                       proto)
        val = Lb4Addr()
        if not self.rev.lookup(key, val):
            return None
        return str(ipaddress.IPv4Address(bytes(val.addr))), socket.ntohs(val.port)
