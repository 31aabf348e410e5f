"""Conntrack garbage collection: expired entries are deleted from the kernel's table.

The datapath already treats an expired entry as absent (its lookup compares the expiry with the
clock), so collection is about room and readability: the table is an LRU map that would otherwise
evict only under pressure, and ``cilia bpf ct list --all`` would keep showing dead connections.
Cilium runs the same kind of pass (``conntrack-gc-interval``, dynamic between minutes and hours);
the lab uses a fixed, short interval so that its table stays small and current.
"""

from __future__ import annotations

import logging
import threading

from cilia.agent.interfaces import Capability, NodeDatapath

log = logging.getLogger("cilia.agent")

CT_GC_INTERVAL_S = 30.0


def collect(datapath: NodeDatapath) -> int:
    """One pass over the datapath's conntrack table (none on the simulated one); entries deleted."""
    if Capability.CONNTRACK not in datapath.capabilities:
        return 0
    n = datapath.conntrack_gc()
    if n:
        log.info("conntrack gc: %d expired entries deleted", n)
    return n


def start(datapath: NodeDatapath, interval_s: float = CT_GC_INTERVAL_S) -> threading.Event:
    """Collect every ``interval_s`` on a thread of its own (map operations need no agent lock: the
    kernel serialises them); set the returned event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                collect(datapath)
            except Exception:  # a failed pass is retried next interval; the log says why
                log.exception("conntrack gc")

    threading.Thread(target=loop, name="cilia-ct-gc", daemon=True).start()
    return stop
