"""Control-plane benchmarks mirroring Cilium's pkg/policy benchmarks (docs: benchmark-anchors.md).

(a)   RegenerateCIDRPolicyRules: 1,000 toCIDR+port egress rules, distill only -> 44,596 entries
(a')  RegenerateCIDRDenyPolicyRules: the same plus egressDeny rules, distill only -> 117,515 entries
(a'') RegenerateL3Ingress/EgressPolicyRules: 1,000 L3 rules, 3,000 identities, resolve + distill

Each workload asserts its MapState size, so speed work cannot silently change semantics. Prints
medians and the cilia/Cilium ratio, and a machine-readable ``summary:`` line last.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generators import Workload, cidr_workload, l3_workload
from cilia.policy.mapstate import MapState
from cilia.policy.resolve import (
    EngineOptions,
    NamedPorts,
    distill_filters,
    resolve_filters,
    resolve_policy,
    select_rules,
)
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.types import Direction

# Cilium's figures on this machine (ms per run) and the MapState sizes its benchmarks assert.
CILIUM_MS = {"cidr": 17.2, "cidr_deny": 80.3, "l3_ingress": 2.1, "l3_egress": 2.5}
EXPECTED_ENTRIES = {"cidr": 44_596, "cidr_deny": 117_515}
# Cilium's benchmark owner does not allow localhost (no Kubernetes mode in unit tests).
OPTIONS = EngineOptions(allow_localhost=False)


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm caches (port-range blocks, compiled matchers)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def cidr_bench(deny: bool, runs: int) -> tuple[int, float]:
    """Distill the already-resolved policy of the subject, as Cilium's benchmark times it."""
    w: Workload = cidr_workload(1000, deny=deny)
    cache = SelectorCache(w.identities)
    selection = select_rules(w.rules, w.identities[w.subject], OPTIONS)
    filters = resolve_filters(selection)
    for f in filters:
        for sel, _, _ in f.selectors:
            cache.add_selector(sel)
    result: list[MapState] = []

    def run() -> None:
        result[:] = [
            distill_filters(filters, selection, cache, NamedPorts(), is_host=False, options=OPTIONS)
        ]

    ms = median_ms(run, runs)
    return len(result[0]), ms


def l3_bench(direction: Direction, runs: int) -> tuple[int, float]:
    """Resolve + distill for the subject over 1,000 identical L3 rules and 3,000 identities."""
    w = l3_workload(direction)
    cache = SelectorCache(w.identities)
    labels = w.identities[w.subject]
    size: list[int] = []

    def run() -> None:
        pol = resolve_policy(w.subject, labels, w.rules, cache, options=OPTIONS)
        size[:] = [len(pol.map_state)]

    ms = median_ms(run, runs)
    return size[0], ms


def main() -> None:
    results: dict[str, tuple[int, float]] = {}
    results["cidr"] = cidr_bench(False, runs=15)
    results["cidr_deny"] = cidr_bench(True, runs=9)
    results["l3_ingress"] = l3_bench(Direction.INGRESS, runs=31)
    results["l3_egress"] = l3_bench(Direction.EGRESS, runs=31)
    for name, expected in EXPECTED_ENTRIES.items():
        got = results[name][0]
        if got != expected:
            raise SystemExit(f"{name}: MapState has {got} entries, Cilium's benchmark asserts {expected}")
    print(f"{'workload':<12} {'entries':>8} {'cilia ms':>9} {'Cilium ms':>9} {'ratio':>6}")
    for name, (entries, ms) in results.items():
        print(f"{name:<12} {entries:>8} {ms:>9.1f} {CILIUM_MS[name]:>9.1f} {ms / CILIUM_MS[name]:>6.2f}")
    print(
        "summary: "
        f"cidr_entries={results['cidr'][0]} cidr_ms={results['cidr'][1]:.1f} "
        f"cidr_deny_entries={results['cidr_deny'][0]} cidr_deny_ms={results['cidr_deny'][1]:.1f} "
        f"l3_ingress_ms={results['l3_ingress'][1]:.2f} l3_egress_ms={results['l3_egress'][1]:.2f}"
    )


if __name__ == "__main__":
    main()
