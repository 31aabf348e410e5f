"""Crafted Ethernet frames for BPF_PROG_TEST_RUN tests of the datapath."""

from __future__ import annotations

import ipaddress
import struct

TCP, UDP, SCTP, ICMP, ICMPV6 = 6, 17, 132, 1, 58
SYN, ACK = 0x02, 0x10


def l4_header(proto: int, sport: int, dport: int, tcp_flags: int = SYN, icmp_type: int = 8,
              icmp_id: int = 0x1234) -> bytes:
    if proto == TCP:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, tcp_flags, 65535, 0, 0)
    if proto in (UDP,):
        return struct.pack("!HHHH", sport, dport, 8, 0)
    if proto == SCTP:
        return struct.pack("!HHII", sport, dport, 0, 0)
    if proto in (ICMP, ICMPV6):
        return struct.pack("!BBHHH", icmp_type, 0, 0, icmp_id, 1)
    return b"\0" * 8


def frame(src: str, dst: str, proto: int, sport: int = 40000, dport: int = 80, *, ip_options: bytes = b"",
          payload: bytes = b"payload!", **kw: int) -> bytes:
    """An Ethernet frame carrying IPv4 (with ``ip_options``, a multiple of 4 bytes) or IPv6 (by
    address family) and the L4 header."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    l4 = l4_header(proto, sport, dport, **kw) + payload
    eth_dst, eth_src = b"\x02\0\0\0\0\x01", b"\x02\0\0\0\0\x02"
    if s.version == 4:
        ihl = 5 + len(ip_options) // 4
        ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), 1, 0, 64, proto, 0, s.packed,
                         d.packed) + ip_options
        return eth_dst + eth_src + b"\x08\x00" + ip + l4
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, s.packed, d.packed)
    return eth_dst + eth_src + b"\x86\xdd" + ip6 + l4


def arp_frame() -> bytes:
    return b"\xff" * 6 + b"\x02\0\0\0\0\x02" + b"\x08\x06" + b"\0\x01\x08\x00\x06\x04\0\x01" + b"\0" * 20
