"""Shared fixtures and markers.

Tests marked ``root`` need root, bpffs and network namespaces. They are skipped for a non-root
developer with a reason starting ``[root]``; scripts/run-tests.sh fails the run when such a skip
happens while running as root (CI), so they can never be silently skipped there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cilia.lab.etcd_cluster import EtcdCluster

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"
SEED = REPO / "examples" / "seed"
CORPUS_ABSENT = (
    f"the policy corpus is absent ({CORPUS}): it lives in the project workspace's shared/ folder, "
    "beside the clone; CI has it (there, its absence fails the run)"
)


def corpus_expected(*expect: str) -> list[dict[str, Any]]:
    """The corpus's EXPECTED.yaml entries (those whose ``expect`` is one of ``expect``, or all), or one
    placeholder entry when the corpus is absent, so that a parametrized test is collected once and the
    ``corpus`` fixture skips it with one clear message (instead of pytest's "got empty parameter set")."""
    expected = CORPUS / "EXPECTED.yaml"
    if not expected.exists():
        return [{"file": "corpus-absent", "expect": "absent"}]
    entries = list(yaml.safe_load(expected.read_text()))
    return [e for e in entries if not expect or e["expect"] in expect]


@pytest.fixture
def corpus() -> Path:
    """The corpus directory. Absent: skipped for a developer, a failure under CI (``CI=true``)."""
    if not (CORPUS / "EXPECTED.yaml").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(CORPUS_ABSENT)
        pytest.skip(CORPUS_ABSENT)
    return CORPUS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="[root] needs root, bpffs and network namespaces")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A one-member etcd on 127.0.0.1 with its data in the test's directory, stopped after the test
    (skipped where etcd is not installed: ``apt-get install -y etcd-server etcd-client``)."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd not installed (apt-get install -y etcd-server etcd-client)")
    cluster = EtcdCluster(tmp_path / "etcd", 1)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
