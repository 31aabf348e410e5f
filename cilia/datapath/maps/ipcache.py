"""The ipcache maps (``cilia_ipcache4``/``cilia_ipcache6``): LPM tries from address prefix to identity.

A packet's remote identity is the identity of the longest prefix containing the peer address; a miss
means ``reserved:world`` (2).
"""

from __future__ import annotations

import ctypes
import ipaddress
from ctypes import Structure, c_uint8, c_uint32
from typing import NamedTuple

from cilia.datapath.bpf.libbpf import MapFd

MAP_V4 = "cilia_ipcache4"
MAP_V6 = "cilia_ipcache6"
MAX_ENTRIES = 524288
WORLD = 2
WORLD_IPV6 = 10  # bpf/policy.h lookup_identity: an IPv6 miss is reserved:world-ipv6

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


class Ipcache4Key(Structure):
    _fields_ = [("prefixlen", c_uint32), ("addr", c_uint8 * 4)]


class Ipcache6Key(Structure):
    _fields_ = [("prefixlen", c_uint32), ("addr", c_uint8 * 16)]


class IpcacheValue(Structure):
    _fields_ = [("identity", c_uint32), ("flags", c_uint32)]


class IpcacheEntry(NamedTuple):
    prefix: str
    identity: int


def make_key(prefix: str | Prefix) -> Ipcache4Key | Ipcache6Key:
    """The LPM key for a prefix (a bare address is a host prefix)."""
    net = ipaddress.ip_network(prefix, strict=False) if isinstance(prefix, str) else prefix
    raw = net.network_address.packed
    if net.version == 4:
        return Ipcache4Key(net.prefixlen, (c_uint8 * 4)(*raw))
    return Ipcache6Key(net.prefixlen, (c_uint8 * 16)(*raw))


def _prefix_of(key: Ipcache4Key | Ipcache6Key) -> str:
    raw = bytes(key.addr)
    addr = ipaddress.ip_address(raw)
    return str(ipaddress.ip_network(f"{addr}/{key.prefixlen}", strict=False))


class IpcacheMap:
    """Typed access to both ipcache tries."""

    def __init__(self, v4: MapFd, v6: MapFd) -> None:
        self.v4, self.v6 = v4, v6

    def _map(self, key: Ipcache4Key | Ipcache6Key) -> MapFd:
        return self.v4 if isinstance(key, Ipcache4Key) else self.v6

    def upsert(self, prefix: str | Prefix, identity: int) -> None:
        key = make_key(prefix)
        self._map(key).update(key, IpcacheValue(identity, 0))

    def delete(self, prefix: str | Prefix) -> bool:
        key = make_key(prefix)
        return self._map(key).delete(key)

    def upsert_many(self, entries: list[tuple[str, int]]) -> None:
        """Batch insert (full sync)."""
        keys = [make_key(p) for p, _ in entries]
        for m, ktype in ((self.v4, Ipcache4Key), (self.v6, Ipcache6Key)):
            sel = [(k, i) for k, (_, i) in zip(keys, entries, strict=True) if isinstance(k, ktype)]
            if not sel:
                continue
            karr = (ktype * len(sel))(*(k for k, _ in sel))
            varr = (IpcacheValue * len(sel))(*(IpcacheValue(i, 0) for _, i in sel))
            m.update_batch(karr, varr, len(sel))

    def identity_of(self, address: str) -> int:
        """Longest-prefix lookup as the datapath does it (miss: world; world-ipv6 for IPv6)."""
        ip = ipaddress.ip_address(address)
        key = make_key(f"{ip}/{ip.max_prefixlen}")
        val = IpcacheValue()
        if self._map(key).lookup(key, val):
            return int(val.identity)
        return WORLD_IPV6 if ip.version == 6 else WORLD

    def dump(self) -> list[IpcacheEntry]:
        """Every entry, sorted by address family, prefix."""
        out: list[IpcacheEntry] = []
        for m, ktype in ((self.v4, Ipcache4Key), (self.v6, Ipcache6Key)):
            for k in m.keys(ktype):
                val = IpcacheValue()
                if m.lookup(k, val):
                    out.append(IpcacheEntry(_prefix_of(k), int(val.identity)))
        out.sort(key=lambda e: (ipaddress.ip_network(e.prefix).version, ipaddress.ip_network(e.prefix)))
        return out


KEY_SIZES = {MAP_V4: ctypes.sizeof(Ipcache4Key), MAP_V6: ctypes.sizeof(Ipcache6Key)}
VALUE_SIZE = ctypes.sizeof(IpcacheValue)
