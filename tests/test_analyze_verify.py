"""Expectations files: loading with positions, and the seed story's expectations as a library call."""

from __future__ import annotations

from pathlib import Path

import pytest

from cilia.analyze.verify import Expectation, PlacedExpectation, load_expectations, verify
from cilia.k8s.errors import Error
from tests.conftest import SEED
from tests.helpers_analyze import analysis_of


def test_load_positions_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(
        "# comment\nexpectations:\n- from: default/a\n  to: entity:world\n  port: 53\n  protocol: udp\n"
        "  expect: allow\n- {from: x/y, to: 198.19.0.1, port: 8, protocol: ICMP, expect: deny}\n"
        "- {from: x/y, to: x/z, port: 80, expect: deny}\n"
    )
    placed = load_expectations(path)
    assert [(p.line, p.index, p.describe()) for p in placed] == [
        (3, 0, "default/a -> entity:world 53/UDP expect allow"),
        (8, 1, "x/y -> 198.19.0.1 8/ICMP expect deny"),
        (9, 2, "x/y -> x/z 80/TCP expect deny"),
    ]
    assert placed[2].expectation == Expectation.model_validate(
        {"from": "x/y", "to": "x/z", "port": 80, "expect": "deny"}
    )


@pytest.mark.parametrize(
    ("content", "where", "message"),
    [
        (
            "expectations:\n- {from: a/b, to: c/d, port: 80, expect: allow, extra: 1}\n",
            (2, 49),
            "Extra inputs are not permitted",
        ),
        ("expectations:\n- {from: a/b, to: c/d, port: 70000, expect: allow}\n", (2, 3), "must be 1..65535"),
        (
            "expectations:\n- {from: a/b, to: c/d, port: 80, protocol: GRE, expect: allow}\n",
            (2, 3),
            "unknown protocol 'GRE'",
        ),
    ],
)
def test_load_errors(tmp_path: Path, content: str, where: tuple[int, int], message: str) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(content)
    with pytest.raises(Error) as info:
        load_expectations(path)
    assert (info.value.line, info.value.column) == where and message in info.value.message


def test_story_expectations_hold() -> None:
    report = verify(analysis_of("story"), load_expectations(SEED / "expectations.yaml"))
    assert (report.passed, report.failed) == (11, 0)
    assert all(r.actual == r.placed.expectation.expect for r in report.results)


def test_tutorial_claim_fails_with_the_deny_as_reason() -> None:
    report = verify(analysis_of("story"), load_expectations(SEED / "expectations-tutorial-claims.yaml"))
    assert (report.passed, report.failed) == (1, 1)
    failed = report.results[1]
    assert failed.actual == "deny" and not failed.passed
    assert {f.decided_by.rules[0].name for f in failed.trace.flows if f.decided_by} == {"deny-app-a-to-app-b"}
    assert failed.to_dict()["trace"]["allowed"] is False


def test_placed_expectation_port_spec() -> None:
    e = Expectation.model_validate(
        {"from": "a/b", "to": "c/d", "port": 128, "protocol": "ICMPv6", "expect": "deny"}
    )
    assert str(PlacedExpectation(e, "f", 1, 0).port_spec) == "128/ICMPv6"
