"""The html page of ``cilia connectivity -o html`` and ``cilia diff -o html`` (issue 16 items 3-4):
its data against the matrices it was made from, offline-ness, and in headless Chromium: the drawn
nodes and edges equal the data, an edge's trace names the deciding rule, a screenshot is kept
(under $CILIA_ARTIFACTS, else the test's tmp dir). Without chromium the browser tests skip, and fail
under CI (``CI=true``): scripts/install-system-deps.sh installs it."""

from __future__ import annotations

import base64
import html
import json
import os
import re
from pathlib import Path

import pytest

from bench.headless import dump_dom, find_chromium, status_of
from cilia.analyze.cluster import Options, analyse_paths
from cilia.analyze.connectivity import connectivity
from cilia.analyze.diff import diff
from cilia.analyze.graphpage import (
    EXPAND_GROUPS,
    View,
    connectivity_data,
    diff_data,
    expected_view,
    render_page,
)
from tests.conftest import REPO
from tests.helpers_analyze import analysis_of, files_args, run_cli
from tests.helpers_page import page_data

DEMO_WORKLOADS = REPO / "tests" / "inputs" / "microservices-demo-workloads.yaml"
@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        reason = "chromium is not installed (scripts/install-system-deps.sh installs Debian's chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    where = os.environ.get("CILIA_ARTIFACTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        return Path(where)
    return tmp_path


# --------------------------------------------------------------------------- the page's data


def test_connectivity_data_is_the_matrix() -> None:
    analysis = analysis_of("story")
    conn = connectivity(analysis)
    data = connectivity_data(conn, analysis)
    n = len(conn.groups)
    assert [g["name"] for g in data["groups"]] == [g.name for g in conn.groups]
    width = (n + 7) // 8
    for b64, m in zip(data["rows"], conn.matrices, strict=True):
        raw = base64.b64decode(b64)
        assert [int.from_bytes(raw[s * width : (s + 1) * width], "little") for s in range(n)] == list(m.rows)
    # every cell's trace: app-a -> app-b is decided by the deny, on each class
    a = next(g.index for g in conn.groups if g.name == "deployment:default/app-a")
    b = next(g.index for g in conn.groups if g.name == "deployment:default/app-b")
    deciders = [data["strings"][cell[0]] for cell in data["traces"][f"{a},{b}"]]
    assert len(deciders) == len(conn.classes)
    deny = "denied by CiliumNetworkPolicy default/deny-app-a-to-app-b egressDeny[0]"
    assert all(deny in d for d in deciders)
    # no edge between two outside peers (world -> world: no policy of the cluster decides it)
    inside = [g.local or g.name == "host" for g in conn.groups]
    pairs = sum(
        1
        for s in range(n)
        for d in range(n)
        if (inside[s] or inside[d]) and any(m.allowed(s, d) for m in conn.matrices)
    )
    assert expected_view(data) == View(leaves=n, parents=1, edges=pairs, collapsed=False)


def test_page_is_self_contained() -> None:
    out = render_page(connectivity_data(connectivity(analysis_of("story"))))
    assert "default-src 'none'" in out  # the CSP: the page may fetch nothing
    assert not re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)=", out)
    assert "The Cytoscape Consortium" in out  # the vendored library, inlined with its licence header
    # a group name cannot end the data's <script> early
    assert "</script>" not in json.dumps(page_data(out))


