"""Port ranges (semantics.md §5.3) and MapState insertion rules (§5.4), bulk and one key at a time."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cilia.policy.mapstate import Contribution, MapDiff, MapState, ancestors, contains, diff, distill
from cilia.policy.portrange import port_range_to_masked
from cilia.policy.types import Entry, Key, RuleRef

TCP, UDP = 6, 17
IN, EG = 0, 1
R1 = RuleRef("CiliumNetworkPolicy", "default", "r1", "ingress", 0)
R2 = RuleRef("CiliumNetworkPolicy", "default", "r2", "ingress", 0)
D1 = RuleRef("CiliumNetworkPolicy", "default", "d1", "ingressDeny", 0)
D2 = RuleRef("CiliumNetworkPolicy", "default", "d2", "ingressDeny", 0)


def allow(*rules: RuleRef) -> Entry:
    return Entry(False, frozenset(rules))


def deny(*rules: RuleRef) -> Entry:
    return Entry(True, frozenset(rules))


# --------------------------------------------------------------------------------- port ranges


@pytest.mark.parametrize(
    ("start", "end", "blocks"),
    [
        (0, 0, ((0, 0),)),
        (0, 65535, ((0, 0),)),
        (80, 80, ((80, 16),)),
        (80, 0, ((80, 16),)),  # endPort <= port: the single port
        (80, 79, ((80, 16),)),
        (5, 10, ((5, 16), (6, 15), (8, 15), (10, 16))),  # Test_EnsureDeniesPrecedeAllows
        (64, 127, ((64, 10),)),
        (0, 100, ((0, 10), (64, 11), (96, 14), (100, 16))),
        (65534, 65535, ((65534, 15),)),
        (1, 65535, tuple((1 << b, 16 - b) for b in range(16))),
        (32768, 65535, ((32768, 1),)),
    ],
)
def test_port_range_to_masked(start: int, end: int, blocks: tuple[tuple[int, int], ...]) -> None:
    assert port_range_to_masked(start, end) == blocks


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_port_range_blocks_cover_exactly_the_range(start: int, end: int) -> None:
    blocks = port_range_to_masked(start, end)
    covered: list[int] = []
    for port, plen in blocks:
        size = 1 << (16 - plen)
        assert port % size == 0  # aligned
        covered.extend(range(port, port + size))
    if start == 0 and end in (0, 65535):
        expected = list(range(65536))
    elif end <= start:
        expected = [start]
    else:
        expected = list(range(start, end + 1))
    assert covered == expected


# --------------------------------------------------------------------------------- port spaces


def test_ancestors_and_contains() -> None:
    assert ancestors((IN, TCP, 81, 16))[:3] == [(IN, TCP, 81, 16), (IN, TCP, 80, 15), (IN, TCP, 80, 14)]
    assert ancestors((IN, TCP, 81, 16))[-2:] == [(IN, TCP, 0, 0), (IN, 0, 0, 0)]
    assert ancestors((EG, 0, 0, 0)) == [(EG, 0, 0, 0)]
    assert contains((IN, 0, 0, 0), (IN, UDP, 53, 16))
    assert not contains((EG, 0, 0, 0), (IN, UDP, 53, 16))
    assert contains((IN, TCP, 64, 10), (IN, TCP, 100, 16))
    assert not contains((IN, TCP, 64, 10), (IN, TCP, 128, 16))
    assert not contains((IN, UDP, 0, 0), (IN, TCP, 80, 16))
    assert not contains((IN, TCP, 80, 16), (IN, TCP, 80, 15))


# --------------------------------------------------------------------------------- insertion rules

K = Key
CASES: list[tuple[str, list[tuple[Key, Entry]], dict[Key, Entry]]] = [
    (
        "allows merge their rules",
        [(K(5, IN, TCP, 80, 16), allow(R1)), (K(5, IN, TCP, 80, 16), allow(R2))],
        {K(5, IN, TCP, 80, 16): allow(R1, R2)},
    ),
    (
        "identity 0 and a specific identity are both kept",
        [(K(0, IN, TCP, 80, 16), allow(R1)), (K(5, IN, TCP, 80, 16), allow(R2))],
        {K(0, IN, TCP, 80, 16): allow(R1), K(5, IN, TCP, 80, 16): allow(R2)},
    ),
    (
        "deny overwrites the allow of the same key",
        [(K(5, IN, TCP, 80, 16), allow(R1)), (K(5, IN, TCP, 80, 16), deny(D1))],
        {K(5, IN, TCP, 80, 16): deny(D1)},
    ),
    (
        "allow under an equal deny is not inserted",
        [(K(5, IN, TCP, 80, 16), deny(D1)), (K(5, IN, TCP, 80, 16), allow(R1))],
        {K(5, IN, TCP, 80, 16): deny(D1)},
    ),
    (
        "L3 deny deletes narrower allows of the same identity only",
        [
            (K(5, IN, TCP, 80, 16), allow(R1)),
            (K(6, IN, TCP, 80, 16), allow(R1)),
            (K(0, IN, TCP, 80, 16), allow(R1)),
            (K(5, IN, 0, 0, 0), deny(D1)),
        ],
        {K(6, IN, TCP, 80, 16): allow(R1), K(0, IN, TCP, 80, 16): allow(R1), K(5, IN, 0, 0, 0): deny(D1)},
    ),
    (
        "identity-0 deny removes the port's allows for every identity",
        [
            (K(5, IN, TCP, 80, 16), allow(R1)),
            (K(6, IN, TCP, 81, 16), allow(R1)),
            (K(0, IN, TCP, 80, 16), allow(R1)),
            (K(0, IN, TCP, 80, 15), deny(D1)),
        ],
        {K(0, IN, TCP, 80, 15): deny(D1)},
    ),
    (
        "narrower deny of another identity is kept beside a wildcard allow",
        [(K(0, IN, TCP, 0, 0), allow(R1)), (K(5, IN, TCP, 80, 16), deny(D1))],
        {K(0, IN, TCP, 0, 0): allow(R1), K(5, IN, TCP, 80, 16): deny(D1)},
    ),
    (
        "a deny under a broader different deny is redundant",
        [(K(5, IN, TCP, 0, 0), deny(D1)), (K(5, IN, TCP, 80, 16), deny(D2))],
        {K(5, IN, TCP, 0, 0): deny(D1)},
    ),
    (
        "a broader deny deletes narrower different denies",
        [(K(5, IN, TCP, 80, 16), deny(D2)), (K(0, IN, TCP, 0, 0), deny(D1))],
        {K(0, IN, TCP, 0, 0): deny(D1)},
    ),
    (
        "equal denies merge",
        [(K(5, IN, TCP, 80, 16), deny(D1)), (K(5, IN, TCP, 80, 16), deny(D2))],
        {K(5, IN, TCP, 80, 16): deny(D1, D2)},
    ),
    (
        "a specific deny does not cover the identity-0 allow",
        [(K(5, IN, 0, 0, 0), deny(D1)), (K(0, IN, TCP, 80, 16), allow(R1))],
        {K(5, IN, 0, 0, 0): deny(D1), K(0, IN, TCP, 80, 16): allow(R1)},
    ),
    (
        "port-range deny covers allows in the range (world subnet case)",
        [
            (K(2, EG, TCP, 5, 16), allow(R1)),
            (K(2, EG, TCP, 8, 15), allow(R1)),
            (K(2, EG, TCP, 64, 10), allow(R1)),
            (K(2, EG, TCP, 0, 9), deny(D1)),
        ],
        {K(2, EG, TCP, 0, 9): deny(D1)},
    ),
    (
        "directions never interact",
        [(K(5, IN, 0, 0, 0), deny(D1)), (K(5, EG, TCP, 80, 16), allow(R1))],
        {K(5, IN, 0, 0, 0): deny(D1), K(5, EG, TCP, 80, 16): allow(R1)},
    ),
]


@pytest.mark.parametrize(("name", "inserts", "expected"), CASES, ids=[c[0] for c in CASES])
def test_insertion_rules(name: str, inserts: list[tuple[Key, Entry]], expected: dict[Key, Entry]) -> None:
    ms = MapState()
    for k, e in inserts:
        ms.insert(k, e)
    assert ms.entries == expected
    # The bulk computation gives the same state.
    bulk = distill(
        Contribution((k.direction, k.proto, k.port, k.prefix_len), e.deny, (k.identity,), e.rules)
        for k, e in inserts
    )
    assert bulk.entries == expected


def test_remove_identity_and_index() -> None:
    ms = MapState()
    ms.insert(K(5, IN, TCP, 80, 16), allow(R1))
    ms.insert(K(6, IN, TCP, 80, 16), allow(R1))
    ms.remove_identity(5)
    assert ms.entries == {K(6, IN, TCP, 80, 16): allow(R1)}
    assert dict(ms.at((IN, TCP, 80, 16))) == {6: allow(R1)}
    ms.remove_identity(6)
    assert len(ms) == 0 and list(ms.spaces()) == []


# ---------------------------------------------------------- bulk distill == sequential insertion


def _random_candidates(seed: int) -> list[tuple[Key, Entry]]:
    rng = random.Random(seed)
    out = []
    for _ in range(rng.randint(1, 25)):
        ident = rng.choice((0, 5, 6, 7))
        direction = rng.choice((IN, EG))
        r = rng.random()
        if r < 0.15:
            proto, port, plen = 0, 0, 0
        else:
            proto = rng.choice((TCP, UDP))
            plen = rng.choice((0, 8, 14, 15, 16, 16))
            port = rng.choice((0, 64, 80, 81, 443)) & ((0xFFFF << (16 - plen)) & 0xFFFF)
        is_deny = rng.random() < 0.35
        ref = rng.choice((D1, D2) if is_deny else (R1, R2))
        out.append((Key(ident, direction, proto, port, plen), Entry(is_deny, frozenset({ref}))))
    return out


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**9), st.randoms(use_true_random=False))
def test_distill_equals_any_insertion_order(seed: int, shuffler: random.Random) -> None:
    cands = _random_candidates(seed)
    bulk = distill(
        Contribution((k.direction, k.proto, k.port, k.prefix_len), e.deny, (k.identity,), e.rules)
        for k, e in cands
    )
    for _ in range(3):
        order = list(cands)
        shuffler.shuffle(order)
        seq = MapState()
        for k, e in order:
            seq.insert(k, e)
        assert seq.entries == bulk.entries


# --------------------------------------------------------------------------------- diff


def test_diff() -> None:
    old = {K(5, IN, TCP, 80, 16): allow(R1), K(6, IN, TCP, 80, 16): allow(R1), K(7, IN, 0, 0, 0): allow(R1)}
    new = {K(5, IN, TCP, 80, 16): allow(R1, R2), K(7, IN, 0, 0, 0): allow(R1), K(8, IN, 0, 0, 0): deny(D1)}
    assert diff(old, new) == MapDiff(
        adds={K(8, IN, 0, 0, 0): deny(D1)},
        updates={K(5, IN, TCP, 80, 16): allow(R1, R2)},
        deletes=frozenset({K(6, IN, TCP, 80, 16)}),
    )
    assert not diff(new, dict(new))


def test_of_identities_and_drop() -> None:
    ms = distill(
        [
            Contribution((IN, TCP, 80, 16), False, {5, 6}, frozenset({R1})),
            Contribution((IN, 0, 0, 0), False, {5}, frozenset({R2})),
        ]
    )
    assert ms.of_identities({5}) == {K(5, IN, TCP, 80, 16): allow(R1), K(5, IN, 0, 0, 0): allow(R2)}
    ms.drop(K(5, IN, 0, 0, 0))
    assert ms.entries == {K(5, IN, TCP, 80, 16): allow(R1), K(6, IN, TCP, 80, 16): allow(R1)}
