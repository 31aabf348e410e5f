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
def etcd1(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "etcd", 1)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def store(etcd1: EtcdCluster) -> Iterator[Store]:
    s = open_etcd_store(etcd1.endpoints)
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
