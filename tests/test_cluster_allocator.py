"""ClusterAllocator on a real 3-member etcd cluster: agreement under concurrency, events on every
node, garbage collection after the grace period, and allocation through a leader failure."""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from cilia.identity.allocator import EventKind, IdentityAllocator, IdentityEvent
from cilia.identity.cluster_allocator import MAX_ID, MIN_ID, ClusterAllocator, ClusterAllocatorError
from cilia.identity.labels import Labels
from cilia.lab.etcd_cluster import EtcdCluster
from cilia.store import Delete, Kind, Store, identities
from cilia.store.backend import RawOp
from cilia.store.etcd import EtcdBackend, EtcdUnavailableError, Lease, open_etcd_store
from cilia.store.etcd_keys import REFS_PREFIX
from cilia.store.memory import MemoryBackend

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd not installed (apt-get install -y etcd-server etcd-client)")


class Node:
    """One agent's view: its own etcd client, lease and allocator."""

    def __init__(self, endpoints: list[str], name: str, *, ttl: int = 10, grace: float = 300.0,
                 seed: int | None = None) -> None:
        self.store: Store = open_etcd_store(endpoints)
        self.lease: Lease = self.store.backend.grant_lease(ttl)  # type: ignore[attr-defined]
        self.alloc = ClusterAllocator(self.store, name, self.lease, grace=grace,
                                      rng=random.Random(seed) if seed is not None else None)

    def close(self) -> None:
        self.alloc.close()
        self.lease.revoke()
        self.store.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path_factory.mktemp("etcd") / "c", 3)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def nodes(cluster: EtcdCluster) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(name: str, **kw: object) -> Node:
        n = Node(cluster.endpoints, name, **kw)  # type: ignore[arg-type]
        made.append(n)
        return n

    try:
        yield make
    finally:
        for n in made:
            n.close()
        # Each test starts from an empty identity space.
        with open_etcd_store(cluster.endpoints) as s:
            s.txn([Delete(r.key) for kind in (Kind.IDENTITIES, Kind.IDENTITY_LABELS) for r in s.list(kind)])


def label_sets(n: int, tag: str) -> list[Labels]:
    return [Labels.k8s({"app": f"{tag}{i}", "io.kubernetes.pod.namespace": "default"}) for i in range(n)]


def test_is_an_identity_allocator_and_needs_etcd(nodes: Callable[..., Node]) -> None:
    a = nodes("n1")
    assert isinstance(a.alloc, IdentityAllocator)
    with pytest.raises(ClusterAllocatorError, match="needs the etcd store backend"):
        ClusterAllocator(Store(MemoryBackend()), "n1", a.lease)


def test_three_allocators_agree_on_1000_label_sets(nodes: Callable[..., Node]) -> None:
    sets = label_sets(1000, "c")
    agents = [nodes(f"n{i}", seed=i) for i in range(3)]  # same seed space would collide more: vary
    got: list[dict[Labels, int]] = [{} for _ in agents]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        order = list(sets)
        random.Random(100 + i).shuffle(order)
        try:
            for labels in order:
                got[i][labels] = agents[i].alloc.allocate(labels)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert got[0] == got[1] == got[2]
    ids = list(got[0].values())
    assert len(set(ids)) == 1000
    assert all(MIN_ID <= n <= MAX_ID for n in ids)
    # etcd holds exactly one pair per label set, and every node learns all of them.
    by_id = {int(r.value["id"]): r.value["labels"] for r in agents[0].store.list(Kind.IDENTITIES)}
    assert by_id == {n: labels.strings() for labels, n in got[0].items()}
    assert len(agents[0].store.list(Kind.IDENTITY_LABELS)) == 1000
    for a in agents:
        assert a.alloc.sync()
        cluster_ids = {n: lb for n, lb in a.alloc.identities().items() if n >= MIN_ID}
        assert cluster_ids == {n: labels for labels, n in got[0].items()}
        assert a.alloc.references() == dict.fromkeys(ids, 1)
    _, refs = agents[0].store.backend.range(REFS_PREFIX)
    assert len(refs) == 3000


