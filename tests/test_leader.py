"""One Deployment controller per cluster (:mod:`cilia.agent.leader`): two contenders, one wins;
the leader resigns or its lease goes → the other takes over and converges the Deployments; a
non-leader writes no pods. On the memory store (no leases) and on a real etcd (leases)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cilia.agent import manifests
from cilia.agent.datapaths import SimNodeDatapath
from cilia.agent.endpoints import EndpointTable
from cilia.agent.leader import CONTROLLER_KEY, Holder, LeaderElection, holder_of
from cilia.agent.reconcile import Reconciler
from cilia.agent.runtime import AddressOnlyRuntime
from cilia.lab.etcd_cluster import EtcdCluster
from cilia.lab.ipam import Ipam
from cilia.store import Kind, Store, open_store
from cilia.store.etcd import EtcdBackend
from cilia.store.nodes import NodeInfo, join

needs_etcd = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd not installed (apt-get install -y etcd-server etcd-client)")

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: nginxdemos/hello}}]}}
"""


def until(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.05)


class ControllerNode:
    """One node's reconciler whose pods all run elsewhere: only its controller part is at work."""

    def __init__(self, tmp: Path, store: Store, index: int, election: LeaderElection) -> None:
        ipam = Ipam(store, index)
        runtime = AddressOnlyRuntime(tmp / f"pods-{index}.json", ipam.allocate, ipam.release_owner,
                                     ipam.gateway)
        self.election = election
        self.rec = Reconciler(store, runtime, SimNodeDatapath(),
                              endpoints=EndpointTable(tmp / f"ep-{index}.json"),
                              schedule=lambda pk, manifest: False, controller=election.is_leader)
        self.store = store
        self.watch = store.watch(self.rec.start() + 1)

    def pump(self) -> None:
        for _ in range(10):
            evs = self.watch.drain()
            if not evs:
                return
            self.rec.handle(evs)
        raise AssertionError("reconcile did not settle")


def pods(store: Store) -> list[str]:
    return sorted(r.key.name.rsplit("-", 2)[0] for r in store.list(Kind.PODS))


def apply(store: Store, tmp: Path, replicas: int) -> None:
    path = tmp / "web.yaml"
    path.write_text(DEPLOYMENT.format(replicas=replicas))
    assert manifests.apply(store, [str(path)]).report.valid


# --------------------------------------------------------------------------- memory store


def test_two_contenders_one_wins_and_the_other_takes_over_after_resign() -> None:
    store = open_store(backend="memory")
    elected: list[str] = []
    a = LeaderElection(store.backend, "node-0", None, on_elected=lambda: elected.append("node-0"))
    b = LeaderElection(store.backend, "node-1", None, on_elected=lambda: elected.append("node-1"))
    assert (a.check(), b.check(), a.check()) == (True, False, True)
    assert holder_of(store.backend) == Holder("node-0", 0)
    assert elected == ["node-0"], "on_elected runs once per election, not per check"
    a.resign()
    assert (a.is_leader(), holder_of(store.backend)) == (False, None)
    assert (b.check(), a.check()) == (True, False)
    assert holder_of(store.backend) == Holder("node-1", 0)
    assert elected == ["node-0", "node-1"]


def test_a_follower_takes_over_when_the_key_goes_not_at_its_next_periodic_check() -> None:
    store = open_store(backend="memory")
    a = LeaderElection(store.backend, "node-0", None)
    b = LeaderElection(store.backend, "node-1", None)
    assert a.check()
    stop = b.follow(step=30.0)  # periodic checks far apart: only the key's deletion can wake it
    try:
        time.sleep(0.2)
        assert not b.is_leader()
        store.put(Kind.NAMESPACES.key("", "unrelated"), {"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": "unrelated"}})
        time.sleep(0.2)
        assert not b.is_leader(), "other writes do not make it stand again"
        a.resign()
        until(b.is_leader, 2)
    finally:
        stop()
    assert holder_of(store.backend) == Holder("node-1", 0)


