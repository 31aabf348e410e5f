"""A reachability matrix over identities as bitsets, built from one policy *side* per identity.

A side (one endpoint's ingress or egress policy) decides the same way for every peer identity it has
no entry of its own for, so it is described by a default verdict plus per-identity exceptions. Rows are
Python ints used as bitsets over destination indices: building the matrix costs O(identities + entries)
big-int operations rather than O(identities²) lookups, which is what lets ``cilia connectivity`` handle
10,000 pods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


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
        row = self.rows[src]
        return [d for d in range(self.size) if (row >> d) & 1]

    def count(self) -> int:
        return sum(r.bit_count() for r in self.rows)


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