class LosesFirstReply(EtcdBackend):
    """A real etcd backend whose first commit is applied but reported as timed out, as when the
    leader dies after committing and before answering."""

    lost = 1

    def commit(self, ops: list[RawOp], leases: dict[str, int] | None = None) -> int:  # type: ignore[override]
        rev = super().commit(ops, leases)
        if self.lost:
            self.lost -= 1
            raise EtcdUnavailableError("commit", self.endpoints, TimeoutError("reply lost"),
                                       maybe_applied=True)
        return rev


def test_a_timed_out_but_applied_allocation_is_retried_safely(cluster: EtcdCluster,
                                                               nodes: Callable[..., Node]) -> None:
    lease_owner = nodes("n1")
    store = Store(LosesFirstReply(cluster.endpoints))
    alloc = ClusterAllocator(store, "n1", lease_owner.lease)
    try:
        labels = Labels.k8s({"app": "unlucky"})
        n = alloc.allocate(labels)
        assert [(int(r.key.name), r.value["labels"]) for r in store.list(Kind.IDENTITIES)] == [
            (n, labels.strings())]
        assert identities.lookup(store, labels.strings()) == n
        _, refs = store.backend.range(REFS_PREFIX)
        assert [r.key for r in refs] == [f"{REFS_PREFIX}{n}/n1"]
        assert alloc.references() == {n: 1}
    finally:
        alloc.close()
        store.close()


def test_remote_allocations_reach_subscribers_and_local_scope_stays_local(
        nodes: Callable[..., Node]) -> None:
    a, b = nodes("n1"), nodes("n2")
    seen: list[IdentityEvent] = []
    b.alloc.subscribe(seen.append, replay=False)
    web = Labels.k8s({"app": "web"})
    n = a.alloc.allocate(web)
    assert b.alloc.sync()
    assert seen == [IdentityEvent(EventKind.ADDED, n, web)]
    assert b.alloc.lookup(n) == web and b.alloc.by_labels(web) == n
    assert b.alloc.allocate(web) == n
    assert seen == [IdentityEvent(EventKind.ADDED, n, web)]
    # CIDR identities are numbered by each node and never written to etcd.
    cidr = Labels.parse(["cidr:198.18.0.0/16", "reserved:world"])
    local = a.alloc.allocate(cidr)
    assert local == 0x01000001
    assert a.alloc.lookup(local) == cidr
    assert b.alloc.sync() and b.alloc.lookup(local) is None
    assert [int(r.key.name) for r in a.store.list(Kind.IDENTITIES)] == [n]
    # Reserved label sets map to their reserved number.
    assert a.alloc.allocate(Labels.parse(["reserved:host"])) == 1


def test_gc_releases_an_unreferenced_identity_only_after_the_grace_period(
        nodes: Callable[..., Node]) -> None:
    a = nodes("n1", grace=0.6)
    b = nodes("n2", grace=0.6)
    seen: list[IdentityEvent] = []
    b.alloc.subscribe(seen.append, replay=False)
    shared, alone = Labels.k8s({"app": "shared"}), Labels.k8s({"app": "alone"})
    ns, na = a.alloc.allocate(shared), a.alloc.allocate(alone)
    assert b.alloc.allocate(shared) == ns
    assert a.alloc.allocate(alone) == na  # second use on the same node: one reference key
    assert a.alloc.release(alone) is False
    assert a.alloc.release(alone) is True
    assert a.alloc.release(shared) is True  # b still refers to it
    assert a.alloc.collect_garbage() == []  # first sighting only marks
    assert a.alloc.collect_garbage() == []  # not yet past the grace period
    time.sleep(0.7)
    assert a.alloc.collect_garbage() == [na]
    assert identities.lookup(a.store, alone.strings()) is None
    assert identities.lookup(a.store, shared.strings()) == ns
    assert b.alloc.sync()
    assert seen == [IdentityEvent(EventKind.ADDED, ns, shared), IdentityEvent(EventKind.ADDED, na, alone),
                    IdentityEvent(EventKind.REMOVED, na, alone)]
    # Allocating the label set again after GC gives it a (new) cluster identity.
    again = b.alloc.allocate(alone)
    assert identities.lookup(a.store, alone.strings()) == again


