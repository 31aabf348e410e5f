"""Benchmark of ``cilia diff`` (issue 16 item 1): the delta between a generated cluster
(bench/connectivity_bench.py's generator) and the same cluster with one more policy, against the
baseline of computing the two connectivity matrices alone, measured in the same run. The difference
is the tracing of the changed cells (and of the cells whose selecting policies changed) to name
their deciding rules, which builds the analysis' per-identity policies (the matrix holds verdicts
only).

Run: ``python3 bench/diff_bench.py [--pods N --namespaces N --policies N]``. The last line is
``summary: matrices_s=X diff_s=X ratio=X matrices_cpu_s=X diff_cpu_s=X cpu_ratio=X changes=N``
(wall clock and the process's CPU time: on a shared machine the CPU ratio is the steadier one).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.connectivity_bench import cluster_of, extra_policy, generate_documents
from cilia.analyze.cluster import Analysis, Options
from cilia.analyze.connectivity import connectivity
from cilia.analyze.diff import diff


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--policies", type=int, default=100)
    args = parser.parse_args(argv)
    docs = generate_documents(args.pods, args.namespaces, args.policies)
    old = Analysis(cluster_of(docs), Options())
    new = Analysis(cluster_of([*docs, extra_policy("ns-000")]), Options())
    start, cpu = time.perf_counter(), time.process_time()
    connectivity(old)
    connectivity(new)
    matrices, matrices_cpu = time.perf_counter() - start, time.process_time() - cpu
    old = Analysis(cluster_of(docs), Options())  # fresh: nothing cached from the baseline
    new = Analysis(cluster_of([*docs, extra_policy("ns-000")]), Options())
    start, cpu = time.perf_counter(), time.process_time()
    result = diff(old, new)
    took, took_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{args.pods} pods, {args.namespaces} namespaces, {args.policies} policies, one policy added")
    print(f"summary: matrices_s={matrices:.2f} diff_s={took:.2f} ratio={took / matrices:.1f} "
          f"matrices_cpu_s={matrices_cpu:.2f} diff_cpu_s={took_cpu:.2f} "
          f"cpu_ratio={took_cpu / matrices_cpu:.1f} "
          f"changes={len(result.changes)}")


if __name__ == "__main__":
    main()
