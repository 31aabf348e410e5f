"""Read-only access to a running datapath's pinned maps (no program load, no clang): what
``cilia bpf …`` inspects."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cilia.datapath.bpf.cookies import CookieTable
from cilia.datapath.bpf.libbpf import BpfError, MapFd, obj_get
from cilia.datapath.errors import DatapathError
from cilia.datapath.maps import ct, endpoints, ipcache, lxc, metrics, policy
from cilia.datapath.maps.sizes import LAYOUTS


class NoDatapathError(DatapathError, RuntimeError):
    """No pinned datapath at the given pin root."""


def _open(pin_root: str, name: str) -> MapFd:
    key_size, value_size = LAYOUTS[name]
    path = os.path.join(pin_root, name)
    try:
        return MapFd(obj_get(path), name, key_size, value_size, owned=True)
    except BpfError as e:
        raise NoDatapathError(f"no cilia datapath pinned at {pin_root} ({e}); is the node up?") from e


@dataclass
class PinnedMaps:
    ipcache: ipcache.IpcacheMap
    endpoints: endpoints.EndpointsMap
    policy: policy.PolicyMap
    ct: ct.CtMap
    metrics: metrics.MetricsMap
    cookies: CookieTable
    fds: list[MapFd]
    lxc: lxc.LxcMap | None = None  # None: the running object predates the local endpoint map

    def close(self) -> None:
        for m in self.fds:
            m.close()


def open_pinned(pin_root: str, state_dir: str | os.PathLike[str]) -> PinnedMaps:
    """Open the maps pinned under ``pin_root`` and the cookie table in ``state_dir``."""
    # only the maps read here: an agent still running an older object has no pins of newer maps
    used = (ipcache.MAP_V4, ipcache.MAP_V6, endpoints.MAP, policy.MAP, ct.MAP, metrics.MAP)
    fds = {n: _open(pin_root, n) for n in used}
    ct4 = None
    if os.path.exists(os.path.join(pin_root, ct.MAP4)):  # absent: an agent's object from before it
        fds[ct.MAP4] = ct4 = _open(pin_root, ct.MAP4)
    local = None
    if os.path.exists(os.path.join(pin_root, lxc.MAP)):
        fds[lxc.MAP] = _open(pin_root, lxc.MAP)
        local = lxc.LxcMap(fds[lxc.MAP])
    return PinnedMaps(
        ipcache.IpcacheMap(fds[ipcache.MAP_V4], fds[ipcache.MAP_V6]),
        endpoints.EndpointsMap(fds[endpoints.MAP]),
        policy.PolicyMap(fds[policy.MAP]),
        ct.CtMap(fds[ct.MAP], ct4),
        metrics.MetricsMap(fds[metrics.MAP]),
        CookieTable(Path(state_dir) / "cookies.json"),
        list(fds.values()),
        local,
    )



