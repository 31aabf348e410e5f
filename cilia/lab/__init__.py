"""The node lab: pods as network namespaces, veths, IPAM and built-in workloads (kubelet + CNI).

Names are exported lazily: the workload daemon imports only :mod:`cilia.lab.workloads`, so it
does not pay for pyroute2 and the store.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LabError": "errors", "PodExistsError": "errors", "PodNotFoundError": "errors",
    "IpamExhaustedError": "errors",
    "Ipam": "ipam", "gateway": "ipam", "pod_cidr": "ipam",
    "host_ifname": "names", "netns_name": "names",
    "BeforeAddress": "node", "Lab": "node", "Pod": "node",
    "Container": "spec", "ContainerPort": "spec", "PodSpec": "spec",
    "WorkloadClient": "workloadd",
    "PodWorkload": "workloads", "WorkloadServer": "workloads",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cilia.lab' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cilia.lab.{module}"), name)
