"""What the reconciler drives: a pod runtime (kubelet + CNI) and a node datapath.

Two implementations of each: the real ones (:mod:`cilia.lab` network namespaces and the eBPF
:mod:`cilia.datapath.bpf`), adapted in :mod:`cilia.agent.runtime` and :mod:`cilia.agent.datapaths`,
and the root-free ones (address-only pods and :mod:`cilia.datapath.sim`) that run the same
reconcile steps without a kernel: for development and for the state-sequence tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cilia.agent.desired import PodKey
from cilia.datapath.capabilities import Capability
from cilia.datapath.maps.events import PolicyEvent
from cilia.datapath.maps.lb import Backend, Frontend
from cilia.policy.mapstate import MapState
from cilia.policy.types import RuleRef


@dataclass(frozen=True)
class RuntimePod:
    """A pod as it exists on the node."""

    pod: PodKey
    ip: str
    ifindex: int  # host-side interface
    host_ifname: str
    netns: str
    ip6: str = ""  # the pod's IPv6 address on a dual-stack node


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
    """Every call the agent makes on a node datapath; :class:`cilia.datapath.bpf.sync.Datapath`
    (the kernel) and :class:`cilia.agent.datapaths.SimNodeDatapath` both implement all of it.
    ``capabilities`` says which calls do more than record (:class:`Capability`)."""

    capabilities: frozenset[Capability]

    # -- endpoints
    def attach(self, ifindex: int, endpoint_id: int, identity: int) -> object: ...

    def detach(self, ifindex: int) -> object: ...

    def set_local_endpoint(self, ip: str, ifindex: int) -> object:
        """A pod address on its attached device, for host routing (removed with the device)."""
        ...

    def endpoint_ids(self) -> dict[int, int]:
        """ifindex -> endpoint id of the attached endpoints, as the datapath holds them now."""
        ...

    def set_audit(self, endpoint_id: int, on: bool) -> None:
        """Policy audit mode for the endpoint: drops become allows flagged ``audited``."""
        ...

    # -- policy
    def set_policy(self, endpoint_id: int, mapstate: MapState) -> object:
        """Full sync: the datapath holds exactly ``mapstate`` for the endpoint afterwards."""
        ...

    def apply_diff(self, endpoint_id: int, old: MapState, new: MapState) -> object: ...

    def remove_policy(self, endpoint_id: int) -> object: ...

    def rules_for(self, cookie: int) -> frozenset[RuleRef] | None:
        """The rules behind an event's cookie (None: unknown cookie)."""
        ...

    # -- ipcache
    def upsert_ipcache(self, prefix: str, identity: int) -> object: ...

    def delete_ipcache(self, prefix: str) -> object: ...

    def sync_ipcache(self, entries: Mapping[str, int]) -> object:
        """Full sync: exactly these prefixes afterwards."""
        ...

    def update_identity(
        self,
        prefixes: Iterable[str],
        identity: int,
        diffs: Mapping[int, tuple[MapState, MapState]],
        endpoint_id: int | None = None,
    ) -> object:
        """A workload changed identity: peers' new entries first, then its prefixes and endpoint,
        then the entries no longer wanted."""
        ...

    # -- services
    def sync_services(self, want: Mapping[Frontend, Sequence[Backend]]) -> None:
        """Full sync of the service table (ClusterIP:port/proto -> backends)."""
        ...

    # -- DNS redirects (the DNS proxy, toFQDNs)
    def set_dns_redirect(self, endpoint_id: int, proxy: tuple[str, int] | None) -> None:
        """Redirect the endpoint's allowed DNS queries to ``proxy`` (None: stop)."""
        ...

    def dns_redirects(self) -> dict[int, tuple[str, int]]:
        """endpoint id -> proxy address, as the datapath holds them now."""
        ...

    def dns_origin(
        self, client: tuple[str, int], proxy: tuple[str, int], proto: int = 17
    ) -> tuple[str, int] | None:
        """The server a redirected query from ``client`` was addressed to (None: not known)."""
        ...

    # -- conntrack and events
    def conntrack_gc(self) -> int:
        """Delete expired connections; how many."""
        ...

    def conntrack_peers(self) -> set[str]:
        """Addresses that are a peer of a live connection."""
        ...

    def read_events(self, callback: Callable[[PolicyEvent], None], timeout_ms: int = 100) -> int:
        """Wait up to ``timeout_ms`` for flow events; ``callback`` gets each. How many."""
        ...

    # -- lifetime
    def close(self) -> None: ...

    def teardown(self) -> None: ...
