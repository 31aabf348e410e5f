"""Bitset reachability from per-side default + exceptions, against a plain pairwise evaluation."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from cilia.analyze.matrix import BitMatrix, SideSummary, combine, transpose_and


def test_combine_small() -> None:
    egress = [SideSummary(True, {}), SideSummary(False, {0: True}), SideSummary(True, {1: False})]
    ingress = [SideSummary(True, {}), SideSummary(False, {2: True, 0: True}), SideSummary(True, {0: False})]
    m = combine(egress, ingress)
    assert m == BitMatrix(3, (0b011, 0b001, 0b101))
    assert m.targets(0) == [0, 1] and m.count() == 5 and m.allowed(2, 0) and not m.allowed(2, 1)


sides = st.lists(
    st.tuples(st.booleans(), st.dictionaries(st.integers(0, 7), st.booleans(), max_size=4)),
    min_size=1,
    max_size=8,
)


@given(sides, sides)
def test_combine_equals_pairwise(eg: list, ing: list) -> None:
    n = min(len(eg), len(ing))
    egress = [SideSummary(d, {k: v for k, v in ex.items() if k < n}) for d, ex in eg[:n]]
    ingress = [SideSummary(d, {k: v for k, v in ex.items() if k < n}) for d, ex in ing[:n]]
    m = combine(egress, ingress)
    for s in range(n):
        for d in range(n):
            want = egress[s].exceptions.get(d, egress[s].default) and ingress[d].exceptions.get(
                s, ingress[d].default
            )
            assert m.allowed(s, d) == want


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40), st.randoms(use_true_random=False))
def test_transpose_and_equals_bitwise(n: int, rng: random.Random) -> None:
    rows = [rng.getrandbits(n) if n else 0 for _ in range(n)]
    cols = [rng.getrandbits(n) if n else 0 for _ in range(n)]
    out = transpose_and(rows, cols, n)
    assert out == [
        sum(1 << d for d in range(n) if (rows[s] >> d) & 1 and (cols[d] >> s) & 1) for s in range(n)
    ]
