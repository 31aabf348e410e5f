"""The conntrack maps: LRU hashes of (endpoint, direction, original 5-tuple), IPv4 in ``cilia_ct4``
(a 20-byte key), IPv6 in ``cilia_ct``. :class:`CtKey` is the one key type of this module's API (both
families); :class:`CtMap` stores each key in its family's map.

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

MAP = "cilia_ct"  # IPv6 (and IPv4 of an object from before cilia_ct4)
MAP4 = "cilia_ct4"
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


class CtKey4(Structure):
    _fields_ = [
        ("ep_id", c_uint32),
        ("direction", c_uint8),
        ("proto", c_uint8),
        ("sport", c_uint16),
        ("dport", c_uint16),
        ("pad", c_uint16),
        ("saddr", c_uint8 * 4),
        ("daddr", c_uint8 * 4),
    ]


def to_key4(k: CtKey) -> CtKey4:
    return CtKey4(ep_id=k.ep_id, direction=k.direction, proto=k.proto, sport=k.sport, dport=k.dport,
                  saddr=(c_uint8 * 4)(*k.saddr[:4]), daddr=(c_uint8 * 4)(*k.daddr[:4]))


def from_key4(k: CtKey4) -> CtKey:
    return CtKey(ep_id=k.ep_id, direction=k.direction, proto=k.proto, family=4, sport=k.sport, dport=k.dport,
                 saddr=(c_uint8 * 16)(*k.saddr), daddr=(c_uint8 * 16)(*k.daddr))


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
    """Typed access to the conntrack table: ``m`` (IPv6; IPv4 too when ``m4`` is None, an object
    from before the IPv4 map) and ``m4``."""

    def __init__(self, m: MapFd, m4: MapFd | None = None) -> None:
        self.m = m
        self.m4 = m4

    def _where(self, k: CtKey) -> tuple[MapFd, Structure]:
        if k.family == 4 and self.m4 is not None:
            return self.m4, to_key4(k)
        return self.m, k

    def ct_keys(self) -> list[CtKey]:
        """Every key of both maps (a snapshot)."""
        keys: list[CtKey] = list(self.m.keys(CtKey))  # type: ignore[arg-type]
        if self.m4 is not None:
            keys += [from_key4(k) for k in self.m4.keys(CtKey4)]  # type: ignore[arg-type]
        return keys

    def lookup(self, k: CtKey, v: CtValue) -> bool:
        m, key = self._where(k)
        return m.lookup(key, v)

    def update(self, k: CtKey, v: CtValue) -> None:
        m, key = self._where(k)
        m.update(key, v)

    def delete(self, k: CtKey) -> bool:
        m, key = self._where(k)
        return m.delete(key)

    def _items(self) -> list[tuple[CtKey, CtEntry]]:
        now = _monotonic_ns()
        out = []
        for k in self.ct_keys():
            v = CtValue()
            if self.lookup(k, v):
                out.append((k, decode(k, v, now)))
        return out

    def dump(self, endpoint_id: int | None = None) -> list[CtEntry]:
        """Entries (of one endpoint, or all), sorted."""
        return sorted(e for _, e in self._items() if endpoint_id in (None, e.endpoint_id))

    def gc(self) -> int:
        """Delete expired entries (the datapath treats them as absent already); returns how many.
        Each is read again just before its delete so that one refreshed meanwhile stays."""
        n = 0
        for k in self.ct_keys():
            v = CtValue()
            if self.lookup(k, v) and v.expires_ns <= _monotonic_ns() and self.delete(k):
                n += 1
        return n

    def flush(self, predicate: Callable[[CtEntry], bool] | None = None) -> int:
        """Delete entries matching ``predicate`` (all when None); returns how many."""
        n = 0
        for k, e in self._items():
            if (predicate is None or predicate(e)) and self.delete(k):
                n += 1
        return n
