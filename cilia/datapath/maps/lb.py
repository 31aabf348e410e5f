"""The service maps: ``cilia_lb4`` (ClusterIP:port/proto → backends) and the per-connection
``cilia_lb4_ct`` (client tuple → chosen backend) and ``cilia_lb4_rev`` (backend-side tuple →
frontend, for replies), all IPv4.

In ``cilia_lb4`` a frontend's slot 0 holds the number of backends and slots 1..n the backends. A
sync writes the backend slots before the count and removes surplus slots only after the count went
down, so the datapath never picks a slot that is missing.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from ctypes import Structure, c_uint8, c_uint16
from typing import NamedTuple

from cilia.datapath.bpf.libbpf import MapFd

MAP = "cilia_lb4"
CT_MAP = "cilia_lb4_ct"
REV_MAP = "cilia_lb4_rev"
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


class Frontend(NamedTuple):
    ip: str
    port: int
    protocol: str  # TCP | UDP

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}/{self.protocol}"


class Backend(NamedTuple):
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


KEY_SIZE = ctypes.sizeof(Lb4Key)
VALUE_SIZE = ctypes.sizeof(Lb4Value)
TUPLE_SIZE = ctypes.sizeof(Lb4Tuple)
ADDR_SIZE = ctypes.sizeof(Lb4Addr)


def _addr(ip: str) -> ctypes.Array[c_uint8]:
    return (c_uint8 * 4)(*ipaddress.IPv4Address(ip).packed)


def _ip(raw: ctypes.Array[c_uint8]) -> str:
    return str(ipaddress.IPv4Address(bytes(raw)))


def make_key(fe: Frontend, slot: int) -> Lb4Key:
    return Lb4Key(_addr(fe.ip), socket.htons(fe.port), PROTOS[fe.protocol], 0, slot, 0)


class LbMap:
    """Typed access to the service maps."""

    def __init__(self, lb: MapFd, ct: MapFd | None = None, rev: MapFd | None = None) -> None:
        self.m, self.ct, self.rev = lb, ct, rev

    def dump(self) -> dict[Frontend, tuple[Backend, ...]]:
        """Every frontend with its backends in slot order."""
        raw: dict[Frontend, dict[int, Lb4Value]] = {}
        for k in self.m.keys(Lb4Key):
            val = Lb4Value()
            if self.m.lookup(k, val):
                fe = Frontend(_ip(k.addr), socket.ntohs(k.port), PROTO_NAMES.get(k.proto, str(k.proto)))
                raw.setdefault(fe, {})[int(k.slot)] = val
        out = {}
        for fe, slots in sorted(raw.items()):
            n = slots[0].count if 0 in slots else 0
            out[fe] = tuple(Backend(_ip(slots[i].addr), socket.ntohs(slots[i].port))
                            for i in range(1, n + 1) if i in slots)
        return out

    def frontend_of(self, src: str, dst: str, sport: int, dport: int, proto: int) -> Backend | None:
        """The ClusterIP:port a translated connection was addressed to, from its backend-side tuple
        (client, backend, ports, protocol) in ``cilia_lb4_rev``; None when it holds no such entry."""
        if self.rev is None or proto not in PROTO_NAMES or ":" in src or ":" in dst:
            return None
        val = Lb4Addr()
        key = Lb4Tuple(_addr(src), _addr(dst), socket.htons(sport), socket.htons(dport), proto)
        if not self.rev.lookup(key, val):
            return None
        return Backend(_ip(val.addr), socket.ntohs(val.port))

    def sync(self, want: Mapping[Frontend, Sequence[Backend]]) -> None:
        """Full sync: exactly ``want`` afterwards (backends before counts, surplus slots last)."""
        have = self.dump()
        stale_slots: list[Lb4Key] = []
        for fe, backends in want.items():
            backends = tuple(backends)
            old = have.get(fe)
            if old == backends:
                continue
            for i, be in enumerate(backends, start=1):
                self.m.update(make_key(fe, i), Lb4Value(_addr(be.ip), socket.htons(be.port), 0))
            self.m.update(make_key(fe, 0), Lb4Value(_addr("0.0.0.0"), 0, len(backends)))
            stale_slots += [make_key(fe, i) for i in range(len(backends) + 1, len(old or ()) + 1)]
        for fe, old in have.items():
            if fe not in want:
                stale_slots.append(make_key(fe, 0))  # the frontend goes first, then its slots
                stale_slots += [make_key(fe, i) for i in range(1, len(old) + 1)]
        for k in stale_slots:
            self.m.delete(k)
        # Connections pinned to a backend that is gone pick a new one on their next packet.
        if self.ct is not None:
            live = {(fe, be) for fe, bes in want.items() for be in bes}
            for k in self.ct.keys(Lb4Tuple):
                val = Lb4Addr()
                if self.ct.lookup(k, val):
                    fe = Frontend(_ip(k.daddr), socket.ntohs(k.dport), PROTO_NAMES.get(k.proto, "?"))
                    if (fe, Backend(_ip(val.addr), socket.ntohs(val.port))) not in live:
                        self.ct.delete(k)
