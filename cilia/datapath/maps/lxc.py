"""The local endpoints map (``cilia_lxc``, as Cilium's lxc map): a pod's address → its host veth, the
endpoint that owns it and the two MACs host routing writes (the pod's ``eth0`` as destination, the host
veth as source).

The agent writes it from its own state when a pod's device is set up and removes it with the device;
nothing a pod sends ever changes it. The datapath uses an entry only while the device still belongs to
that endpoint and the endpoint is ready; anything else takes the fib lookup, as before the map.
"""

from __future__ import annotations

import ctypes
import ipaddress
from ctypes import Structure, c_uint8, c_uint32
from typing import NamedTuple

from cilia.datapath.bpf.libbpf import MapFd

MAP = "cilia_lxc"
MAX_ENTRIES = 8192


class LxcKey(Structure):
    _fields_ = [("family", c_uint8), ("pad", c_uint8 * 3), ("addr", c_uint8 * 16)]


class LxcValue(Structure):
    _fields_ = [("macs", c_uint8 * 12), ("ifindex", c_uint32), ("ep_id", c_uint32)]


KEY_SIZE = ctypes.sizeof(LxcKey)
VALUE_SIZE = ctypes.sizeof(LxcValue)


class LocalEndpoint(NamedTuple):
    ip: str
    ifindex: int
    endpoint_id: int
    pod_mac: str  # the destination MAC written into host-routed packets
    host_mac: str  # the source MAC


def mac_bytes(mac: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` → 6 bytes (ValueError for anything else)."""
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_str(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def make_key(ip: str) -> LxcKey:
    addr = ipaddress.ip_address(ip)
    k = LxcKey()
    k.family = addr.version
    raw = addr.packed
    ctypes.memmove(k.addr, raw, len(raw))  # IPv4: the first 4 bytes, the rest zero (as struct flow)
    return k


def _ip_of(k: LxcKey) -> str:
    raw = bytes(k.addr)
    return str(ipaddress.ip_address(raw[:4] if k.family == 4 else raw))


class LxcMap:
    """Typed access to the local endpoints map."""

    def __init__(self, m: MapFd) -> None:
        self.m = m

    def set(self, e: LocalEndpoint) -> None:
        v = LxcValue()
        ctypes.memmove(v.macs, mac_bytes(e.pod_mac) + mac_bytes(e.host_mac), 12)
        v.ifindex = e.ifindex
        v.ep_id = e.endpoint_id
        self.m.update(make_key(e.ip), v)

    def get(self, ip: str) -> LocalEndpoint | None:
        v = LxcValue()
        if not self.m.lookup(make_key(ip), v):
            return None
        macs = bytes(v.macs)
        return LocalEndpoint(str(ipaddress.ip_address(ip)), int(v.ifindex), int(v.ep_id),
                             mac_str(macs[:6]), mac_str(macs[6:]))

    def delete(self, ip: str) -> bool:
        return self.m.delete(make_key(ip))

    def dump(self) -> list[LocalEndpoint]:
        """Every entry, sorted by ifindex then address."""
        out = []
        for k in self.m.keys(LxcKey):  # type: ignore[arg-type]
            e = self.get(_ip_of(k))  # type: ignore[arg-type]
            if e is not None:
                out.append(e)
        return sorted(out, key=lambda e: (e.ifindex, ipaddress.ip_address(e.ip).version, e.ip))

    def delete_device(self, ifindex: int) -> int:
        """Remove every entry that points at ``ifindex``; how many."""
        n = 0
        for e in self.dump():
            if e.ifindex == ifindex and self.delete(e.ip):
                n += 1
        return n
