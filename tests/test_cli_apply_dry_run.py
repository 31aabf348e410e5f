"""``cilia apply --dry-run`` / ``--diff`` against a real agent in this process (simulated datapath,
no root): the delta against the node's stored objects equals ``cilia diff`` of the same manifests;
--dry-run stores nothing, --diff stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_agent import SimAgent, running_agent

from tests.conftest import SEED
from tests.helpers_analyze import check_golden

APPS = ("-f", str(SEED / "app-a.yaml"), "-f", str(SEED / "app-b.yaml"))
DENY = ("-f", str(SEED / "deny-a-to-b-fixed.yaml"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimAgent]:
    with running_agent(tmp_path_factory.mktemp("node")) as n:
        yield n


def _policies(node: SimAgent) -> list[str]:
    from cilia.store import Kind

    return [r.key.name for r in node.node.store.list(Kind.CNP)]


def test_dry_run_on_an_empty_node_adds_workloads_and_stores_nothing(node: SimAgent) -> None:
    out = json.loads(node.cli("apply", "--dry-run", "-o", "json", *APPS))
    assert out["dry_run"] is True and out["revision"] == 0
    assert [o["action"] for o in out["objects"]] == ["created", "created"]
    delta = out["connectivity"]
    assert delta["groups_added"] == ["deployment:default/app-a", "deployment:default/app-b"]
    assert delta["changes"] == []
    from cilia.store import Kind

    assert node.node.store.list(Kind.DEPLOYMENTS) == []


def test_dry_run_then_diff(node: SimAgent, tmp_path: Path) -> None:
    node.cli("apply", *APPS)
    before = node.node.store.revision
    text = node.cli("apply", "--dry-run", *DENY)
    assert node.node.store.revision == before and _policies(node) == []
    # the delta against the node's objects is the one `cilia diff` gives for the same manifests
    lines = text.splitlines()
    assert lines[0] == "ciliumnetworkpolicy.cilium.io/deny-app-a-to-app-b created (dry run)"
    check_golden("diff", "no-policy-to-deny.text", "\n".join(lines[1:]) + "\n")
    text = node.cli("apply", "--diff", *DENY)
    assert "closed:\n  deployment:default/app-a -> deployment:default/app-b  every port" in text
    assert text.rstrip().endswith("ciliumnetworkpolicy.cilium.io/deny-app-a-to-app-b created")
    assert _policies(node) == ["deny-app-a-to-app-b"]
    # --diff -o json: the outcome with the delta under "connectivity" (here: nothing changes)
    out = json.loads(node.cli("apply", "--diff", "-o", "json", *DENY))
    assert out["revision"] > 0 and out["connectivity"]["changes"] == []
    # applied now: nothing left to change
    again = json.loads(node.cli("apply", "--dry-run", "-o", "json", *DENY))
    assert again["connectivity"]["changes"] == [] and again["objects"][0]["action"] == "unchanged"


def test_dry_run_of_invalid_manifests_fails_as_apply(node: SimAgent) -> None:
    node.cli("apply", "--dry-run", "-f", str(SEED / "deny-a-to-b.yaml"), code=1)
