"""Shared fixtures and markers.

Tests marked ``root`` need root, bpffs and network namespaces. They are skipped for a non-root
developer with a reason starting ``[root]``; scripts/run-tests.sh fails the run when such a skip
happens while running as root (CI), so they can never be silently skipped there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"
SEED = REPO / "examples" / "seed"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="[root] needs root, bpffs and network namespaces")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