def test_large_pages_start_with_namespaces_closed() -> None:
    count = (EXPAND_GROUPS // 20 + 1) * 20  # over the limit, a multiple of 20: the ring closes at ns-0
    groups = [{"name": f"ns-{i % 20}/p{i}", "ns": f"ns-{i % 20}", "kind": "pod"} for i in range(count)]
    n = len(groups)
    width = (n + 7) // 8
    rows = b"".join(((1 << ((s + 1) % n)) | (1 << s)).to_bytes(width, "little") for s in range(n))
    data = {"mode": "connectivity", "groups": groups, "rows": [base64.b64encode(rows).decode()]}
    view = expected_view(data)
    # 20 namespace nodes; a ring of groups: each namespace reaches itself and the next one
    assert view == View(leaves=20, parents=0, edges=40, collapsed=True)


def test_cli_html_outputs() -> None:
    rc, out, err = run_cli(["connectivity", *files_args("story"), "-o", "html"])
    assert (rc, err) == (0, "") and page_data(out)["mode"] == "connectivity"
    rc, out, err = run_cli([
        "diff", "-f", "examples/seed/app-a.yaml", "-f", "examples/seed/app-b.yaml",
        "--against", "examples/seed/app-a.yaml", "--against", "examples/seed/app-b.yaml",
        "--against", "examples/seed/deny-a-to-b-fixed.yaml", "-o", "html",
    ])  # fmt: skip
    assert (rc, err) == (1, "")
    data = page_data(out)
    closed = [c for c in data["changes"] if c["kind"] == "closed"]
    names = [g["name"] for g in data["groups"]]
    assert [(names[c["src"]], names[c["dst"]], c["ports"]) for c in closed] == [
        ("deployment:default/app-a", "deployment:default/app-b", "every port")
    ]
    assert "deny-app-a-to-app-b" in closed[0]["after"]


# --------------------------------------------------------------------------- in a browser


def _drawn(status: dict[str, str]) -> View:
    assert status["rendered"] == "1"
    counts = (int(status["leaves"]), int(status["parents"]), int(status["edges"]))
    return View(*counts, collapsed=status["collapsed"] == "true")


def _details(dom: str) -> str:
    found = re.search(r'<aside id="details">(.*?)</aside>', dom, re.S)
    assert found is not None
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found.group(1))).split())


def test_story_page_in_chromium(chromium: str, tmp_path: Path, artifacts: Path) -> None:
    analysis = analysis_of("story")
    conn = connectivity(analysis)
    data = connectivity_data(conn, analysis)
    page = tmp_path / "story.html"
    page.write_text(render_page(data), encoding="utf-8")
    f = next(g.index for g in conn.groups if g.name == "default/app-a-frontend")
    b = next(g.index for g in conn.groups if g.name == "deployment:default/app-b")
    # a click on the drawn edge app-b -> frontend shows its trace: the rule deciding each side
    dom = dump_dom(page, f"#tap=e{b}_{f}", png=artifacts / "connectivity-story.png")
    assert _drawn(status_of(dom)) == expected_view(data)
    shown = _details(dom)
    assert "deployment:default/app-b → default/app-a-frontend" in shown
    assert "80/TCP (80/TCP): allowed" in shown
    rule = "CiliumNetworkPolicy default/allow-frontend-to-app-b ingress[0]"
    assert f"ingress of default/app-a-frontend: allowed by {rule}" in shown
    assert "other (ports no policy names): denied" in shown


def test_diff_page_in_chromium(chromium: str, tmp_path: Path) -> None:
    d = diff(analysis_of("no-policy"), analysis_of("deny"))
    data = diff_data(d)
    page = tmp_path / "diff.html"
    page.write_text(render_page(data), encoding="utf-8")
    names = [g["name"] for g in data["groups"]]
    a, b = names.index("deployment:default/app-a"), names.index("deployment:default/app-b")
    dom = dump_dom(page, f"#tap=c{a}_{b}")  # a click on the closed edge
    view = _drawn(status_of(dom))
    assert view == expected_view(data)
    assert view.edges == len({(c.src, c.dst) for c in d.changes})
    shown = _details(dom)
    assert "closed every port" in shown and "deny-app-a-to-app-b" in shown


def test_microservices_demo_page_draws_every_workload(
    chromium: str, corpus: Path, tmp_path: Path, artifacts: Path
) -> None:
    analysis = analyse_paths(
        [corpus / "GoogleCloudPlatform__microservices-demo", DEMO_WORKLOADS], Options()
    )
    conn = connectivity(analysis)
    data = connectivity_data(conn, analysis)
    page = tmp_path / "demo.html"
    page.write_text(render_page(data), encoding="utf-8")
    drawn = _drawn(status_of(dump_dom(page, png=artifacts / "connectivity-microservices-demo.png")))
    assert drawn == expected_view(data)
    assert drawn.leaves == len(conn.groups) == 12 + 2  # the 12 services, world and host
