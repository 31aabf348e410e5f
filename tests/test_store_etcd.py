"""The store suite of tests/test_store.py against a real etcd (one member per test, fresh history),
plus what only etcd has: several clients, leases, paging, failover of a 3-member cluster."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.test_store as suite
from cilia.lab.etcd_cluster import EtcdCluster
from cilia.store import CompactedError, ConflictError, Event, EventType, Kind, Put, Store, StoreError
from cilia.store.backend import RawOp
from cilia.store.etcd import EtcdBackend, EtcdUnavailableError, open_etcd_store

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd not installed (apt-get install -y etcd-server etcd-client)")


@pytest.fixture
def store(etcd: EtcdCluster) -> Iterator[Store]:
    s = open_etcd_store(etcd.endpoints)
    try:
        yield s
    finally:
        s.close()


# The backend-agnostic cases of tests/test_store.py, bound to the etcd fixture above.
test_put_get_list_delete_bump_one_global_revision = suite.test_put_get_list_delete_bump_one_global_revision
test_txn_is_all_or_nothing = suite.test_txn_is_all_or_nothing
test_watch_from_revision_is_ordered_and_resumable = suite.test_watch_from_revision_is_ordered_and_resumable
test_filtered_watch_moves_past_other_kinds = suite.test_filtered_watch_moves_past_other_kinds
test_blocking_watch_wakes_on_a_write_from_another_thread = \
    suite.test_blocking_watch_wakes_on_a_write_from_another_thread
test_compacted_history_raises = suite.test_compacted_history_raises
test_update_apply_and_delete_objects = suite.test_update_apply_and_delete_objects
test_identity_pairs_are_create_if_absent = suite.test_identity_pairs_are_create_if_absent


POD = Kind.PODS.key("default", "a")


def test_two_clients_share_revisions_and_watch_each_other(etcd: EtcdCluster) -> None:
    with open_etcd_store(etcd.endpoints) as one, open_etcd_store(etcd.endpoints) as two:
        w = two.watch(1, Kind.PODS)
        assert one.put(POD, {"v": 1}) == 1
        assert two.revision == 1
        assert w.get(timeout=5) == Event(EventType.PUT, POD, {"v": 1}, 1)
        with pytest.raises(ConflictError, match="expected absent, found at revision 1"):
            two.create(POD, {"v": 2})
        rec = two.get(POD)
        assert rec is not None and (rec.create_revision, rec.mod_revision, rec.version) == (1, 1, 1)


def test_large_ranges_are_read_in_pages_at_one_revision(store: Store) -> None:
    ops = [Put(Kind.PODS.key("default", f"p{i:05d}"), {"i": i}) for i in range(2500)]
    assert store.txn(ops) == 1
    snap = store.snapshot(Kind.PODS)
    assert snap.revision == 1
    assert [r.value["i"] for r in snap.records] == list(range(2500))
    assert len(store.watch(1, Kind.PODS).drain()) == 2500


def test_compaction_of_the_current_revision_and_errors(store: Store) -> None:
    for i in range(3):
        store.put(POD, {"i": i})
    store.compact(3)
    with pytest.raises(CompactedError) as info:
        store.watch(1).drain()
    assert (info.value.requested, info.value.compacted) == (1, 2)
    assert [e.value for e in store.watch(3).drain()] == [{"i": 2}]
    store.compact(1)  # older than what is already compacted: nothing to do
    store.put(POD, {"i": 3})
    assert [e.revision for e in store.watch(4).drain()] == [4]


def test_leased_keys_go_with_the_lease(etcd: EtcdCluster) -> None:
    backend = EtcdBackend(etcd.endpoints)
    try:
        lease = backend.grant_lease(2)
        key = "/cilia/cluster/v1/test/x"
        backend.commit([RawOp("put", key, "{}")], leases={key: lease.id})
        time.sleep(3)  # longer than the TTL: the keepalive holds it
        assert backend.get(key) is not None and lease.alive
        lease.abandon()
        deadline = time.monotonic() + 6
        while backend.get(key) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert backend.get(key) is None
        revoked = backend.grant_lease(30)
        backend.commit([RawOp("put", key, "{}")], leases={key: revoked.id})
        revoked.revoke()
        assert backend.get(key) is None
    finally:
        backend.close()


def test_unreachable_etcd_raises_unavailable_quickly(etcd: EtcdCluster) -> None:
    backend = EtcdBackend(etcd.endpoints, timeout=0.3, retry_for=1.0)
    try:
        etcd.kill("m1")
        t = time.monotonic()
        with pytest.raises(EtcdUnavailableError, match="get failed"):
            backend.get("/cilia/v1/pods/default/a")
        # Refused connections mean the txn never left: retried like a read, and known unapplied.
        with pytest.raises(EtcdUnavailableError, match="commit failed") as info:
            backend.commit([RawOp("put", "/cilia/v1/pods/default/a", "{}")])
        assert not info.value.maybe_applied
        assert time.monotonic() - t < 10
        etcd.restart("m1")
        assert backend.commit([RawOp("put", "/cilia/v1/pods/default/a", "{}")]) == 1
    finally:
        backend.close()
    with pytest.raises(StoreError, match="closed"):
        backend.get("/x")


def test_watch_and_writes_continue_across_a_leader_kill(tmp_path: Path) -> None:
    with EtcdCluster(tmp_path / "etcd3", 3) as cluster, open_etcd_store(cluster.endpoints) as store:
        got: list[Event] = []
        w = store.watch(1, Kind.PODS)
        done = threading.Event()

        def consume() -> None:
            while not done.is_set() or len(got) < written[0]:
                ev = w.get(timeout=0.5)
                if ev is not None:
                    got.append(ev)
                elif done.is_set():
                    return

        written = [0]
        t = threading.Thread(target=consume)
        t.start()
        failed = 0
        try:
            for i in range(300):
                if i == 100:
                    cluster.kill(cluster.leader().name)
                try:
                    store.put(Kind.PODS.key("default", f"p{i}"), {"i": i})
                    written[0] += 1
                except EtcdUnavailableError as e:
                    failed += 1
                    assert e.maybe_applied
        finally:
            done.set()
            t.join(30)
        # A put that timed out may have been applied: the watch shows exactly what etcd has.
        names = [e.key.name for e in got]
        assert len(names) == len(set(names))
        assert {r.key.name for r in store.list(Kind.PODS)} == set(names)
        assert len(names) >= 300 - failed and failed <= 5
        assert [e.revision for e in got] == sorted(e.revision for e in got)


def test_history_from_before_the_backend_opened_or_beyond_its_buffer(etcd: EtcdCluster) -> None:
    with open_etcd_store(etcd.endpoints) as writer:
        for i in range(12):
            writer.put(Kind.PODS.key("default", f"p{i}"), {"i": i})
        expected = [(e.key.name, e.revision) for e in writer.watch(1).drain()]
    assert expected == [(f"p{i}", i + 1) for i in range(12)]
    # Opened after the writes: its follower starts at revision 12, older events come from etcd.
    late = Store(EtcdBackend(etcd.endpoints, history=4))
    try:
        assert [(e.key.name, e.revision) for e in late.watch(1).drain()] == expected
        for i in range(12, 24):
            late.put(Kind.PODS.key("default", f"p{i}"), {"i": i})
        # The buffer keeps about the last 4-8 events; asking for more reads etcd's history.
        assert [e.revision for e in late.watch(5).drain()] == list(range(5, 25))
        assert [e.revision for e in late.watch(23).drain()] == [23, 24]
    finally:
        late.close()
