"""The service maps: ``cilia_lb4`` (ClusterIP:port/proto → backends) and the per-connection
``cilia_lb4_ct`` (client tuple → chosen backend) and ``cilia_lb4_rev`` (backend-side tuple →
frontend, for replies), for IPv4; ``cilia_lb6``, ``cilia_lb6_ct`` and ``cilia_lb6_rev`` the same
for IPv6 frontends (``bpf/lb6.h``). A frontend's family picks its maps; its backends are of the
same family.

In ``cilia_lb4`` a frontend's slot 0 holds the number of backends and slots 1..n the backends. A
sync writes the backend slots before the count and removes surplus slots only after the count went
down, so the datapath never picks a slot that is missing.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
from collections.abc import Callable, Mapping, Sequence
from ctypes import Structure, c_uint8, c_uint16
from typing import NamedTuple

from cilia.datapath.bpf.libbpf import MapFd

MAP = "cilia_lb4"
CT_MAP = "cilia_lb4_ct"
REV_MAP = "cilia_lb4_rev"
MAP6 = "cilia_lb6"
CT_MAP6 = "cilia_lb6_ct"
REV_MAP6 = "cilia_lb6_rev"
MAX_ENTRIES = 65536
PROTOS = {"TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP}
PROTO_NAMES = {v: k for k, v in PROTOS.items()}


class Lb4Key(Structure):
    _fields_ = [("addr", c_uint8 * 4), ("port", c_uint16), ("proto", c_uint8), ("pad", c_uint8),
                ("slot", c_uint16), ("pad2", c_uint16)]


class Lb4Value(Structure):
    _fields_ = [("addr", c_uint8 * 4), ("port", c_uint16), ("count", c_uint16)]


class Lb4Tuple(Structure):
    _fields_ = [("saddr", c_uint8 * 4), ("daddr", c_uint8 * 4), ("sport", c_uint16), ("dport", c_uint16),
                ("proto", c_uint8), ("pad", c_uint8 * 3)]


class Lb4Addr(Structure):
    _fields_ = [("addr", c_uint8 * 4), ("port", c_uint16), ("pad", c_uint16)]


class Lb6Key(Structure):
    _fields_ = [("addr", c_uint8 * 16), ("port", c_uint16), ("proto", c_uint8), ("pad", c_uint8),
                ("slot", c_uint16), ("pad2", c_uint16)]


class Lb6Value(Structure):
    _fields_ = [("addr", c_uint8 * 16), ("port", c_uint16), ("count", c_uint16)]


class Lb6Tuple(Structure):
    _fields_ = [("saddr", c_uint8 * 16), ("daddr", c_uint8 * 16), ("sport", c_uint16), ("dport", c_uint16),
                ("proto", c_uint8), ("pad", c_uint8 * 3)]


class Lb6Addr(Structure):
    _fields_ = [("addr", c_uint8 * 16), ("port", c_uint16), ("pad", c_uint16)]


class Frontend(NamedTuple):
    ip: str
    port: int
    protocol: str  # TCP | UDP

    def __str__(self) -> str:
        return f"{_bracket(self.ip)}:{self.port}/{self.protocol}"


class Backend(NamedTuple):
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{_bracket(self.ip)}:{self.port}"


def _bracket(ip: str) -> str:
    """An address as written before a port: IPv6 in brackets (``[2001:2::1]:80``)."""
    return f"[{ip}]" if ":" in ip else ip


KEY_SIZE = ctypes.sizeof(Lb4Key)
VALUE_SIZE = ctypes.sizeof(Lb4Value)
TUPLE_SIZE = ctypes.sizeof(Lb4Tuple)
ADDR_SIZE = ctypes.sizeof(Lb4Addr)
KEY6_SIZE = ctypes.sizeof(Lb6Key)
VALUE6_SIZE = ctypes.sizeof(Lb6Value)
TUPLE6_SIZE = ctypes.sizeof(Lb6Tuple)
ADDR6_SIZE = ctypes.sizeof(Lb6Addr)


def _addr(ip: str) -> ctypes.Array[c_uint8]:
    return (c_uint8 * 4)(*ipaddress.IPv4Address(ip).packed)


def _ip(raw: ctypes.Array[c_uint8]) -> str:
    return str(ipaddress.ip_address(bytes(raw)))


def _addr6(ip: str) -> ctypes.Array[c_uint8]:
    return (c_uint8 * 16)(*ipaddress.IPv6Address(ip).packed)


def make_key(fe: Frontend, slot: int) -> Lb4Key:
    return Lb4Key(_addr(fe.ip), socket.htons(fe.port), PROTOS[fe.protocol], 0, slot, 0)


def make_key6(fe: Frontend, slot: int) -> Lb6Key:
    return Lb6Key(_addr6(fe.ip), socket.htons(fe.port), PROTOS[fe.protocol], 0, slot, 0)


class _Family(NamedTuple):
    """One family's service maps and how to build their structs."""

    m: MapFd
    ct: MapFd | None
    rev: MapFd | None
    key: type[Structure]
    value: type[Structure]
    tuple_: type[Structure]
    addr_: type[Structure]
    make_key: Callable[[Frontend, int], Structure]
    pack: Callable[[str], ctypes.Array[c_uint8]]
    unspecified: str


