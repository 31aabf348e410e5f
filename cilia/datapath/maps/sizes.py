"""Key and value sizes of every map, as the map modules lay them out (for opening pins directly)."""

from __future__ import annotations

import ctypes

from cilia.datapath.maps import config, ct, dns, endpoints, events, ipcache, lb, lxc, metrics, policy

LAYOUTS: dict[str, tuple[int, int]] = {
    ipcache.MAP_V4: (ipcache.KEY_SIZES[ipcache.MAP_V4], ipcache.VALUE_SIZE),
    ipcache.MAP_V6: (ipcache.KEY_SIZES[ipcache.MAP_V6], ipcache.VALUE_SIZE),
    endpoints.MAP: (4, endpoints.VALUE_SIZE),
    lxc.MAP: (lxc.KEY_SIZE, lxc.VALUE_SIZE),
    policy.MAP: (ctypes.sizeof(policy.PolicyKey), policy.VALUE_SIZE),
    ct.MAP: (ctypes.sizeof(ct.CtKey), ct.VALUE_SIZE),
    ct.MAP4: (ctypes.sizeof(ct.CtKey4), ct.VALUE_SIZE),
    events.MAP: (0, 0),
    events.RATELIMIT_MAP: (4, events.RATELIMIT_VALUE_SIZE),
    metrics.MAP: (4, metrics.VALUE_SIZE),
    config.MAP: (4, config.VALUE_SIZE),
    lb.MAP: (lb.KEY_SIZE, lb.VALUE_SIZE),
    lb.CT_MAP: (lb.TUPLE_SIZE, lb.ADDR_SIZE),
    lb.REV_MAP: (lb.TUPLE_SIZE, lb.ADDR_SIZE),
    lb.MAP6: (lb.KEY6_SIZE, lb.VALUE6_SIZE),
    lb.CT_MAP6: (lb.TUPLE6_SIZE, lb.ADDR6_SIZE),
    lb.REV_MAP6: (lb.TUPLE6_SIZE, lb.ADDR6_SIZE),
    dns.MAP: (4, lb.ADDR_SIZE),
    dns.REV_MAP: (lb.TUPLE_SIZE, lb.ADDR_SIZE),
}
