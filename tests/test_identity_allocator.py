"""Identity allocation: reserved numbers, scopes, stability, events (§3.1)."""

from __future__ import annotations

import pytest

from cilia.identity.allocator import (
    MIN_LOCAL_IDENTITY,
    EventKind,
    IdentityAllocator,
    IdentityConflictError,
    IdentityEvent,
    LocalAllocator,
    is_local_scope,
    reserved_identity_for,
)
from cilia.identity.cidr import cidr_identity_labels
from cilia.identity.fqdn import fqdn_label
from cilia.identity.labels import Labels
from cilia.identity.podlabels import pod_identity_labels
from cilia.identity.reserved import RESERVED_LABELS

A = pod_identity_labels({"app": "a"}, "default")
B = pod_identity_labels({"app": "b"}, "default")
C = pod_identity_labels({"app": "c"}, "default")


def test_protocol() -> None:
    assert isinstance(LocalAllocator(), IdentityAllocator)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["reserved:host"], 1),
        (["reserved:host", "reserved:kube-apiserver"], 1),  # host wins whatever else it carries
        (["reserved:world"], 2),
        (["reserved:remote-node"], 6),
        (["reserved:remote-node", "reserved:kube-apiserver"], 7),
        (["reserved:init"], 5),
        (["reserved:world-ipv6"], 10),
        (["reserved:health"], 4),
        (["reserved:world", "k8s:app=x"], None),  # users cannot claim reserved identities
        (["k8s:app=x"], None),
        (["reserved:unknown-thing"], None),
    ],
)
def test_reserved_identity_for(labels: list[str], expected: int | None) -> None:
    assert reserved_identity_for(Labels.parse(labels)) == expected


def test_reserved_are_preloaded_and_fixed() -> None:
    alloc = LocalAllocator()
    assert {n: lbls for n, lbls in alloc.identities().items()} == {
        int(k): v for k, v in RESERVED_LABELS.items()
    }
    assert alloc.allocate(Labels.parse(["reserved:world"])) == 2
    assert alloc.by_labels(Labels.parse(["reserved:host"])) == 1
    assert not alloc.release(Labels.parse(["reserved:world"]))
    assert alloc.lookup(2) == Labels.parse(["reserved:world"])


def test_scopes_and_first_come_numbers() -> None:
    alloc = LocalAllocator()
    assert alloc.allocate(A) == 256
    assert alloc.allocate(B) == 257
    assert alloc.allocate(A) == 256  # same labels, same identity
    assert alloc.allocate(cidr_identity_labels("198.19.0.0/16")) == MIN_LOCAL_IDENTITY == 0x01000001
    assert alloc.allocate(Labels([fqdn_label("example.com"), *RESERVED_LABELS[2]])) == 0x01000002
    assert alloc.lookup(257) == B
    assert alloc.by_labels(B) == 257
    assert alloc.by_labels(C) is None
    assert alloc.lookup(999) is None


def test_cluster_id_range() -> None:
    assert LocalAllocator(cluster_id=3).allocate(A) == 3 << 16


def test_is_local_scope() -> None:
    assert is_local_scope(cidr_identity_labels("10.0.0.0/8"))
    assert not is_local_scope(A)
    assert not is_local_scope(Labels())


def test_refcount_release_and_reuse_smallest() -> None:
    alloc = LocalAllocator()
    for lbls in (A, B, C):
        alloc.allocate(lbls)
    alloc.allocate(B)
    assert not alloc.release(B)  # one reference left
    assert alloc.release(B)
    assert alloc.lookup(257) is None
    assert not alloc.release(B)
    d = pod_identity_labels({"app": "d"}, "default")
    assert alloc.allocate(d) == 257  # smallest free number
    assert alloc.allocate(pod_identity_labels({"app": "e"}, "default")) == 259


def test_same_sequence_same_numbers() -> None:
    seq = [pod_identity_labels({"app": str(i)}, "ns") for i in range(50)]
    a, b = LocalAllocator(), LocalAllocator()
    assert [a.allocate(x) for x in seq] == [b.allocate(x) for x in seq]


def test_restore() -> None:
    first = LocalAllocator()
    first.allocate(A)
    first.allocate(B)
    first.release(A)
    saved = {n: lbls for n, lbls in first.identities().items() if n > 255}
    assert saved == {257: B}
    second = LocalAllocator()
    second.restore(saved)
    assert second.allocate(B) == 257
    assert second.allocate(A) == 256  # the free number below is still used
    assert second.allocate(C) == 258
    with pytest.raises(IdentityConflictError, match="conflicts"):
        second.restore({300: A})
    with pytest.raises(IdentityConflictError, match="outside its range"):
        LocalAllocator().restore({5: A} | {0x01000005: A})


def test_events() -> None:
    alloc = LocalAllocator()
    seen: list[IdentityEvent] = []
    unsubscribe = alloc.subscribe(seen.append, replay=False)
    alloc.allocate(A)
    alloc.allocate(A)
    alloc.release(A)
    alloc.release(A)
    host_api = Labels.parse(["reserved:host", "reserved:kube-apiserver"])
    alloc.allocate(host_api)
    unsubscribe()
    alloc.allocate(B)
    assert seen == [
        IdentityEvent(EventKind.ADDED, 256, A),
        IdentityEvent(EventKind.REMOVED, 256, A),
        IdentityEvent(EventKind.REMOVED, 1, RESERVED_LABELS[1]),
        IdentityEvent(EventKind.ADDED, 1, host_api),
    ]


def test_subscribe_replays_existing() -> None:
    alloc = LocalAllocator()
    alloc.allocate(A)
    seen: list[IdentityEvent] = []
    alloc.subscribe(seen.append)
    assert [(e.kind, e.identity) for e in seen] == [(EventKind.ADDED, n) for n in [*range(1, 12), 256]]
