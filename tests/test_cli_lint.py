"""``cilia lint``: golden text/json for the tutorial's files and each scenario, exit codes."""

from __future__ import annotations

import json

import pytest

from tests.helpers_analyze import SCENARIOS, check_golden, files_args, run_cli

S = "examples/seed/"
TUTORIAL = [
    "-f",
    S + "app-a.yaml",
    "-f",
    S + "app-b.yaml",
    "-f",
    S + "deny-a-to-b.yaml",
    "-f",
    S + "allow-frontend-to-b.yaml",
]
CASES = {"tutorial": TUTORIAL, **{name: files_args(name) for name in SCENARIOS}}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lint_golden(name: str) -> None:
    rc, out, err = run_cli(["lint", *CASES[name]])
    assert err == ""
    check_golden("lint", f"{name}.txt", out)
    rc_json, out, _ = run_cli(["lint", *CASES[name], "-o", "json"])
    data = json.loads(out)
    assert rc == rc_json == (1 if data["findings"] else 0)
    check_golden("lint", f"{name}.json", out)


def test_tutorial_findings() -> None:
    _, out, _ = run_cli(["lint", *TUTORIAL, "-o", "json"])
    found = {(f["rule"], f["file"], f["line"]) for f in json.loads(out)["findings"]}
    assert found == {
        ("CL001", S + "deny-a-to-b.yaml", 10),
        ("CL011", S + "allow-frontend-to-b.yaml", 11),
        # No pod carries access=frontend until the tutorial relabels one at run time.
        ("CL003", S + "allow-frontend-to-b.yaml", 7),
    }


def test_lint_rules_listing_and_bad_input() -> None:
    rc, out, _ = run_cli(["lint", "--rules"])
    assert (
        rc == 0
        and out.splitlines()[0] == "CL001 error: field that Cilium does not have (e.g. deny:, fromPorts)"
    )
    assert len(out.splitlines()) == 18
    rc, out, err = run_cli(["lint", "-f", "no/such.yaml"])
    assert rc == 2 and out == "" and "no such file or directory" in err
