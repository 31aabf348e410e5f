"""The endpoints map (``cilia_endpoints``): host-veth ifindex → endpoint id, identity and flags.

A packet on a device with the datapath attached but no entry here is dropped (fail closed); an entry
without ``POLICY_READY`` drops everything for that endpoint (set while a policy sync is incomplete).
"""

from __future__ import annotations

import ctypes
from ctypes import Structure, c_uint32
from enum import IntFlag
from typing import NamedTuple

from cilia.datapath.bpf.libbpf import MapFd

MAP = "cilia_endpoints"
MAX_ENTRIES = 4096


class EndpointFlags(IntFlag):
    POLICY_READY = 0x1
    ENFORCE_INGRESS = 0x2
    ENFORCE_EGRESS = 0x4
    AUDIT = 0x8

    @classmethod
    def enforcing(cls) -> EndpointFlags:
        return cls.ENFORCE_INGRESS | cls.ENFORCE_EGRESS


class EndpointValue(Structure):
    _fields_ = [("ep_id", c_uint32), ("identity", c_uint32), ("flags", c_uint32), ("pad", c_uint32)]


class EndpointInfo(NamedTuple):
    ifindex: int
    endpoint_id: int
    identity: int
    flags: EndpointFlags


VALUE_SIZE = ctypes.sizeof(EndpointValue)


class EndpointsMap:
    """Typed access to the endpoints map."""

    def __init__(self, m: MapFd) -> None:
        self.m = m

    def set(self, info: EndpointInfo) -> None:
        val = EndpointValue(info.endpoint_id, info.identity, int(info.flags), 0)
        self.m.update(c_uint32(info.ifindex), val)

    def get(self, ifindex: int) -> EndpointInfo | None:
        val = EndpointValue()
        if not self.m.lookup(c_uint32(ifindex), val):
            return None
        return EndpointInfo(ifindex, int(val.ep_id), int(val.identity), EndpointFlags(val.flags))

    def delete(self, ifindex: int) -> bool:
        return self.m.delete(c_uint32(ifindex))

    def by_endpoint(self, endpoint_id: int) -> list[EndpointInfo]:
        return [e for e in self.dump() if e.endpoint_id == endpoint_id]

    def dump(self) -> list[EndpointInfo]:
        """Every entry, sorted by ifindex."""
        out = []
        for k in self.m.keys(c_uint32):  # type: ignore[arg-type]
            info = self.get(int(k.value))  # type: ignore[attr-defined]
            if info is not None:
                out.append(info)
        return sorted(out)
