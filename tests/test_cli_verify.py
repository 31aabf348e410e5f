"""``cilia verify``: the seed story's expectations pass, the tutorial's claims fail with a trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers_analyze import check_golden, files_args, run_cli

E = "examples/seed/"
CASES = [
    # (golden name, scenario, expectations file, exit code)
    ("story", "story", E + "expectations.yaml", 0),
    ("intended", "intended", E + "expectations-intended.yaml", 0),
    ("tutorial-claims", "story", E + "expectations-tutorial-claims.yaml", 1),
    # The corrected story's expectations do not hold for the tutorial's intended files: 4 mismatches.
    ("story-vs-intended", "intended", E + "expectations.yaml", 1),
]


@pytest.mark.parametrize(("name", "scenario", "expect", "code"), CASES)
def test_verify_golden(name: str, scenario: str, expect: str, code: int) -> None:
    args = ["verify", *files_args(scenario), "--expect", expect]
    rc, out, err = run_cli(args)
    assert (rc, err) == (code, "")
    check_golden("verify", f"{name}.txt", out)
    rc, out, err = run_cli([*args, "-o", "json"])
    assert (rc, err) == (code, "")
    data = json.loads(out)
    assert (data["failed"] == 0) is (code == 0)
    assert data["passed"] + data["failed"] == len(data["results"])
    check_golden("verify", f"{name}.json", out)


def test_story_json_summary() -> None:
    _, out, _ = run_cli(["verify", *files_args("story"), "--expect", E + "expectations.yaml", "-o", "json"])
    assert (json.loads(out)["passed"], json.loads(out)["failed"]) == (11, 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "expectations:\n- {from: default/app-a-frontend, to: entity:host, port: 80, expect: maybe}\n",
            "x.yaml:2:61: expectations[0].expect: Input should be 'allow' or 'deny'",
        ),
        (
            "expectations:\n- {from: a, to: b, port: 80, expect: allow}\n"
            "- {from: entity:nope, to: b, port: 1, expect: deny}\n",
            "x.yaml:3:3: expectations[1]: unknown entity 'nope'",
        ),
        (
            "expectations:\n- {from: default/nope, to: entity:host, port: 80, expect: allow}\n",
            "x.yaml:2: no pod default/nope",
        ),
        ("nothing: here\n", "expectations"),
        ("expectations: [\n", "invalid YAML"),
    ],
)
def test_bad_expectations_exit_2(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(content)
    rc, out, err = run_cli(["verify", *files_args("story"), "--expect", str(path)])
    assert rc == 2 and out == ""
    assert message in err.replace(str(tmp_path) + "/", "")
