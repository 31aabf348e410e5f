"""The conntrack map (``cilia_ct``): LRU hash of (endpoint, direction, original 5-tuple).

An entry is opened by an allowed forward packet (TCP: only a pure SYN; ICMP: only an echo request)
and lets the replies of that connection pass without a policy lookup. Forward packets are always
re-checked against policy (semantics.md §4.9). ICMP echo uses the echo id as both ports.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import time
from collections.abc import Callable
from ctypes import Structure, c_uint8, c_uint16, c_uint32, c_uint64
from typing import NamedTuple

from cilia.datapath.bpf.libbpf import MapFd

MAP = "cilia_ct"
MAX_ENTRIES = 262144


class CtKey(Structure):
    _fields_ = [
        ("ep_id", c_uint32),
        ("direction", c_uint8),
        ("proto", c_uint8),
        ("family", c_uint8),
        ("pad", c_uint8),
        ("saddr", c_uint8 * 16),
        ("daddr", c_uint8 * 16),
        ("sport", c_uint16),
        ("dport", c_uint16),
    ]


class CtValue(Structure):
    _fields_ = [
        ("expires_ns", c_uint64),
        ("packets", c_uint64),
        ("bytes", c_uint64),
        ("cookie", c_uint32),
        ("flags", c_uint32),
    ]


VALUE_SIZE = ctypes.sizeof(CtValue)


class CtEntry(NamedTuple):
    endpoint_id: int
    direction: int
    proto: int
    src: str
    dst: str
    sport: int
    dport: int
    expires_in_s: float  # negative: expired, waiting for LRU eviction
    packets: int
    bytes: int
    cookie: int


def _addr(raw: bytes, family: int) -> str:
    return str(ipaddress.ip_address(raw[:4] if family == 4 else raw))


def _monotonic_ns() -> int:
    # bpf_ktime_get_ns is CLOCK_MONOTONIC
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def decode(k: CtKey, v: CtValue, now_ns: int) -> CtEntry:
    return CtEntry(int(k.ep_id), int(k.direction), int(k.proto), _addr(bytes(k.saddr), k.family),
                   _addr(bytes(k.daddr), k.family), socket.ntohs(k.sport), socket.ntohs(k.dport),
                   (v.expires_ns - now_ns) / 1e9, int(v.packets), int(v.bytes), int(v.cookie))


class CtMap:
    """Typed access to the conntrack table."""

    def __init__(self, m: MapFd) -> None:
        self.m = m

    def _items(self) -> list[tuple[CtKey, CtEntry]]:
        now = _monotonic_ns()
        out = []
        for k in self.m.keys(CtKey):
            v = CtValue()
            if self.m.lookup(k, v):
                out.append((k, decode(k, v, now)))  # type: ignore[arg-type]
        return out

    def dump(self, endpoint_id: int | None = None) -> list[CtEntry]:
        """Entries (of one endpoint, or all), sorted."""
        return sorted(e for _, e in self._items() if endpoint_id in (None, e.endpoint_id))

    def gc(self) -> int:
        """Delete expired entries (the datapath treats them as absent already); returns how many.
        Each is read again just before its delete so that one refreshed meanwhile stays."""
        n = 0
        for k in self.m.keys(CtKey):
            v = CtValue()
            if self.m.lookup(k, v) and v.expires_ns <= _monotonic_ns() and self.m.delete(k):
                n += 1
        return n

    def flush(self, predicate: Callable[[CtEntry], bool] | None = None) -> int:
        """Delete entries matching ``predicate`` (all when None); returns how many."""
        n = 0
        for k, e in self._items():
            if (predicate is None or predicate(e)) and self.m.delete(k):
                n += 1
        return n
