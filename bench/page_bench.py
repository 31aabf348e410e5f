"""Benchmark of the html page (issue 16 item 4): ``cilia connectivity -o html`` of a generated
cluster (bench/connectivity_bench.py's generator: 10,000 pods in 200 namespaces, 1,000 policies by
default) loaded in headless Chromium. Reports the page's size, the time to write it, the time to its
first render (the page's own clock: navigation start to the first layout drawn, written into
``#cilia-status``), and the time to open one closed namespace (its groups and edges built from the
matrix bitsets); the seed story's page, measured in the same run, is the baseline of the ratio.
The drawn nodes and edges are checked against the data (:func:`cilia.analyze.graphpage.expected_view`).

Run: ``python3 bench/page_bench.py [--pods N --namespaces N --policies N]`` (needs Debian's
chromium). The last line is ``summary: page_mib=X write_s=X first_render_ms=X open_ns_ms=X
story_first_render_ms=X ratio=X groups=N``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.connectivity_bench import cluster_of, generate_documents
from bench.headless import dump_dom, find_chromium, status_of
from cilia.analyze.cluster import Analysis, Options, analyse_paths
from cilia.analyze.connectivity import connectivity
from cilia.analyze.graphpage import View, connectivity_data, expected_view, render_page

REPO = Path(__file__).resolve().parent.parent
STORY = [
    "examples/seed/app-a.yaml",
    "examples/seed/app-b.yaml",
    "examples/seed/frontend-pod.yaml",
    "examples/seed/deny-a-to-b-fixed.yaml",
    "examples/seed/allow-frontend-to-b.yaml",
]


def first_render(page: Path, fragment: str = "") -> dict[str, str]:
    status = status_of(dump_dom(page, fragment, timeout=300))
    if status.get("rendered") != "1":
        raise SystemExit(f"{page}: the page did not render")
    return status


def _drawn(status: dict[str, str]) -> View:
    counts = (int(status["leaves"]), int(status["parents"]), int(status["edges"]))
    return View(*counts, collapsed=status["collapsed"] == "true")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--policies", type=int, default=1_000)
    args = parser.parse_args(argv)
    if find_chromium() is None:
        raise SystemExit("needs chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="cilia-page-bench-") as tmp:
        story = analyse_paths([REPO / f for f in STORY], Options())
        story_page = Path(tmp) / "story.html"
        story_page.write_text(render_page(connectivity_data(connectivity(story), story)), encoding="utf-8")
        story_ms = int(first_render(story_page)["ms"])

        docs = generate_documents(args.pods, args.namespaces, args.policies)
        analysis = Analysis(cluster_of(docs), Options())
        conn = connectivity(analysis)
        start = time.perf_counter()
        data = connectivity_data(conn, analysis)
        text = render_page(data)
        write_s = time.perf_counter() - start
        page = Path(tmp) / "large.html"
        page.write_text(text, encoding="utf-8")
        status = first_render(page, "#open=ns-000")
        want = expected_view(data)
        if _drawn(status) != want:
            raise SystemExit(f"drawn {_drawn(status)} != data {want}")
        ms = int(status["ms"])
        mib = len(text.encode()) / 2**20
        print(f"{args.pods} pods, {args.namespaces} namespaces, {args.policies} policies: "
              f"{len(conn.groups)} groups, {len(conn.classes)} port classes")
        print(f"page {mib:.1f} MiB, written in {write_s:.2f} s; first render {ms} ms "
              f"({want.leaves} nodes, {want.edges} edges drawn, namespaces closed: {want.collapsed}); "
              f"opening ns-000: {status.get('open-ms')} ms ({status.get('open-leaves')} nodes, "
              f"{status.get('open-edges')} edges)")
        print(f"summary: page_mib={mib:.1f} write_s={write_s:.2f} first_render_ms={ms} "
              f"open_ns_ms={status.get('open-ms')} story_first_render_ms={story_ms} "
              f"ratio={ms / max(story_ms, 1):.1f} groups={len(conn.groups)}")


if __name__ == "__main__":
    main()
