"""A reachability matrix over identity groups as bitsets (Python ints: bit ``d`` of row ``s``).

:class:`SideRows` computes one policy side (an endpoint's ingress or egress) for every peer at once,
from the engine's candidate entries; :func:`transpose_and` combines egress rows with ingress rows.
:class:`SideSummary` and :func:`combine` are the earlier form (a side as a default verdict plus
per-peer exceptions), kept for the benchmark's baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cilia.policy.types import lpm_prefix

_PORT_MASKS = tuple((0xFFFF << (16 - plen)) & 0xFFFF for plen in range(17))


@dataclass(frozen=True)
class SideSummary:
    """One side for one port class: the verdict for peers without entries, and the exceptions."""

    default: bool
    exceptions: Mapping[int, bool]  # peer index -> verdict where it differs from ``default``


UNENFORCED = SideSummary(True, {})


@dataclass(frozen=True)
class BitMatrix:
    """``rows[s]`` has bit ``d`` set iff traffic from index ``s`` to index ``d`` is allowed."""

    size: int
    rows: tuple[int, ...]

    def allowed(self, src: int, dst: int) -> bool:
        return bool((self.rows[src] >> dst) & 1)

    def targets(self, src: int) -> list[int]:
        """The destinations ``src`` reaches, in index order."""
        row = self.rows[src]
        if not row:
            return []
        return np.flatnonzero(_unpack(row, self.size)).tolist()

    def column_counts(self) -> list[int]:
        """For each destination, how many sources reach it."""
        counts = np.zeros(self.size, dtype=np.int64)
        for row in self.rows:
            if row:
                counts += _unpack(row, self.size)
        return counts.tolist()

    def count(self) -> int:
        return sum(r.bit_count() for r in self.rows)


def _unpack(row: int, n: int) -> np.ndarray:
    """Bit ``i`` of ``row`` as element ``i`` (0/1 bytes)."""
    packed = np.frombuffer(row.to_bytes((n + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(packed, count=n, bitorder="little")


def combine(egress: Sequence[SideSummary], ingress: Sequence[SideSummary]) -> BitMatrix:
    """Flow from s to d is allowed iff ``egress[s]`` allows d and ``ingress[d]`` allows s (§4.3)."""
    n = len(egress)
    full = (1 << n) - 1
    in_default = 0
    toggles: dict[int, int] = {}  # src -> dst bits whose ingress verdict for src differs from default
    for d, side in enumerate(ingress):
        if side.default:
            in_default |= 1 << d
        for s, verdict in side.exceptions.items():
            if verdict != side.default:
                toggles[s] = toggles.get(s, 0) | (1 << d)
    rows = []
    for s, side in enumerate(egress):
        out = full if side.default else 0
        for d, verdict in side.exceptions.items():
            if verdict != side.default:
                out ^= 1 << d
        rows.append(out & (in_default ^ toggles.get(s, 0)))
    return BitMatrix(n, tuple(rows))


# --------------------------------------------------------------------------- whole rows from policy


class _Space:
    """One port space's candidate entries of one side, as bitsets over matrix indices: ``*0`` says
    whether identity 0 (any peer) is among them."""

    __slots__ = (
        "allow0",
        "allow0_auth",
        "allow0_proxy",
        "allows",
        "auth",
        "deny",
        "deny0",
        "prefix",
        "proxy",
    )

    def __init__(self, prefix: int) -> None:
        self.prefix = prefix  # the LPM match length (lpm_prefix): longer wins
        self.deny0 = False
        self.deny = 0
        self.allow0 = self.allow0_auth = self.allow0_proxy = False
        self.allows = 0
        self.auth = 0  # allowed indices with an entry that requires authentication
        self.proxy = 0  # allowed indices with an entry that redirects to a proxy


class SideRows:
    """One side (an endpoint's ingress or egress) as sets over matrix indices, from the candidate
    entries the engine would distill into its MapState (:func:`cilia.policy.resolve.policy_contributions`).

    :meth:`row` gives, for one (protocol, port), the indices whose packets the side allows and those
    it sends to an L7 proxy — what :func:`cilia.policy.mapstate.distill` followed by the datapath's
    lookup (:func:`cilia.datapath.sim.policy_lookup`) decides for each peer one by one, computed
    with a handful of big-int operations per port space instead (tests/test_analyze_matrix_property.py
    holds the two equal):

    * per port space, denies of identity 0 wipe every narrower space and the allows of their own;
      a specific deny removes the allows of that peer in its own and narrower spaces;
    * a peer's own entry is the longest-prefix space that has one for it; identity 0's likewise;
    * a deny of its own denies; otherwise identity 0's entry wins if it is a deny, has a higher proxy
      priority, or the same one and a longer prefix; a chosen allow that requires authentication drops.
    """

    __slots__ = ("_spaces",)

    def __init__(self, contributions: Iterable[Any], direction: int, bits_of: Callable[[Any], int]) -> None:
        spaces: dict[tuple[int, int, int, int], _Space] = {}
        for space, deny, ids, _rules, auth, proxy in contributions:
            if space[0] != direction:
                continue
            sp = spaces.get(space)
            if sp is None:
                sp = spaces[space] = _Space(lpm_prefix(space[1], space[3]))
            has0 = 0 in ids
            bits = bits_of(ids)
            if deny:
                sp.deny0 = sp.deny0 or has0
                sp.deny |= bits
                continue
            sp.allows |= bits
            if has0:
                sp.allow0 = True
                sp.allow0_auth = sp.allow0_auth or bool(auth)
                sp.allow0_proxy = sp.allow0_proxy or bool(proxy)
            if auth:
                sp.auth |= bits
            if proxy:
                sp.proxy |= bits
        self._spaces = spaces

    def row(self, proto: int, port: int, full: int) -> tuple[int, int]:
        """(allowed, redirected) indices for a packet to ``proto``/``port`` (``full``: every index)."""
        # The spaces containing the port, longest prefix first (their ancestors are among them).
        chain = sorted(
            (
                sp
                for (_, p, base, plen), sp in self._spaces.items()
                if p == 0 or (p == proto and (port & _PORT_MASKS[plen]) == base)
            ),
            key=lambda sp: -sp.prefix,
        )
        # Identity 0's deciding entry: (prefix, deny, auth, proxy) of the longest space that keeps one.
        any_entry: tuple[int, bool, bool, bool] | None = None
        denied_any_above = [False] * len(chain)  # a deny of identity 0 in a strictly broader space
        deny_above = [0] * len(chain)  # specific denies of strictly broader spaces
        acc0, acc = False, 0
        for i in range(len(chain) - 1, -1, -1):
            denied_any_above[i], deny_above[i] = acc0, acc
            acc0 = acc0 or chain[i].deny0
            acc |= chain[i].deny
        for i, sp in enumerate(chain):
            if denied_any_above[i]:
                continue
            if sp.deny0:
                any_entry = (sp.prefix, True, False, False)
                break
            if sp.allow0:
                any_entry = (sp.prefix, False, sp.allow0_auth, sp.allow0_proxy)
                break
        left = full
        allowed = redirected = 0
        for i, sp in enumerate(chain):
            if not left:
                break
            if denied_any_above[i] or sp.deny0:
                continue  # no entries of specific peers survive here
            # a specific deny (kept unless a broader one covers it: both deny the same peers)
            left &= ~sp.deny
            own = sp.allows & ~(sp.deny | deny_above[i]) & left
            if not own:
                continue
            left &= ~own
            for needs_auth, proxied in ((False, False), (False, True), (True, False), (True, True)):
                part = own & (sp.auth if needs_auth else ~sp.auth) & (sp.proxy if proxied else ~sp.proxy)
                if not part:
                    continue
                prio = 1 if proxied else 0
                if any_entry is not None and (
                    any_entry[1]
                    or (1 if any_entry[3] else 0) > prio
                    or ((1 if any_entry[3] else 0) == prio and any_entry[0] > sp.prefix)
                ):
                    ok, proxy = not any_entry[1] and not any_entry[2], any_entry[3]
                else:
                    ok, proxy = not needs_auth, proxied
                if ok:
                    allowed |= part
                    if proxy:
                        redirected |= part
        if left and any_entry is not None and not any_entry[1] and not any_entry[2]:
            allowed |= left
            if any_entry[3]:
                redirected |= left
        return allowed, redirected


def transpose_and(rows: Sequence[int], columns: Sequence[int], n: int) -> list[int]:
    """``out[s]`` has bit ``d`` iff ``rows[s]`` has bit ``d`` and ``columns[d]`` has bit ``s``.

    The one step of the matrix that is quadratic in the number of groups: done in numpy on packed
    bits (unpack, transpose, pack), about 0.1 s per class for 10,000 groups, where a Python loop
    over the set bits would take minutes."""
    if n == 0:
        return []
    nbytes = (n + 7) // 8
    r = np.frombuffer(b"".join(x.to_bytes(nbytes, "little") for x in rows), dtype=np.uint8)
    c = np.frombuffer(b"".join(x.to_bytes(nbytes, "little") for x in columns), dtype=np.uint8)
    r = r.reshape(n, nbytes)
    c = c.reshape(n, nbytes)
    out = np.empty_like(r)
    # In blocks of 512 destinations: the unpacked bits (a byte each) stay small and in cache, and
    # the transposed block is made contiguous before packing (3-5x faster than packing a view).
    block = 512
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        bits = np.unpackbits(c[lo:hi], axis=1, count=n, bitorder="little")  # (hi-lo) x n
        packed = np.packbits(np.ascontiguousarray(bits.T), axis=1, bitorder="little")
        start = lo // 8
        out[:, start : start + packed.shape[1]] = packed
    np.bitwise_and(out, r, out=out)
    data = out.tobytes()
    return [int.from_bytes(data[i * nbytes : (i + 1) * nbytes], "little") for i in range(n)]
