"""``cilia diff``: golden files for every format on the seed's story, exit codes, --fail-on, --git."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers_analyze import SCENARIOS, check_golden, run_cli
from tests.helpers_page import page_golden_text

A_TO_B = ("deployment:default/app-a", "deployment:default/app-b")


def _diff_args(old: str, new: str) -> list[str]:
    return [
        "diff",
        *(a for f in SCENARIOS[old] for a in ("-f", f)),
        *(a for f in SCENARIOS[new] for a in ("--against", f)),
    ]


@pytest.mark.parametrize("fmt", ["text", "json", "md", "csv", "dot", "mermaid"])
def test_apps_only_against_the_fixed_deny_golden(fmt: str) -> None:
    rc, out, err = run_cli([*_diff_args("no-policy", "deny"), "-o", fmt])
    assert (rc, err) == (1, "")
    check_golden("diff", f"no-policy-to-deny.{fmt}", out)


def test_html_golden() -> None:
    """-o html: the page's data (the page itself is checked in a browser: tests/test_graphpage.py)."""
    rc, out, err = run_cli([*_diff_args("no-policy", "deny"), "-o", "html"])
    assert (rc, err) == (1, "")
    check_golden("diff", "no-policy-to-deny.page.json", page_golden_text(out))


def test_story_to_intended_golden() -> None:
    rc, out, err = run_cli([*_diff_args("story", "intended"), "-o", "text"])
    assert (rc, err) == (1, "")
    check_golden("diff", "story-to-intended.text", out)


def test_the_deny_closes_exactly_app_a_to_app_b_and_is_named() -> None:
    _, out, _ = run_cli([*_diff_args("no-policy", "deny"), "-o", "json"])
    data = json.loads(out)
    closed = [c for c in data["changes"] if c["change"] == "closed"]
    # one port class (no policy names a port): app-a -> app-b on every port, and nothing else
    assert data["port_classes"] == ["other"]
    assert [(c["from"], c["to"], c["ports"]) for c in closed] == [
        ("deployment:default/app-a", "deployment:default/app-b", "every port")
    ]
    assert "denied by CiliumNetworkPolicy default/deny-app-a-to-app-b egressDeny[0]" in closed[0]["after"]
    assert not [c for c in data["changes"] if c["change"] == "opened"]
    # the other direction opens the same flow, the deny now in "before"
    _, back, _ = run_cli([*_diff_args("deny", "no-policy"), "-o", "json"])
    opened = [c for c in json.loads(back)["changes"] if c["change"] == "opened"]
    assert [(c["from"], c["to"]) for c in opened] == [A_TO_B]
    assert "deny-app-a-to-app-b" in opened[0]["before"]


def test_formats_agree() -> None:
    _, js, _ = run_cli([*_diff_args("story", "intended"), "-o", "json"])
    _, cs, _ = run_cli([*_diff_args("story", "intended"), "-o", "csv"])
    from_json = {(c["change"], c["from"], c["to"], c["port_class"]) for c in json.loads(js)["changes"]}
    from_csv = {
        (r["change"], r["from"], r["to"], r["port_class"])
        for r in csv.DictReader(io.StringIO(cs))
        if r["change"] in ("opened", "closed", "rule-changed")
    }
    assert from_json == from_csv and len(from_json) > 10


def test_exit_codes_and_fail_on() -> None:
    same = ["diff", "-f", SCENARIOS["deny"][0], "--against", SCENARIOS["deny"][0]]
    rc, out, _ = run_cli(same)
    assert rc == 0 and out.startswith("0 opened, 0 closed")
    closing = _diff_args("no-policy", "deny")
    assert run_cli([*closing, "--fail-on", "closed"])[0] == 1
    assert run_cli([*closing, "--fail-on", "opened"])[0] == 0
    assert run_cli([*closing, "--fail-on", "any"])[0] == 1
    opening = _diff_args("deny", "no-policy")
    assert run_cli([*opening, "--fail-on", "opened"])[0] == 1
    assert run_cli([*opening, "--fail-on", "closed"])[0] == 0


def test_workloads_added() -> None:
    rc, out, _ = run_cli([*_diff_args("deny", "story"), "-o", "json"])
    data = json.loads(out)
    assert rc == 1
    assert data["groups_added"] == data["pods_added"] == ["default/app-a-frontend"]
    assert data["groups_removed"] == [] and data["pods_removed"] == []


def test_bad_input_exit_2() -> None:
    bad = "examples/seed/deny-a-to-b.yaml"
    rc, out, err = run_cli(["diff", "-f", bad, "--against", SCENARIOS["deny"][0]])
    assert rc == 2 and out == "" and "unknown field" in err
    rc, _, err = run_cli(["diff", "-f", SCENARIOS["deny"][0]])
    assert rc == 2 and "--against" in err
    rc, _, err = run_cli(["diff", "--git", "HEAD", "--", "examples/seed"])
    assert rc == 2 and "REV1..REV2" in err


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_revisions(tmp_path: Path) -> None:
    """Two commits of a repository: the apps, then the apps with the fixed deny (no checkout)."""
    repo = tmp_path / "repo"
    (repo / "policies").mkdir(parents=True)

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    for name in ("app-a.yaml", "app-b.yaml"):
        shutil.copy(REPO / "examples/seed" / name, repo / "policies" / name)
    (repo / "README").write_text("not a manifest\n")
    git("add", ".")
    git("commit", "-q", "-m", "apps")
    shutil.copy(REPO / "examples/seed/deny-a-to-b-fixed.yaml", repo / "policies/deny.yaml")
    git("add", ".")
    git("commit", "-q", "-m", "deny")
    args = ["diff", "--repo", str(repo), "--git", "HEAD~1..HEAD", "-o", "json", "--", "policies"]
    rc, out, err = run_cli(args)
    assert (rc, err) == (1, "")
    closed = [c for c in json.loads(out)["changes"] if c["change"] == "closed"]
    assert [(c["from"], c["to"]) for c in closed] == [A_TO_B]
    # A...B: from the merge base, as a pull request compares (main...HEAD on a branch)
    git("branch", "base", "HEAD~1")
    three_dots = ["diff", "--repo", str(repo), "--git", "base...main", "-o", "json", "--", "policies"]
    rc, out, _ = run_cli(three_dots)
    assert rc == 1 and [c["change"] for c in json.loads(out)["changes"]].count("closed") == 1
    rc, out, _ = run_cli(["diff", "--repo", str(repo), "--git", "HEAD..HEAD", "--", "policies"])
    assert rc == 0
    rc, _, err = run_cli(["diff", "--repo", str(repo), "--git", "HEAD~1..nope", "--", "policies"])
    assert rc == 2 and "nope" in err
