"""The offline commands with Nodes and host policies: trace (golden text and json), verify, lint, and
--enable-node-selector-labels on each of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers_analyze import check_golden, run_cli

N = "tests/inputs/nodes/"
CLUSTER = ["-f", N + "cluster.yaml", "-f", N + "host-policy.yaml"]
FROM_NODES = ["-f", N + "from-nodes.yaml", "--enable-node-selector-labels"]


@pytest.mark.parametrize(
    ("name", "src", "dst", "port", "code"),
    [
        ("world-to-node", "entity:world", "node:node-a", "80/TCP", 1),
        ("world-to-hostnet-pod", "entity:world", "kube-system/sshd", "22/TCP", 0),
        ("node-to-remote-pod", "node:node-a", "default/web", "80/TCP", 0),
    ],
)
def test_trace_nodes_golden(name: str, src: str, dst: str, port: str, code: int) -> None:
    args = ["trace", *CLUSTER, *FROM_NODES, "--from", src, "--to", dst, "--port", port, "--no-state"]
    rc, out, _ = run_cli(args)
    assert rc == code
    check_golden("trace", f"nodes-{name}.txt", out)
    rc, out, _ = run_cli([*args, "-o", "json"])
    assert rc == code
    check_golden("trace", f"nodes-{name}.json", out)


def test_verify_with_nodes_and_the_flag() -> None:
    expect = ["--expect", N + "expect.yaml", "--no-state"]
    rc, out, _ = run_cli(["verify", *CLUSTER, *FROM_NODES, *expect])
    assert rc == 0 and out.endswith("8 passed, 0 failed\n")
    # without the flag, fromNodes is refused as Cilium refuses it: bad input
    rc, _, err = run_cli(["verify", *CLUSTER, "-f", N + "from-nodes.yaml", *expect])
    assert rc == 2 and '"enable-node-selector-labels" flag is set' in err


def test_connectivity_decides_the_host_row_by_its_host_policy() -> None:
    rc, out, _ = run_cli(["connectivity", *CLUSTER, "-o", "json"])
    assert rc == 0
    data = json.loads(out)
    host = next(g for g in data["groups"] if g["name"] == "host")
    assert host["kind"] == "node"  # host policies decide for it


def test_lint_nodeselector_that_selects_no_node() -> None:
    policy = N + "by-os.yaml"
    rc, out, _ = run_cli(["lint", "-f", N + "cluster.yaml", "-f", policy, "--no-config"])
    assert rc == 1
    assert "CL017 warning" in out and "only through kubernetes.io/os" in out
    rc, out, _ = run_cli(["lint", "-f", N + "cluster.yaml", *FROM_NODES, "--no-config"])
    assert rc == 0, out


def test_lint_from_nodes_that_selects_no_node(tmp_path: Path) -> None:
    text = (REPO / N / "from-nodes.yaml").read_text().replace("control-plane", "master")
    (tmp_path / "p.yaml").write_text(text)
    rc, out, _ = run_cli(["lint", "-f", N + "cluster.yaml", "-f", str(tmp_path / "p.yaml"), *FROM_NODES[2:],
                          "--no-config"])
    assert rc == 1 and "CL018 warning" in out and "field: spec.ingress[0].fromNodes[0]" in out


def test_diff_takes_the_flag_too() -> None:
    args = ["diff", "-f", N + "cluster.yaml", "--against", N + "cluster.yaml"]
    args += ["--against", N + "from-nodes.yaml"]
    rc, out, _ = run_cli([*args, "--enable-node-selector-labels"])
    assert rc == 1 and "world -> default/web  every port" in out  # closed: exit 1 (--fail-on)
    rc, _, err = run_cli(args)
    assert rc == 2 and "enable-node-selector-labels" in err


def test_node_option_on_the_analysis_commands() -> None:
    on_a = [*CLUSTER, "--node", "node-a"]
    rc, out, _ = run_cli(["trace", *on_a, "--from", "entity:world", "--to", "entity:host", "--port", "80",
                          "--no-state"])
    assert rc == 1 and "ingress host: DENIED" in out
    rc, out, _ = run_cli(["connectivity", *on_a, "--to", "entity:host", "--port", "80", "-o", "json"])
    allowed = json.loads(out)["allowed"]["other"]
    assert rc == 0 and allowed["world"] == [] and allowed["default/client"] == ["host"]  # node-a's policy
    rc, _, err = run_cli(["connectivity", *CLUSTER, "--to", "entity:host", "--port", "80"])
    assert rc == 2 and "several Nodes" in err
    rc, _, err = run_cli(["trace", *CLUSTER, "--node", "node-x", "--from", "entity:world", "--to",
                          "entity:host", "--port", "80", "--no-state"])
    assert rc == 2 and "no such Node" in err
