"""The node verbs through the real CLI (typer) against a real agent in this process: the agent's
reconcile loop and REST API over a unix socket, the SQLite store in a temporary state directory,
and the root-free datapath (``--datapath sim``: pods get addresses, the kernel lookup is simulated).

Output formats are compared exactly with golden files in tests/golden/get/ (regenerate with
CILIA_UPDATE_GOLDEN=1 and review the diff).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers_agent import SimAgent

from cilia.agent.config import AgentConfig
from cilia.cli.main import app
from tests.conftest import REPO, SEED

GOLDEN = REPO / "tests" / "golden" / "get"
UPDATE = os.environ.get("CILIA_UPDATE_GOLDEN") == "1"


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing (CILIA_UPDATE_GOLDEN=1 writes it)"
    assert text == path.read_text()


SimNode = SimAgent  # the shared harness (tests/helpers_agent.py)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimNode]:
    """A node with the seed story applied: app-a, app-b, the fixed deny, one frontend pod, the
    second policy, and the prod example."""
    n = SimNode(tmp_path_factory.mktemp("node"))
    n.start()
    try:
        n.cli("apply", "-f", str(SEED / "app-a.yaml"), "-f", str(SEED / "app-b.yaml"))
        n.cli("apply", "--fix", "-f", str(SEED / "deny-a-to-b.yaml"))
        n.cli("label", "pod", "app-a-flwmvdl9w9-96snb", "access=frontend")
        n.cli(
            "apply",
            "-f",
            str(SEED / "allow-frontend-to-b.yaml"),
            "-f",
            str(SEED / "prod-backend-to-database.yaml"),
        )
        services = n.base / "services.yaml"  # one dual-stack, one IPv6 Service (get svc -o wide)
        services.write_text(
            "apiVersion: v1\nkind: Service\nmetadata: {name: app-b, namespace: default}\n"
            "spec: {ipFamilyPolicy: PreferDualStack, selector: {app: app-b}, ports: [{port: 80}]}\n---\n"
            "apiVersion: v1\nkind: Service\nmetadata: {name: db6, namespace: prod}\n"
            "spec: {ipFamilies: [IPv6], selector: {app: database}, ports: [{port: 5432}]}\n")
        n.cli("apply", "-f", str(services))
        yield n
    finally:
        n.stop()


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("pods.txt", ["get", "pods"]),
        ("pods-wide.txt", ["get", "pods", "-o", "wide"]),
        ("pods-all.txt", ["get", "pods", "-A"]),
        ("pods.json", ["get", "pods", "-o", "json"]),
        ("pods.yaml", ["get", "pods", "-n", "prod", "-o", "yaml"]),
        ("deployments.txt", ["get", "deployments", "-A"]),
        ("cnp.txt", ["get", "cnp", "-A", "-o", "wide"]),
        ("cnp.yaml", ["get", "cnp", "deny", "-o", "yaml"]),
        ("endpoints.txt", ["get", "endpoints", "-A"]),
        ("endpoints-wide.txt", ["get", "endpoints", "-o", "wide"]),
        ("identities.txt", ["get", "identities"]),
        ("svc.txt", ["get", "svc", "-A"]),
        ("svc-wide.txt", ["get", "svc", "-A", "-o", "wide"]),
        ("svc-list.txt", ["svc", "list"]),
        ("identities.json", ["get", "identities", "-o", "json"]),
        ("describe-pod.txt", ["describe", "pod", "app-a-flwmvdl9w9-96"]),
        ("describe-cnp.txt", ["describe", "cnp", "allow-frontend-to-app-b"]),
    ],
)
def test_golden_output(story: SimNode, name: str, args: list[str]) -> None:
    golden(name, story.cli(*args))


def test_json_and_yaml_agree(story: SimNode) -> None:
    assert json.loads(story.cli("get", "pods", "-A", "-o", "json")) == yaml.safe_load(
        story.cli("get", "pods", "-A", "-o", "yaml")
    )


def test_identities_follow_labels(story: SimNode) -> None:
    ids = {i["id"]: i for i in json.loads(story.cli("get", "identities", "-o", "json"))["items"]}
    frontend = [i for i in ids.values() if "k8s:access=frontend" in i["labels"]]
    assert [i["endpoints"] for i in frontend] == [["default/app-a-flwmvdl9w9-96snb"]]


def test_errors(story: SimNode) -> None:
    res = story.runner.invoke(app, ["get", "gadgets", "--state-dir", str(story.cfg.state_dir)])
    assert res.exit_code == 2 and 'doesn\'t have a resource type "gadgets"' in res.output
    res = story.runner.invoke(app, ["describe", "pod", "app-", "--state-dir", str(story.cfg.state_dir)])
    assert res.exit_code == 1 and "ambiguous" in res.output
    res = story.runner.invoke(
        app, ["label", "pod", "app-b-27g9r8vthz-7wk8v", "app=x", "--state-dir", str(story.cfg.state_dir)]
    )
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = story.runner.invoke(
        app, ["exec", "--state-dir", str(story.cfg.state_dir), "app-b-27g9r8vthz-7wk8v", "--", "true"]
    )
    assert res.exit_code == 1 and "--datapath sim" in res.output


def test_events_are_listed(story: SimNode) -> None:
    out = story.cli("get", "events")
    assert "Relabelled" in out and "PolicyApplied" in out and "Started" in out


def test_up_down_of_a_background_sim_node(tmp_path: Path) -> None:
    """`cilia up` starts the agent as a background process (own session), `down` stops it and
    leaves no socket, pid file or process; no root needed with the simulated datapath."""
    import subprocess
    import sys

    from cilia.agent import process

    env = {**os.environ, "CILIA_STATE_DIR": str(tmp_path / "s"), "CILIA_RUN_DIR": str(tmp_path / "r")}

    def cilia(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cilia.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert cilia("up", "--datapath", "sim", "--tofqdns-min-ttl", "-1").returncode == 2
    up = cilia("up", "--datapath", "sim", "--node-index", "9", "--tofqdns-min-ttl", "30", "-o", "json")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    cfg = AgentConfig.resolve(tmp_path / "s", tmp_path / "r").with_saved()
    try:
        assert process.read_pid(cfg) == info["pid"] and info["status"]["ready"]
        assert (cfg.node_index, cfg.datapath, cfg.tofqdns_min_ttl) == (9, "sim", 30)
        argv = Path(f"/proc/{info['pid']}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--tofqdns-min-ttl") + 1] == b"30"  # the agent runs with it
        assert json.loads(cilia("up", "-o", "json").stdout)["already_running"] is True
        assert cilia("apply", "-f", str(SEED / "app-b.yaml")).returncode == 0
        pods = json.loads(cilia("get", "pods", "-o", "json").stdout)["items"]
        assert sorted(p["status"]["podIP"] for p in pods) == ["198.18.144.2", "198.18.144.3"]
    finally:
        down = cilia("down", "--purge", "-o", "json")
    report = json.loads(down.stdout)
    assert down.returncode == 0 and report["leftovers"] == [] and report["stopped_pid"] == info["pid"]
    assert not cfg.socket_path.exists() and not cfg.pid_path.exists()
    assert not Path(f"/proc/{info['pid']}").exists() or process._zombie(info["pid"])
    assert cilia("status").returncode == 1


def test_events_as_kubernetes_objects(story: SimNode) -> None:
    items = json.loads(story.cli("get", "events", "-o", "json"))["items"]
    relabel = [i for i in items if i["reason"] == "Relabelled"]
    assert [
        {k: v for k, v in i.items() if not k.endswith("Timestamp")} for i in relabel
    ] == [
        {
            "apiVersion": "v1", "kind": "Event", "type": "Normal", "reason": "Relabelled",
            "message": "identity 256 → 258", "count": 1, "source": {"component": "cilia-agent"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "app-a-flwmvdl9w9-96snb"},
        }
    ]


def test_endpoints_under_node_audit_mode(story: SimNode) -> None:
    """As ``cilium endpoint list``: enforced directions read ``Disabled (Audit)`` while the node is
    in policy audit mode; describe says drops are reported, not made; back to Enabled after."""
    story.cli("audit", "on")
    try:
        golden("endpoints-audit.txt", story.cli("get", "endpoints", "-A"))
        assert "(audit mode: drops are reported as AUDIT, not made)" in story.cli(
            "describe", "pod", "app-a-flwmvdl9w9-96"
        )
    finally:
        story.cli("audit", "off")
    assert "Audit" not in story.cli("get", "endpoints", "-A")


def test_describe_an_audited_policy(story: SimNode, tmp_path: Path) -> None:
    """A policy annotated ``cilia.io/audit: "true"``: describe says so and lists the pods it
    selects, marked audit mode (the agent audits, never enforces, it)."""
    doc = tmp_path / "audited.yaml"
    doc.write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
        "metadata:\n  name: audited-app-b\n  annotations:\n    cilia.io/audit: \"true\"\n"
        "spec:\n  endpointSelector:\n    matchLabels:\n      app: app-b\n  ingress:\n  - {}\n"
    )
    story.cli("apply", "-f", str(doc))
    try:
        golden("describe-cnp-audited.txt", story.cli("describe", "cnp", "audited-app-b"))
    finally:
        story.cli("delete", "-f", str(doc))
