"""``cilia connectivity`` marks the cells filtered at L7 (allowed at L4, each request decided by a
proxy) in every format; policies without L7 rules keep their output (the seed goldens)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers_analyze import check_golden, run_cli
from tests.helpers_page import page_golden_text
from tests.test_trace_l7 import MANIFESTS

FORMATS = [("table", "txt"), ("json", "json"), ("csv", "csv"), ("html", "page.json")]


@pytest.mark.parametrize(("fmt", "ext"), FORMATS)
def test_l7_cells_are_marked(tmp_path: Path, fmt: str, ext: str) -> None:
    f = tmp_path / "l7.yaml"
    f.write_text(MANIFESTS)
    rc, out, err = run_cli(["connectivity", "-f", str(f), "-o", fmt])
    assert (rc, err) == (0, "")
    check_golden("connectivity", f"l7.{ext}", page_golden_text(out) if fmt == "html" else out)
    if fmt == "json":
        data = json.loads(out)
        assert data["filtered_at_l7"] == {
            "80/TCP": {"deployment:default/client": ["deployment:default/web"]},
            "443/TCP": {"deployment:default/client": ["deployment:default/web"]},
        }
    if fmt == "csv":
        rows = [r.split(",") for r in out.splitlines()[1:]]
        l7 = {(r[0], r[1], r[3]) for r in rows if r[5] == "allow-l7"}
        assert l7 == {
            ("80/TCP", "deployment:default/client", "deployment:default/web"),
            ("443/TCP", "deployment:default/client", "deployment:default/web"),
        }
        # 8080 is allowed between the same pods without a proxy
        plain = ["8080/TCP", "deployment:default/client", "256", "deployment:default/web", "257", "allow"]
        assert plain in rows
