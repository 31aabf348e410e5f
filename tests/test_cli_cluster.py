"""``cilia node list`` output (golden files in tests/golden/node/; regenerate with
CILIA_UPDATE_GOLDEN=1 and review the diff) and its refusals, without a running cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cilia.cli.commands.cluster import render_nodes
from cilia.cli.main import app
from tests.helpers_analyze import check_golden

ROWS: list[dict[str, Any]] = [
    {"name": "node-0", "index": 0, "registered": True, "address": "198.18.254.1", "podCIDR": "198.18.0.0/20",
     "netns": "cilia-node-0", "agent": 4101, "ready": True, "endpoints": 4, "identities": 12,
     "controller": False},
    {"name": "node-1", "index": 1, "registered": True, "address": "198.18.254.2", "podCIDR": "198.18.16.0/20",
     "netns": "cilia-node-1", "agent": 4102, "ready": True, "endpoints": 3, "identities": 12,
     "controller": True},
    {"name": "node-2", "index": 2, "registered": False, "address": "198.18.254.3", "podCIDR": "",
     "netns": "cilia-node-2", "agent": 0, "ready": False, "endpoints": 0, "identities": 0,
     "controller": False},
]


def test_node_list_table_names_the_controller() -> None:
    text = render_nodes(ROWS)
    check_golden("node", "list.txt", text)
    controller = [ln.split()[0] for ln in text.splitlines()[1:] if ln.split()[-1] == "yes"]
    assert controller == ["node-1"]


def test_node_list_json() -> None:
    text = render_nodes(ROWS, "json")
    check_golden("node", "list.json", text)
    assert json.loads(text) == {"items": ROWS}


def test_node_list_refuses_an_unknown_format_and_a_single_node(tmp_path: Any) -> None:
    runner = CliRunner()
    env = {"CILIA_STATE_DIR": str(tmp_path / "s"), "CILIA_RUN_DIR": str(tmp_path / "r")}
    bad = runner.invoke(app, ["node", "list", "-o", "xml"], env=env)  # (-o yaml is -o json as YAML)
    assert bad.exit_code == 2 and "unknown output format 'xml'" in bad.output
    none = runner.invoke(app, ["node", "list"], env=env)
    assert none.exit_code == 1 and "no several-node lab here" in none.output


def test_down_after_a_node_failed_its_own_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose own ``cilia down`` failed left its pins: once its namespace is gone they are
    removed, the failure is reported, and the cluster's settings stay so that ``cilia down`` can be
    run again. (The lab's namespaces, etcd and agents are out of this test's reach without root:
    those calls are replaced; the pins and settings are real files.)"""
    from cilia.agent.config import AgentConfig
    from cilia.cli.commands import cluster

    base = AgentConfig.resolve(tmp_path / "state", tmp_path / "run", store="etcd", cluster_size=2,
                               etcd_endpoints="198.18.254.254:2379", pin_root=str(tmp_path / "pins" / "v1"))
    base.save()
    left = tmp_path / "pins" / "node-0" / "v1"
    left.mkdir(parents=True)
    (left / "cilia_policy").write_text("")
    failed = {"node-0": {"errors": ["down node-0: exit 1: timed out"]}, "node-1": {"removed": ["pod x"]}}
    monkeypatch.setattr(cluster, "_node_down", lambda m, purge: failed[m.node_name])
    monkeypatch.setattr(cluster.process, "stop", lambda m: None)
    monkeypatch.setattr(cluster.etcd_keeper, "stop", lambda d: None)
    monkeypatch.setattr(cluster.etcd_keeper, "read", lambda d: None)
    monkeypatch.setattr(cluster.nodes_lab, "remove_nodes", lambda: ["node namespace cilia-node-0"])
    monkeypatch.setattr(cluster.nodes_lab, "leftovers", lambda: [])
    monkeypatch.setattr(cluster.nodes_lab, "node_exists", lambda i: False)
    report = cluster.cluster_down(base)
    assert not left.exists()
    assert report["removed"] == ["pod x", "node namespace cilia-node-0",
                                 "pins of node-0 (its own down did not remove them)"]
    assert report["errors"] == ["down node-0: exit 1: timed out",
                                "the cluster's settings are kept: run `cilia down` again to retry"]
    assert report["leftovers"] == []
    assert AgentConfig.resolve(tmp_path / "state", tmp_path / "run").with_saved().cluster_size == 2