def is_v6(ip: str) -> bool:
    return ":" in ip


class LbMap:
    """Typed access to the service maps (the IPv6 ones when given: ``m6``, ``ct6``, ``rev6``)."""

    def __init__(self, lb: MapFd, ct: MapFd | None = None, rev: MapFd | None = None,
                 m6: MapFd | None = None, ct6: MapFd | None = None, rev6: MapFd | None = None) -> None:
        self.m, self.ct, self.rev = lb, ct, rev
        self.families = [_Family(lb, ct, rev, Lb4Key, Lb4Value, Lb4Tuple, Lb4Addr, make_key, _addr,
                                 "0.0.0.0")]
        if m6 is not None:
            self.families.append(_Family(m6, ct6, rev6, Lb6Key, Lb6Value, Lb6Tuple, Lb6Addr, make_key6,
                                         _addr6, "::"))

    def _family(self, ip: str) -> _Family | None:
        if not is_v6(ip):
            return self.families[0]
        return self.families[1] if len(self.families) > 1 else None

    def dump(self) -> dict[Frontend, tuple[Backend, ...]]:
        """Every frontend with its backends in slot order (IPv4 frontends, then IPv6)."""
        out: dict[Frontend, tuple[Backend, ...]] = {}
        for fam in self.families:
            raw: dict[Frontend, dict[int, Structure]] = {}
            for k in fam.m.keys(fam.key):
                val = fam.value()
                if fam.m.lookup(k, val):
                    fe = Frontend(_ip(k.addr), socket.ntohs(k.port), PROTO_NAMES.get(k.proto, str(k.proto)))
                    raw.setdefault(fe, {})[int(k.slot)] = val
            for fe, slots in sorted(raw.items()):
                n = slots[0].count if 0 in slots else 0
                out[fe] = tuple(Backend(_ip(slots[i].addr), socket.ntohs(slots[i].port))
                                for i in range(1, n + 1) if i in slots)
        return out

    def frontend_of(self, src: str, dst: str, sport: int, dport: int, proto: int) -> Backend | None:
        """The ClusterIP:port a translated connection was addressed to, from its backend-side tuple
        (client, backend, ports, protocol) in ``cilia_lb4_rev``/``cilia_lb6_rev``; None when it
        holds no such entry."""
        fam = self._family(src)
        if fam is None or fam.rev is None or proto not in PROTO_NAMES or is_v6(src) != is_v6(dst):
            return None
        val = fam.addr_()
        key = fam.tuple_(fam.pack(src), fam.pack(dst), socket.htons(sport), socket.htons(dport), proto)
        if not fam.rev.lookup(key, val):
            return None
        return Backend(_ip(val.addr), socket.ntohs(val.port))

    def sync(self, want: Mapping[Frontend, Sequence[Backend]]) -> None:
        """Full sync: exactly ``want`` afterwards (backends before counts, surplus slots last). An
        IPv6 frontend without the IPv6 maps, or a backend of the other family, is an error."""
        have = self.dump()
        for fe, backends in want.items():
            if self._family(fe.ip) is None:
                raise ValueError(f"service frontend {fe}: this datapath has no IPv6 service maps")
            if any(is_v6(b.ip) != is_v6(fe.ip) for b in backends):
                raise ValueError(f"service frontend {fe}: a backend of the other address family")
        stale_slots: list[tuple[_Family, Structure]] = []
        for fe, backends in want.items():
            fam = self._family(fe.ip)
            assert fam is not None
            backends = tuple(backends)
            old = have.get(fe)
            if old == backends:
                continue
            for i, be in enumerate(backends, start=1):
                fam.m.update(fam.make_key(fe, i), fam.value(fam.pack(be.ip), socket.htons(be.port), 0))
            fam.m.update(fam.make_key(fe, 0), fam.value(fam.pack(fam.unspecified), 0, len(backends)))
            stale_slots += [(fam, fam.make_key(fe, i)) for i in range(len(backends) + 1, len(old or ()) + 1)]
        for fe, old in have.items():
            fam = self._family(fe.ip)
            if fe not in want and fam is not None:
                stale_slots.append((fam, fam.make_key(fe, 0)))  # the frontend goes first, then its slots
                stale_slots += [(fam, fam.make_key(fe, i)) for i in range(1, len(old) + 1)]
        for fam, k in stale_slots:
            fam.m.delete(k)
        # Connections pinned to a backend that is gone pick a new one on their next packet.
        live = {(fe, be) for fe, bes in want.items() for be in bes}
        for fam in self.families:
            if fam.ct is None:
                continue
            for k in fam.ct.keys(fam.tuple_):
                val = fam.addr_()
                if fam.ct.lookup(k, val):
                    fe = Frontend(_ip(k.daddr), socket.ntohs(k.dport), PROTO_NAMES.get(k.proto, "?"))
                    if (fe, Backend(_ip(val.addr), socket.ntohs(val.port))) not in live:
                        fam.ct.delete(k)
