"""A node's parts, as the agent runs with them: store, pod runtime, datapath, flow sink, and the
thread that feeds the datapath's events to the flow sink.

Which runtime and datapath a node uses is decided by the caller (the ``cilia agent`` command
composes the lab's network-namespace pods with the eBPF datapath, or the address-only runtime with
the simulated datapath), so this layer depends only on their interfaces.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cilia.agent.config import AgentConfig
from cilia.agent.flows import FlowSink
from cilia.agent.interfaces import Capability, NodeDatapath, PodRuntime
from cilia.store import Store

log = logging.getLogger("cilia.agent")


@dataclass
class Node:
    cfg: AgentConfig
    store: Store
    runtime: PodRuntime
    datapath: NodeDatapath
    gateway: str
    cluster: Any = None  # cilia.agent.cluster.ClusterMember when the node is one of several
    # the node's lab devices that are not pods' (world hosts, a cluster node's underlay): where the
    # host firewall goes besides the pods' veths (None: no kernel datapath)
    host_devices: Callable[[], set[int]] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start_flows(self, sink: FlowSink) -> None:
        """Feed the datapath's events to ``sink`` from a background thread."""
        if Capability.EVENTS not in self.datapath.capabilities:
            return  # the simulated datapath has no events
        read = self.datapath.read_events

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    read(sink.ingest, 200)
                except Exception:  # the reader must not kill the agent; the log says what broke
                    log.exception("reading datapath events")
                    time.sleep(1)

        t = threading.Thread(target=loop, name="cilia-flows", daemon=True)
        t.start()
        self._threads.append(t)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.datapath.close()
        self.store.close()