def test_a_dead_nodes_references_expire_with_its_lease(nodes: Callable[..., Node]) -> None:
    a = nodes("n1", ttl=2, grace=0.0)
    gc = nodes("n2", grace=0.0)
    labels = Labels.k8s({"app": "crashy"})
    n = a.alloc.allocate(labels)
    a.lease.abandon()  # the node "crashes": no more keepalives
    assert gc.alloc.collect_garbage() == []
    deadline = time.monotonic() + 10
    collected: list[int] = []
    while not collected and time.monotonic() < deadline:
        time.sleep(0.3)
        collected = gc.alloc.collect_garbage()
    assert collected == [n]
    # Until it has a new lease, the node cannot refer to identities (and says why, at once).
    with pytest.raises(ClusterAllocatorError, match=r"lease [0-9a-f]+ is gone"):
        a.alloc.allocate(Labels.k8s({"app": "other"}))
    # The node comes back with a new lease: its identity gets a reference (and a number) again.
    a.lease = a.store.backend.grant_lease(5)  # type: ignore[attr-defined]
    moved = a.alloc.relink(a.lease)
    now = identities.lookup(a.store, labels.strings())
    assert now is not None and moved == ({} if now == n else {n: now})
    assert a.alloc.references() == {now: 1}


def test_allocation_and_watch_continue_across_a_leader_kill(cluster: EtcdCluster,
                                                           nodes: Callable[..., Node]) -> None:
    observer = nodes("obs")
    seen: list[IdentityEvent] = []
    observer.alloc.subscribe(seen.append, replay=False)
    agents = [nodes(f"n{i}") for i in range(3)]
    results: list[dict[Labels, int]] = [{} for _ in agents]
    errors: list[BaseException] = []
    stop = threading.Event()
    during: list[int] = [0, 0, 0]
    killed_at = [0.0]
    done_at: list[float] = []

    def run(i: int) -> None:
        k = 0
        try:
            while not stop.is_set():
                # Agents 0 and 2 race for the same label sets; agent 1 has its own.
                labels = Labels.k8s({"app": f"f{k}", "w": str(i % 2)})
                results[i][labels] = agents[i].alloc.allocate(labels)
                done_at.append(time.monotonic())
                if killed_at[0] and time.monotonic() > killed_at[0] + 2.5:
                    during[i] += 1
                k += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    leader = cluster.leader()
    cluster.kill(leader.name)
    killed_at[0] = time.monotonic()
    try:
        new_leader = cluster.leader()
        assert new_leader.name != leader.name
        time.sleep(4.0)
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        stop.set()
        cluster.restart(leader.name)
    per_half_second = [0] * 14
    for t in done_at:
        slot = int((t - killed_at[0] + 1.0) * 2)
        if 0 <= slot < len(per_half_second):
            per_half_second[slot] += 1
    print(f"allocations per 0.5 s from 1 s before the kill: {per_half_second}; total {len(done_at)}")
    assert errors == []
    assert all(d > 0 for d in during), f"allocations after the re-election per agent: {during}"
    merged: dict[Labels, int] = {}
    for r in results:
        for labels, n in r.items():
            assert merged.setdefault(labels, n) == n
    assert len(set(merged.values())) == len(merged)
    assert observer.alloc.sync(20)
    stored = {int(r.value["id"]): Labels.parse(r.value["labels"])
              for r in observer.store.list(Kind.IDENTITIES)}
    assert stored == {n: labels for labels, n in merged.items()}
    # The observer's watch lost nothing and saw nothing twice.
    assert all(e.kind is EventKind.ADDED for e in seen)
    assert {e.identity: e.labels for e in seen} == stored
    assert len(seen) == len(stored)