def test_only_the_controller_writes_pods_and_a_new_one_converges(tmp_path: Path) -> None:
    store = open_store(backend="memory")
    leader = ControllerNode(tmp_path, store, 0, LeaderElection(store.backend, "node-0", None))
    other = ControllerNode(tmp_path, store, 1, LeaderElection(store.backend, "node-1", None))
    other.election.on_elected = other.rec.run_controller
    assert leader.election.check() and not other.election.check()

    apply(store, tmp_path, 2)
    rev = store.revision
    other.pump()
    assert (pods(store), store.revision) == ([], rev), "a node that is not the controller writes nothing"
    leader.pump()
    other.pump()
    assert pods(store) == ["web", "web"]

    # The controller goes; the Deployment is scaled while there is none.
    leader.election.resign()
    apply(store, tmp_path, 4)
    other.pump()
    assert pods(store) == ["web", "web"]
    assert other.election.check()  # elected: converges every Deployment at once
    other.pump()
    assert pods(store) == ["web"] * 4
    leader.pump()  # the old controller follows the store, writes nothing
    assert pods(store) == ["web"] * 4


def test_a_single_node_is_always_the_controller(tmp_path: Path) -> None:
    store = open_store(backend="memory")
    ipam = Ipam(store, 0)
    rec = Reconciler(store, AddressOnlyRuntime(tmp_path / "pods.json", ipam.allocate, ipam.release_owner,
                                               ipam.gateway), SimNodeDatapath())
    watch = store.watch(rec.start() + 1)
    apply(store, tmp_path, 3)
    for _ in range(5):
        rec.handle(watch.drain())
    assert pods(store) == ["web"] * 3
    assert holder_of(store.backend) is None


# --------------------------------------------------------------------------- etcd (leases)


@pytest.fixture
def stores(etcd: EtcdCluster) -> Iterator[Callable[[], Store]]:
    made: list[Store] = []

    def make() -> Store:
        s = Store(EtcdBackend(etcd.endpoints))
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.close()


@needs_etcd
def test_etcd_key_on_the_lease_revoked_the_other_node_takes_over(
        stores: Callable[[], Store], tmp_path: Path) -> None:
    sa, sb = stores(), stores()
    reg_a = join(sa.backend, NodeInfo.lab("node-0", 0), ttl=5)
    reg_b = join(sb.backend, NodeInfo.lab("node-1", 1), ttl=5)
    a = ControllerNode(tmp_path, sa, 0, LeaderElection(sa.backend, "node-0", reg_a.lease))
    b = ControllerNode(tmp_path, sb, 1, LeaderElection(sb.backend, "node-1", reg_b.lease))
    elected: list[str] = []
    b.election.on_elected = lambda: elected.append("node-1")
    assert (a.election.check(), b.election.check()) == (True, False)
    assert holder_of(sa.backend) == Holder("node-0", reg_a.lease.id)
    assert sa.backend.get(CONTROLLER_KEY) is not None

    apply(sa, tmp_path, 2)
    until(lambda: sa.revision == sb.revision, 5)
    b.pump()
    assert pods(sb) == []
    a.pump()
    assert pods(sa) == ["web", "web"]

    stop = b.election.follow(step=0.2)
    try:
        apply(sa, tmp_path, 3)  # scaled; then the controller's node loses its lease
        reg_a.leave()
        until(lambda: b.election.is_leader(), 5)
    finally:
        stop()
    assert elected == ["node-1"]
    assert holder_of(sb.backend) == Holder("node-1", reg_b.lease.id)
    b.rec.run_controller()  # what the agent's on_elected does, under its lock
    b.pump()
    assert pods(sb) == ["web"] * 3
    assert not a.election.check(), "a node whose lease is gone does not stand"


@needs_etcd
def test_etcd_a_restarted_agent_takes_its_nodes_key_over_at_once(stores: Callable[[], Store]) -> None:
    s1, s2 = stores(), stores()
    old = join(s1.backend, NodeInfo.lab("node-0", 0), ttl=30)
    assert LeaderElection(s1.backend, "node-0", old.lease).check()
    old.lease.abandon()  # killed: the key stays until the old lease's TTL runs out
    new = join(s2.backend, NodeInfo.lab("node-0", 0), ttl=30)
    other = LeaderElection(s2.backend, "node-1", join(s2.backend, NodeInfo.lab("node-1", 1), ttl=30).lease)
    assert not other.check()
    assert LeaderElection(s2.backend, "node-0", new.lease).check()
    assert holder_of(s2.backend) == Holder("node-0", new.lease.id)
