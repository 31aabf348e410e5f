"""The config map (``cilia_config``): one array slot of datapath tunables set by user space."""

from __future__ import annotations

import ctypes
from ctypes import Structure, c_uint32
from typing import NamedTuple

from cilia.datapath.bpf.libbpf import MapFd

MAP = "cilia_config"
DEFAULT_EVENTS_PER_SEC = 1000
DEFAULT_CT_TIMEOUT_S = 60
DEFAULT_CT_TCP_TIMEOUT_S = 21600
F_HOST_ROUTING = 0x1
F_ROUTE_OUT = 0x2
F_SERVICES = 0x4  # a service frontend exists (set by Datapath.sync_services, not a tunable)


class ConfigValue(Structure):
    _fields_ = [("events_per_sec", c_uint32), ("ct_timeout_s", c_uint32), ("ct_tcp_timeout_s", c_uint32),
                ("flags", c_uint32)]


VALUE_SIZE = ctypes.sizeof(ConfigValue)


class DatapathConfig(NamedTuple):
    events_per_sec: int = DEFAULT_EVENTS_PER_SEC  # per endpoint, drops and new connections
    ct_timeout_s: int = DEFAULT_CT_TIMEOUT_S  # UDP, SCTP, ICMP and other
    ct_tcp_timeout_s: int = DEFAULT_CT_TCP_TIMEOUT_S
    # pod to pod on one node: both verdicts in the source's program, then bpf_redirect_peer
    host_routing: bool = True
    # with host routing: a pod's traffic to world hosts and other nodes by bpf_redirect_neigh out of
    # the lab device the route names (instead of the host's forwarding path)
    route_out: bool = True


class ConfigMap:
    def __init__(self, m: MapFd) -> None:
        self.m = m

    def set(self, cfg: DatapathConfig, services: bool = True) -> None:
        """The tunables, and whether the datapath looks the service maps up (``services``: True
        unless the maps are known to hold no frontend)."""
        flags = (F_HOST_ROUTING if cfg.host_routing else 0) | (F_ROUTE_OUT if cfg.route_out else 0)
        flags |= F_SERVICES if services else 0
        value = ConfigValue(cfg.events_per_sec, cfg.ct_timeout_s, cfg.ct_tcp_timeout_s, flags)
        self.m.update(c_uint32(0), value)

    def services(self) -> bool:
        """Whether the datapath looks the service maps up now."""
        v = ConfigValue()
        self.m.lookup(c_uint32(0), v)
        return bool(v.flags & F_SERVICES)

    def dump(self) -> DatapathConfig:
        v = ConfigValue()
        self.m.lookup(c_uint32(0), v)
        return DatapathConfig(v.events_per_sec or DEFAULT_EVENTS_PER_SEC,
                              v.ct_timeout_s or DEFAULT_CT_TIMEOUT_S,
                              v.ct_tcp_timeout_s or DEFAULT_CT_TCP_TIMEOUT_S,
                              bool(v.flags & F_HOST_ROUTING), bool(v.flags & F_ROUTE_OUT))
