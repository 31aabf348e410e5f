"""What the reconciler drives: a pod runtime (kubelet + CNI) and a node datapath.

Two implementations of each: the real ones (:mod:`cilia.lab` network namespaces and the eBPF
:mod:`cilia.datapath.bpf`), adapted in :mod:`cilia.agent.runtime` and :mod:`cilia.agent.datapaths`,
and the root-free ones (address-only pods and :mod:`cilia.datapath.sim`) that run the same
reconcile steps without a kernel: for development and for the state-sequence tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cilia.agent.desired import PodKey
from cilia.policy.mapstate import MapState


@dataclass(frozen=True)
class RuntimePod:
    """A pod as it exists on the node."""

    pod: PodKey
    ip: str
    ifindex: int  # host-side interface
    host_ifname: str
    netns: str


# Called after the pod's veth exists and before it gets its address: the datapath attaches here,
# so the pod never sends or receives a packet without its policy.
BeforeAddress = Callable[[RuntimePod], None]


class PodRuntime(Protocol):
    def existing(self) -> dict[PodKey, RuntimePod]:
        """Pods that exist on the node now (found on the system, not remembered)."""
        ...

    def create(self, manifest: dict[str, Any], before_address: BeforeAddress) -> RuntimePod: ...

    def delete(self, pod: PodKey) -> None: ...

    def teardown(self) -> None:
        """Remove every pod and everything else the runtime created."""
        ...


class NodeDatapath(Protocol):
    """The calls the reconciler makes; :class:`cilia.datapath.bpf.sync.Datapath` has this shape."""

    def attach(self, ifindex: int, endpoint_id: int, identity: int) -> Any: ...

    def detach(self, ifindex: int) -> Any: ...

    def set_policy(self, endpoint_id: int, mapstate: MapState) -> Any:
        """Full sync: the datapath holds exactly ``mapstate`` for the endpoint afterwards."""
        ...

    def apply_diff(self, endpoint_id: int, old: MapState, new: MapState) -> Any: ...

    def remove_policy(self, endpoint_id: int) -> Any: ...

    def upsert_ipcache(self, prefix: str, identity: int) -> Any: ...

    def delete_ipcache(self, prefix: str) -> Any: ...

    def sync_ipcache(self, entries: Mapping[str, int]) -> Any:
        """Full sync: exactly these prefixes afterwards."""
        ...

    def update_identity(
        self,
        prefixes: Iterable[str],
        identity: int,
        diffs: Mapping[int, tuple[MapState, MapState]],
        endpoint_id: int | None = None,
    ) -> Any:
        """A workload changed identity: peers' new entries first, then its prefixes and endpoint,
        then the entries no longer wanted."""
        ...

    def close(self) -> None: ...

    def teardown(self) -> None: ...
