"""``cilia connectivity``: golden table/json/csv per seed scenario."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.helpers_analyze import SCENARIOS, check_golden, files_args, run_cli
from tests.helpers_page import page_golden_text


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize(
    ("fmt", "ext"), [("table", "txt"), ("json", "json"), ("csv", "csv"), ("html", "page.json")]
)
def test_connectivity_golden(scenario: str, fmt: str, ext: str) -> None:
    rc, out, err = run_cli(["connectivity", *files_args(scenario), "-o", fmt])
    assert (rc, err) == (0, "")
    check_golden("connectivity", f"{scenario}.{ext}", page_golden_text(out) if fmt == "html" else out)


def test_formats_agree() -> None:
    _, js, _ = run_cli(["connectivity", *files_args("story"), "-o", "json"])
    _, cs, _ = run_cli(["connectivity", *files_args("story"), "-o", "csv"])
    data = json.loads(js)
    from_json = {
        (cls, src, dst) for cls, rows in data["allowed"].items() for src, dsts in rows.items() for dst in dsts
    }
    from_csv = {
        (r["port_class"], r["from"], r["to"])
        for r in csv.DictReader(io.StringIO(cs))
        if r["verdict"] == "allow"
    }
    assert from_json == from_csv
    assert data["allowed_pairs"] == {"80/TCP": 20, "other": 19}


def test_bad_input_exit_2() -> None:
    rc, out, err = run_cli(["connectivity", "-f", "examples/seed/deny-a-to-b.yaml"])
    assert rc == 2 and out == "" and "unknown field" in err
