"""The benchmark workloads resolve to exactly the MapState sizes Cilium's benchmarks assert (a
semantic check of prefix-aware CIDR selection and deny insertion at scale)."""

from __future__ import annotations

import sys

from conftest import REPO

if str(REPO) not in sys.path:  # bench/ is a top-level directory, not an installed package
    sys.path.insert(0, str(REPO))

import pytest

from bench.generators import cidr_allow_prefix, cidr_deny_prefix, cidr_workload, l3_workload
from cilia.policy.resolve import EngineOptions, resolve_policy
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.types import Direction, Entry, Key

NO_LOCALHOST = EngineOptions(allow_localhost=False)


def test_generators_follow_cilium() -> None:
    assert [cidr_allow_prefix(i) for i in range(1, 6)] == [
        ("192.1.0.0/16", 81),
        ("244.2.2.0/24", 82),
        ("10.3.3.48/28", 83),
        ("192.4.4.4/32", 84),
        ("244.0.0.0/8", 85),
    ]
    assert cidr_deny_prefix(774) == ("10.0.0.0/8", 199)
    assert cidr_deny_prefix(776) == ("244.17.62.0/24", 201)


@pytest.mark.parametrize(("deny", "entries"), [(False, 44_596), (True, 117_515)])
def test_cidr_workload_sizes(deny: bool, entries: int) -> None:
    w = cidr_workload(1000, deny=deny)
    pol = resolve_policy(
        w.subject, w.identities[w.subject], w.rules, SelectorCache(w.identities), options=NO_LOCALHOST
    )
    assert len(pol.map_state) == entries


@pytest.mark.parametrize("direction", list(Direction))
def test_l3_workload(direction: Direction) -> None:
    w = l3_workload(direction)
    pol = resolve_policy(
        w.subject, w.identities[w.subject], w.rules, SelectorCache(w.identities), options=NO_LOCALHOST
    )
    other = Direction(1 - direction)
    # "bar" selects none of the 3,000 identities: the direction is default deny with no entry.
    assert pol.map_state.entries == {
        Key(0, other, 0, 0, 0): Entry(False, pol.map_state[Key(0, other, 0, 0, 0)].rules)
    }
    assert pol.enforced[direction] and not pol.enforced[other]
