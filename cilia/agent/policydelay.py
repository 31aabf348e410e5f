"""How long a policy change takes to reach the datapath: Cilium's ``cilium_policy_implementation_delay``.

The reconciler marks when it takes a batch of store events off the watch (:meth:`PolicyDelay.clock`)
and, once the batch's datapath sync finished — the affected endpoints' policy maps, the ipcache, the
service table and the DNS redirects — reports the elapsed time once per policy source the batch
changed (:meth:`PolicyDelay.record`). The source label is Cilium's: ``custom-resource`` for
CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy, ``k8s`` for NetworkPolicy.

The agent sits below the observe layer, so the metrics registry is handed in as ``sink`` by the
code that wires the agent's metrics (:func:`cilia.observe.agentview.pipeline_for`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

# PolicyKey.kind -> Cilium's policy source label
POLICY_SOURCES = {
    "CiliumNetworkPolicy": "custom-resource",
    "CiliumClusterwideNetworkPolicy": "custom-resource",
    "NetworkPolicy": "k8s",
}
RECENT = 64  # samples kept for status output and tests


class PolicyDelay:
    """Times policy changes from their arrival to the end of their datapath sync."""

    def __init__(self) -> None:
        self.sink: Callable[[str, float], None] | None = None  # (source, seconds)
        self.recent: deque[tuple[str, float]] = deque(maxlen=RECENT)

    @staticmethod
    def clock() -> float:
        """The start mark of a batch (monotonic seconds)."""
        return time.monotonic()

    def record(self, kinds: Iterable[str], started: float) -> None:
        """The batch that changed policies of ``kinds`` is in the datapath: one sample per source."""
        seconds = max(time.monotonic() - started, 0.0)
        for source in sorted({POLICY_SOURCES.get(k, "custom-resource") for k in kinds}):
            self.recent.append((source, seconds))
            if self.sink is not None:
                self.sink(source, seconds)
