"""Every control-plane benchmark in one run: the engine's workloads (a), (a'), (a'') from
bench/policy_bench.py and the analysis workloads (b), (c) from bench/connectivity_bench.py, then (b)
at 100,000 pods (``connectivity_bench.py --scale 100k``, in a process of its own).

The last line is exactly ``summary: cidr_entries=N cidr_ms=X cidr_deny_entries=N cidr_deny_ms=X
l3_ingress_ms=X l3_egress_ms=X connectivity_s=X incremental_speedup=X connectivity_100k_s=X
connectivity_100k_cpu_s=X connectivity_100k_rss_mib=N`` (on one line; medians).
The engine's workloads are imported and called; if their functions are not importable any more,
bench/policy_bench.py is run as a subprocess and its ``summary:`` line is parsed instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import connectivity_bench
from cilia.policy.types import Direction

HERE = Path(__file__).resolve().parent

CONNECTIVITY_100K_KEYS = ("connectivity_100k_s", "connectivity_100k_cpu_s", "connectivity_100k_rss_mib")
POLICY_KEYS = (
    "cidr_entries",
    "cidr_ms",
    "cidr_deny_entries",
    "cidr_deny_ms",
    "l3_ingress_ms",
    "l3_egress_ms",
)


def policy_numbers() -> dict[str, str]:
    """The engine benchmark's figures, in its own summary's formatting."""
    try:
        from bench.policy_bench import EXPECTED_ENTRIES, cidr_bench, l3_bench
    except ImportError:
        return policy_numbers_subprocess()
    cidr = cidr_bench(False, runs=15)
    cidr_deny = cidr_bench(True, runs=9)
    l3_in = l3_bench(Direction.INGRESS, runs=31)
    l3_eg = l3_bench(Direction.EGRESS, runs=31)
    for name, (entries, _) in (("cidr", cidr), ("cidr_deny", cidr_deny)):
        if entries != EXPECTED_ENTRIES[name]:
            raise SystemExit(f"{name}: {entries} MapState entries, Cilium asserts {EXPECTED_ENTRIES[name]}")
    print(f"(a)   cidr: {cidr[0]} entries, {cidr[1]:.1f} ms")
    print(f"(a')  cidr deny: {cidr_deny[0]} entries, {cidr_deny[1]:.1f} ms")
    print(f"(a'') l3 ingress {l3_in[1]:.2f} ms, l3 egress {l3_eg[1]:.2f} ms")
    return {
        "cidr_entries": str(cidr[0]),
        "cidr_ms": f"{cidr[1]:.1f}",
        "cidr_deny_entries": str(cidr_deny[0]),
        "cidr_deny_ms": f"{cidr_deny[1]:.1f}",
        "l3_ingress_ms": f"{l3_in[1]:.2f}",
        "l3_egress_ms": f"{l3_eg[1]:.2f}",
    }


def policy_numbers_subprocess() -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, str(HERE / "policy_bench.py")], check=True, capture_output=True, text=True
    ).stdout
    print(out, end="")
    last = [line for line in out.splitlines() if line.startswith("summary:")][-1]
    found = dict(re.findall(r"(\w+)=(\S+)", last))
    return {k: found[k] for k in POLICY_KEYS}


def connectivity_100k() -> dict[str, str]:
    """``connectivity_bench.py --scale 100k`` in a process of its own (its peak RSS is then the
    100k matrix's alone): 100,000 pods, 2,000 namespaces, 10,000 policies (issue 21)."""
    out = subprocess.run(
        [sys.executable, str(HERE / "connectivity_bench.py"), "--scale", "100k"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    print(out, end="")
    last = [line for line in out.splitlines() if line.startswith("summary:")][-1]
    found = dict(re.findall(r"(\w+)=(\S+)", last))
    return {
        "connectivity_100k_s": found["connectivity_s"],
        "connectivity_100k_cpu_s": found["connectivity_cpu_s"],
        "connectivity_100k_rss_mib": found["peak_rss_mib"],
    }


def main() -> None:
    numbers = policy_numbers()
    analysis = connectivity_bench.run()
    numbers["connectivity_s"] = f"{analysis['connectivity_s']:.2f}"
    numbers["incremental_speedup"] = f"{analysis['incremental_speedup']:.0f}"
    numbers.update(connectivity_100k())
    keys = (*POLICY_KEYS, "connectivity_s", "incremental_speedup", *CONNECTIVITY_100K_KEYS)
    print("summary: " + " ".join(f"{k}={numbers[k]}" for k in keys))


if __name__ == "__main__":
    main()
