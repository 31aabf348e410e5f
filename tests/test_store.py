"""The desired-state store: both backends behind one suite."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cilia.store import (
    CompactedError,
    ConflictError,
    Delete,
    Event,
    EventType,
    Expect,
    InvalidKeyError,
    Kind,
    NotFoundError,
    ObjectKey,
    Put,
    Store,
    StoreError,
    identities,
    open_store,
    state_dir,
)
from cilia.store.memory import MemoryBackend
from cilia.store.sqlite import SqliteBackend

POD_A = Kind.PODS.key("default", "a")
POD_B = Kind.PODS.key("default", "b")
NS_DEFAULT = Kind.NAMESPACES.key("", "default")


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend = MemoryBackend() if request.param == "memory" else SqliteBackend(tmp_path / "store.db")
    s = Store(backend)
    try:
        yield s
    finally:
        s.close()


def test_key_paths_round_trip() -> None:
    assert POD_A.path() == "/cilia/v1/pods/default/a"
    assert NS_DEFAULT.path() == "/cilia/v1/namespaces/_/default"
    assert Kind.CNP.prefix("prod") == "/cilia/v1/ciliumnetworkpolicies/prod/"
    for key in (POD_A, NS_DEFAULT, Kind.IDENTITIES.key("", "256")):
        assert ObjectKey.parse(key.path()) == key
    with pytest.raises(InvalidKeyError):
        Kind.NAMESPACES.key("default", "x").path()
    with pytest.raises(InvalidKeyError):
        Kind.PODS.key("", "x").path()
    with pytest.raises(InvalidKeyError):
        Kind.PODS.key("default", "a/b").path()
    with pytest.raises(InvalidKeyError):
        ObjectKey.parse("/cilia/v1/widgets/_/x")


def test_put_get_list_delete_bump_one_global_revision(store: Store) -> None:
    assert store.revision == 0
    assert store.put(POD_A, {"v": 1}) == 1
    assert store.put(POD_B, {"v": 2}) == 2
    assert store.put(POD_A, {"v": 3}) == 3
    assert store.put(NS_DEFAULT, {"labels": {}}) == 4
    a = store.get(POD_A)
    assert a is not None
    assert (a.value, a.create_revision, a.mod_revision, a.version) == ({"v": 3}, 1, 3, 2)
    assert [(r.key, r.value) for r in store.list(Kind.PODS)] == [(POD_A, {"v": 3}), (POD_B, {"v": 2})]
    assert store.list(Kind.PODS, "other") == []
    snap = store.snapshot()
    assert snap.revision == 4
    assert [r.key for r in snap.records] == [NS_DEFAULT, POD_A, POD_B]
    assert store.delete(POD_B) == 5
    assert store.get(POD_B) is None
    with pytest.raises(NotFoundError):
        store.delete(POD_B)
    assert store.delete(POD_B, missing_ok=True) == 5


def test_txn_is_all_or_nothing(store: Store) -> None:
    store.put(POD_A, {"v": 1})
    before = store.snapshot()
    failing = [
        [Put(POD_B, {"v": 2}), Expect(POD_A, 99)],
        [Put(POD_B, {"v": 2}), Delete(Kind.PODS.key("default", "missing"))],
        [Put(POD_B, {"v": 2}), Put(POD_B, {"v": 3})],
        [Put(POD_B, {"v": 2}), Put(POD_A, {"bad": object()})],
        [Put(POD_B, {"v": 2}), Expect(POD_B, 0), Put(Kind.PODS.key("default", "x/y"), {})],
    ]
    errors = []
    for ops in failing:
        with pytest.raises(StoreError) as info:
            store.txn(ops)
        errors.append(type(info.value))
    assert errors == [ConflictError, NotFoundError, StoreError, StoreError, InvalidKeyError]
    assert store.snapshot() == before
    assert store.txn([Expect(POD_A, 1), Expect(POD_B, 0), Put(POD_B, {"v": 2}), Delete(POD_A)]) == 2
    assert [(r.key, r.mod_revision) for r in store.list(Kind.PODS)] == [(POD_B, 2)]
    with pytest.raises(ConflictError, match="expected absent, found at revision 2"):
        store.create(POD_B, {})


def test_watch_from_revision_is_ordered_and_resumable(store: Store) -> None:
    store.put(POD_A, {"v": 1})
    store.txn([Put(POD_B, {"v": 2}), Put(NS_DEFAULT, {"n": 1})])
    store.delete(POD_A)
    expected = [
        Event(EventType.PUT, POD_A, {"v": 1}, 1),
        Event(EventType.PUT, POD_B, {"v": 2}, 2),
        Event(EventType.PUT, NS_DEFAULT, {"n": 1}, 2),
        Event(EventType.DELETE, POD_A, {"v": 1}, 3),
    ]
    assert store.watch(0).drain() == expected
    assert store.watch(2).drain() == expected[1:]
    assert store.watch(1, Kind.PODS).drain() == [expected[0], expected[1], expected[3]]
    w = store.watch(4)
    assert w.get(timeout=0.05) is None
    store.put(POD_B, {"v": 5})
    assert w.get(timeout=1) == Event(EventType.PUT, POD_B, {"v": 5}, 4)
    assert w.next_revision == 5


def test_filtered_watch_moves_past_other_kinds(store: Store) -> None:
    w = store.watch(1, Kind.PODS)
    for i in range(5):
        store.put(Kind.NAMESPACES.key("", f"ns{i}"), {})
    assert w.get(timeout=0.05) is None
    assert w.next_revision == 6
    store.put(POD_A, {})
    assert w.get(timeout=1) == Event(EventType.PUT, POD_A, {}, 6)


def test_blocking_watch_wakes_on_a_write_from_another_thread(store: Store) -> None:
    got: list[Event] = []
    w = store.watch(1)

    def consume() -> None:
        for ev in w:
            got.append(ev)
            if len(got) == 3:
                w.close()

    t = threading.Thread(target=consume)
    t.start()
    for i in range(3):
        store.put(Kind.PODS.key("default", f"p{i}"), {"i": i})
    t.join(5)
    assert not t.is_alive()
    assert [(e.key.name, e.revision) for e in got] == [("p0", 1), ("p1", 2), ("p2", 3)]


def test_compacted_history_raises(store: Store) -> None:
    for i in range(4):
        store.put(POD_A, {"i": i})
    store.compact(2)
    with pytest.raises(CompactedError):
        store.watch(2).drain()
    assert [e.revision for e in store.watch(3).drain()] == [3, 4]


def test_update_apply_and_delete_objects(store: Store) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "a"}}}
    cnp = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": "p", "namespace": "prod"}, "spec": {"endpointSelector": {}}}
    ccnp = {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": "c"}, "spec": {"endpointSelector": {}}}
    assert store.apply([pod, cnp, ccnp]) == 1
    assert [r.key for r in store.snapshot().records] == [
        Kind.CCNP.key("", "c"), Kind.CNP.key("prod", "p"), Kind.PODS.key("default", "web")
    ]
    assert store.get(Kind.CNP.key("prod", "p")).value == cnp  # type: ignore[union-attr]

    def relabel(obj: dict) -> dict:
        return {**obj, "metadata": {**obj["metadata"], "labels": {"app": "a", "access": "frontend"}}}

    assert store.update(Kind.PODS.key("default", "web"), relabel) == 2
    assert store.get(Kind.PODS.key("default", "web")).value["metadata"]["labels"] == {  # type: ignore[union-attr]
        "app": "a", "access": "frontend"}
    with pytest.raises(InvalidKeyError, match="cannot store objects of kind 'ConfigMap'"):
        store.apply([{"kind": "ConfigMap", "metadata": {"name": "s"}}])
    assert store.delete_objects([pod, cnp]) == 3
    assert [r.key for r in store.snapshot().records] == [Kind.CCNP.key("", "c")]


def test_identity_pairs_are_create_if_absent(store: Store) -> None:
    store.txn(identities.allocate_ops(256, ["k8s:app=a", "k8s:io.kubernetes.pod.namespace=default"]))
    assert identities.lookup(store, ["k8s:io.kubernetes.pod.namespace=default", "k8s:app=a"]) == 256
    assert identities.labels_of(store, 256) == ["k8s:app=a", "k8s:io.kubernetes.pod.namespace=default"]
    with pytest.raises(ConflictError):  # same labels, another id: another node won
        store.txn(identities.allocate_ops(257, ["k8s:app=a", "k8s:io.kubernetes.pod.namespace=default"]))
    with pytest.raises(ConflictError):  # same id, other labels
        store.txn(identities.allocate_ops(256, ["k8s:app=b"]))
    assert identities.lookup(store, ["k8s:app=b"]) is None
    assert store.revision == 1


def test_sqlite_restart_keeps_data_and_history(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        s.put(POD_A, {"v": 1})
        s.put(POD_B, {"v": 2})
    with open_store(tmp_path) as s:
        assert s.revision == 2
        assert [r.value for r in s.list(Kind.PODS)] == [{"v": 1}, {"v": 2}]
        assert [e.revision for e in s.watch(2).drain()] == [2]
        assert s.put(POD_A, {"v": 3}) == 3
    assert (tmp_path / "store.db").exists()


def test_state_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CILIA_STATE_DIR", raising=False)
    assert state_dir() == Path("/var/lib/cilia")
    monkeypatch.setenv("CILIA_STATE_DIR", str(tmp_path))
    assert state_dir() == tmp_path
    assert state_dir("/x") == Path("/x")


WRITER = """
import sys, time
from cilia.store import Kind, open_store
s = open_store(sys.argv[1])
for i in range(int(sys.argv[2])):
    s.put(Kind.PODS.key("default", f"p{i}"), {"i": i, "t": time.time()})
    time.sleep(0.01)
"""


def test_sqlite_watch_across_processes(tmp_path: Path) -> None:
    n = 20
    with open_store(tmp_path) as s:
        w = s.watch(1, Kind.PODS)
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(n)])
        try:
            got: list[Event] = []
            lat: list[float] = []
            while len(got) < n:
                ev = w.get(timeout=10)
                assert ev is not None, f"only {len(got)} events arrived"
                lat.append(time.time() - ev.value["t"])
                got.append(ev)
        finally:
            proc.wait(10)
        assert proc.returncode == 0
        assert [(e.type, e.key.name, e.value["i"], e.revision) for e in got] == [
            (EventType.PUT, f"p{i}", i, i + 1) for i in range(n)
        ]
        lat.sort()
        print(f"cross-process watch latency: p50 {lat[n // 2] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")


def test_open_store_rejects_unknown_backend() -> None:
    with pytest.raises(StoreError, match="unknown store backend 'zookeeper'"):
        open_store(backend="zookeeper")
    with pytest.raises(StoreError, match="needs at least one endpoint"):
        open_store(backend="etcd")
