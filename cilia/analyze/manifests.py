"""Manifests → a validated :class:`cilia.k8s.objects.Cluster` for offline analysis.

Analysis refuses what real Cilium would refuse: unreadable input and invalid policies raise
:class:`cilia.k8s.errors.ManifestError` with every problem (its ``unreadable`` flag tells bad input,
exit 2, from invalid objects), never silently skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO

from cilia.k8s.cilium_rules import Flags
from cilia.k8s.cluster import build_cluster
from cilia.k8s.errors import ManifestError
from cilia.k8s.loader import LoadResult, load_paths
from cilia.k8s.objects import Cluster
from cilia.k8s.validate import validate_result


def cluster_from_result(result: LoadResult, flags: Flags = Flags()) -> Cluster:
    """Validate what was loaded (judged as an agent with ``flags``) and collect it;
    :class:`ManifestError` on any error."""
    report = validate_result(result, flags)
    if report.errors:
        raise ManifestError(list(report.errors))
    return build_cluster(result)


def load_cluster(
    paths: Sequence[str | Path], stdin: IO[bytes] | None = None, flags: Flags = Flags()
) -> tuple[LoadResult, Cluster]:
    """Load, validate and collect; the load result comes back too (lint reads its documents)."""
    result = load_paths(paths, stdin)
    return result, cluster_from_result(result, flags)
