"""Node registry and merged remote ipcache on a real etcd: registration, publish/withdraw, lease
expiry removing a node's entries, a moved pod, and the view following through a compaction."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator

import pytest

from cilia.lab.etcd_cluster import EtcdCluster
from cilia.store import InvalidKeyError, StoreError
from cilia.store.etcd import EtcdBackend
from cilia.store.nodes import (
    REMOTE_NODE_IDENTITY,
    ClusterView,
    IPCacheChange,
    IPCacheEntry,
    NodeInfo,
    NodeRegistration,
    join,
)

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd not installed (apt-get install -y etcd-server etcd-client)")


@pytest.fixture
def backend(etcd: EtcdCluster) -> Iterator[Callable[[], EtcdBackend]]:
    made: list[EtcdBackend] = []

    def make() -> EtcdBackend:
        b = EtcdBackend(etcd.endpoints)
        made.append(b)
        return b

    try:
        yield make
    finally:
        for b in made:
            b.close()


def until(poll: Callable[[], list[IPCacheChange]], timeout: float) -> list[IPCacheChange]:
    deadline = time.monotonic() + timeout
    got: list[IPCacheChange] = []
    while not got and time.monotonic() < deadline:
        got = poll()
    return got


def test_lab_addressing() -> None:
    assert NodeInfo.lab("n0", 0) == NodeInfo("n0", 0, "198.18.254.1", "198.18.0.0/20")
    assert NodeInfo.lab("n3", 3) == NodeInfo("n3", 3, "198.18.254.4", "198.18.48.0/20")
    with pytest.raises(StoreError, match="out of range"):
        NodeInfo.lab("x", 15)


def test_view_merges_remote_nodes_and_their_endpoints(backend: Callable[[], EtcdBackend]) -> None:
    b1, b2 = backend(), backend()
    n1 = join(b1, NodeInfo.lab("n1", 1), ttl=10)
    n2 = join(b2, NodeInfo.lab("n2", 2), ttl=10)
    n1.publish_many([("198.18.16.2", 300, "default/a"), ("198.18.16.3", 301, "default/b")])
    n2.publish("198.18.32.2", 302, "prod/c")
    view = ClusterView(b2, local_node="n2")
    assert view.nodes() == {"n1": NodeInfo.lab("n1", 1), "n2": NodeInfo.lab("n2", 2)}
    assert view.ipcache() == {
        "198.18.254.2": IPCacheEntry("198.18.254.2", REMOTE_NODE_IDENTITY, "n1"),
        "198.18.16.2": IPCacheEntry("198.18.16.2", 300, "n1", "default/a"),
        "198.18.16.3": IPCacheEntry("198.18.16.3", 301, "n1", "default/b"),
    }
    assert view.poll() == []
    n1.publish("198.18.16.2", 310, "default/a")  # relabelled pod: new identity
    n1.withdraw("198.18.16.3")
    assert until(lambda: view.poll(1.0), 5) == [
        IPCacheChange("198.18.16.2", IPCacheEntry("198.18.16.2", 300, "n1", "default/a"),
                      IPCacheEntry("198.18.16.2", 310, "n1", "default/a")),
        IPCacheChange("198.18.16.3", IPCacheEntry("198.18.16.3", 301, "n1", "default/b"), None),
    ]
    # A view from outside every node (e.g. the CLI) sees both nodes as remote.
    assert set(ClusterView(b1).ipcache()) == {"198.18.254.2", "198.18.254.3", "198.18.16.2", "198.18.32.2"}
    with pytest.raises(InvalidKeyError):
        NodeRegistration(b1, NodeInfo("a/b", 1, "198.18.254.9", "198.18.16.0/20"), n1.lease).register()


def test_lease_expiry_removes_a_nodes_entries(backend: Callable[[], EtcdBackend]) -> None:
    b1, b2 = backend(), backend()
    dying = join(b1, NodeInfo.lab("n1", 1), ttl=2)
    join(b2, NodeInfo.lab("n2", 2), ttl=10)
    dying.publish_many([(f"198.18.16.{i}", 400 + i, f"default/p{i}") for i in range(2, 6)])
    view = ClusterView(b2, local_node="n2")
    assert len(view.ipcache()) == 5
    batches: list[list[IPCacheChange]] = []
    stop = view.follow(batches.append, step=0.2)
    try:
        dying.lease.abandon()  # no more keepalives: etcd deletes the keys after the TTL
        deadline = time.monotonic() + 8
        while view.ipcache() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop()
    assert view.ipcache() == {}
    assert view.nodes() == {"n2": NodeInfo.lab("n2", 2)}
    # Everything went in one revision, so one batch.
    assert batches == [[
        IPCacheChange(f"198.18.16.{i}", IPCacheEntry(f"198.18.16.{i}", 400 + i, "n1", f"default/p{i}"), None)
        for i in range(2, 6)
    ] + [IPCacheChange("198.18.254.2", IPCacheEntry("198.18.254.2", REMOTE_NODE_IDENTITY, "n1"), None)]]


def test_rejoin_with_a_new_lease_republishes(backend: Callable[[], EtcdBackend]) -> None:
    b1, b2 = backend(), backend()
    n1 = join(b1, NodeInfo.lab("n1", 1), ttl=2)
    n1.publish("198.18.16.7", 500, "default/x")
    n1.lease.revoke()
    view = ClusterView(b2, local_node="n2")
    assert view.ipcache() == {}
    n1.rejoin(b1.grant_lease(10))
    assert until(lambda: view.poll(1.0), 5) == [
        IPCacheChange("198.18.16.7", None, IPCacheEntry("198.18.16.7", 500, "n1", "default/x")),
        IPCacheChange("198.18.254.2", None, IPCacheEntry("198.18.254.2", REMOTE_NODE_IDENTITY, "n1")),
    ]


def test_moved_pod_maps_to_the_newest_entry_and_view_survives_compaction(
        backend: Callable[[], EtcdBackend]) -> None:
    b1, b2, b3 = backend(), backend(), backend()
    n1 = join(b1, NodeInfo.lab("n1", 1), ttl=10)
    n2 = join(b2, NodeInfo.lab("n2", 2), ttl=10)
    view = ClusterView(b3, local_node="n3")
    n1.publish("198.18.16.9", 600, "default/m")
    n2.publish("198.18.16.9", 601, "default/m")  # the address moved before n1 withdrew it
    until(lambda: view.poll(1.0), 5)
    assert view.ipcache()["198.18.16.9"] == IPCacheEntry("198.18.16.9", 601, "n2", "default/m")
    n1.withdraw("198.18.16.9")
    n2.publish("198.18.32.9", 602, "default/z")
    b1.compact(b1.revision())  # history the view has not read is gone: it lists again
    assert view.poll() == [
        IPCacheChange("198.18.32.9", None, IPCacheEntry("198.18.32.9", 602, "n2", "default/z")),
    ]
    assert view.ipcache()["198.18.16.9"] == IPCacheEntry("198.18.16.9", 601, "n2", "default/m")
