"""Which node runs the Deployment controller: one leader per cluster, elected through the store.

On several nodes every agent sees every Deployment, but only one may turn replica counts into pod
objects, or each would write the same pods (and a scale-down would be done three times). The
leader holds :data:`CONTROLLER_KEY`, written with a create-if-absent transaction and attached to
its node's lease, like Kubernetes' lease-based leader election: when the leader's agent stops
renewing its lease (killed, cut off from etcd longer than the TTL) or resigns, etcd deletes the
key, the other agents see the deletion on their watch, one of them wins the next create-if-absent
and, once elected, runs the controller over every Deployment (whatever changed meanwhile is
converged then). An agent restarted on the leader's node takes its own node's key over at once
(same node name, new lease) instead of waiting for the old lease to expire.

A single node (SQLite store) has no election: its agent is always the controller.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from cilia.store.backend import RawOp
from cilia.store.errors import ConflictError, StoreError
from cilia.store.etcd_keys import CLUSTER_PREFIX
from cilia.store.nodes import LeaseLike

log = logging.getLogger("cilia.agent")

CONTROLLER_KEY = CLUSTER_PREFIX + "leader/deployment-controller"  # runtime state, beside the nodes


class Holder(NamedTuple):
    """Who holds the controller key: the node's name and the lease the key is attached to."""

    node: str
    lease: int


def holder_of(backend: Any) -> Holder | None:
    """The current controller of the cluster behind ``backend`` (None while there is none)."""
    rec = backend.get(CONTROLLER_KEY)
    if rec is None:
        return None
    data = json.loads(rec.value)
    return Holder(str(data["node"]), int(data.get("lease", 0)))


class LeaderElection:
    """This node's candidacy for the Deployment controller.

    ``backend`` is the store's backend (etcd: puts attached to ``lease``; a backend without leases
    — memory, SQLite — takes ``lease=None`` and the key lives until :meth:`resign`).
    ``on_elected`` runs (on the election thread) each time this node becomes the controller.
    """

    def __init__(self, backend: Any, node: str, lease: LeaseLike | None,
                 on_elected: Callable[[], None] | None = None) -> None:
        self.backend = backend
        self.node = node
        self.lease = lease
        self.on_elected = on_elected
        self._leader = False
        self._lock = threading.Lock()

    @property
    def lease_id(self) -> int:
        return self.lease.id if self.lease is not None else 0

    def is_leader(self) -> bool:
        """Whether this node runs the controller (as of the last :meth:`check`)."""
        return self._leader

    def check(self) -> bool:
        """Read the key; claim it if nobody holds it (or this node holds it on an older lease).
        Returns whether this node is the controller now; ``on_elected`` runs on a change to yes."""
        with self._lock:
            was = self._leader
            self._leader = self._claim()
            became = self._leader and not was
        if not self._leader and was:
            log.info("no longer the Deployment controller")
        if became:
            log.info("node %s is the Deployment controller now", self.node)
            if self.on_elected is not None:
                self.on_elected()
        return self._leader

    def _claim(self) -> bool:
        if self.lease is not None and not self.lease.alive:
            return False  # the key went (or goes) with the lease; stand again after relink
        rec = self.backend.get(CONTROLLER_KEY)
        if rec is not None:
            held = Holder(**json.loads(rec.value))
            if held == Holder(self.node, self.lease_id):
                return True
            if held.node != self.node:
                return False
            expect = rec.mod_revision  # this node's key on a lease of an earlier agent: take it over
        else:
            expect = 0
        value = json.dumps(Holder(self.node, self.lease_id)._asdict(), sort_keys=True)
        ops = [RawOp("expect", CONTROLLER_KEY, revision=expect), RawOp("put", CONTROLLER_KEY, value)]
        try:
            if self.lease is not None:
                self.backend.commit(ops, leases={CONTROLLER_KEY: self.lease.id})
            else:
                self.backend.commit(ops)
        except ConflictError:
            return False  # another node was faster
        return True

    def relink(self, lease: LeaseLike) -> bool:
        """After the node rejoined on a new lease: stand again (the old key went with the old lease)."""
        self.lease = lease
        return self.check()

    def resign(self) -> None:
        """Give the controller up now (delete the key if it is this node's)."""
        with self._lock:
            rec = self.backend.get(CONTROLLER_KEY)
            if rec is not None and Holder(**json.loads(rec.value)) == Holder(self.node, self.lease_id):
                with contextlib.suppress(ConflictError):  # it changed hands meanwhile
                    self.backend.commit([RawOp("expect", CONTROLLER_KEY, revision=rec.mod_revision),
                                         RawOp("delete", CONTROLLER_KEY, flag=True)])
            self._leader = False

    def follow(self, step: float = 0.5) -> Callable[[], None]:
        """Stand in the background: check at once, then whenever the key changes (and every
        ``step`` seconds); returns ``stop``."""
        stop = threading.Event()

        def run() -> None:
            seen = -1
            due = 0.0
            while not stop.is_set():
                try:
                    if seen < 0:
                        seen, changed = self.backend.revision(), True
                    else:
                        # wait() answers the newest revision it saw: no extra round trip per write
                        now = self.backend.wait(seen, min(step, 0.5))  # short: stop() is seen soon
                        changed = now > seen and bool(self.backend.events(CONTROLLER_KEY, seen + 1))
                        seen = max(seen, now)
                    if changed or time.monotonic() >= due:
                        self.check()
                        due = time.monotonic() + step
                except StoreError as e:  # store out of reach: keep the last state, try again
                    log.warning("controller election: %s (retrying)", e)
                    stop.wait(step)

        t = threading.Thread(target=run, name="cilia-leader", daemon=True)
        t.start()

        def halt() -> None:
            stop.set()
            t.join(step + 20)

        return halt
