"""Live (root): a curl the kernel drops shows up in ``cilia observe --verdict DROPPED -o json`` naming
the deny rule, read from the running agent. Own node (index 11: 198.18.176.0/20), state/run
directories and bpffs pin directory, torn down in ``finally``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cilia.agent.config import AgentConfig
from tests.conftest import SEED

pytestmark = pytest.mark.root

NODE_INDEX = "11"


class Node:
    def __init__(self, base: Path) -> None:
        self.env = {
            **os.environ,
            "CILIA_STATE_DIR": str(base / "state"),
            "CILIA_RUN_DIR": str(base / "run"),
            "CILIA_PIN_ROOT": f"/sys/fs/bpf/cilia/test-obs-{uuid.uuid4().hex[:8]}",
        }
        self.cfg = AgentConfig.resolve(base / "state", base / "run")

    def cilia(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "cilia.cli.main", *args]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"cilia {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def pods(self) -> dict[str, dict[str, Any]]:
        items = json.loads(self.cilia("get", "pods", "-o", "json").stdout)["items"]
        return {i["metadata"]["name"]: i for i in items}


def _processes(needle: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if needle.encode() in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    try:
        n.cilia("up", "--node-index", NODE_INDEX)
        yield n
    finally:
        n.cilia("down", "--purge", check=False)
        for pid in _processes(str(n.cfg.state_dir)) + _processes(str(n.cfg.lab_run_dir)):
            os.kill(pid, signal.SIGKILL)  # only processes of this test's node
        assert not Path(n.env["CILIA_PIN_ROOT"]).exists()


def test_denied_curl_is_observed_naming_the_rule(node: Node) -> None:
    node.cilia("apply", "-f", str(SEED / "app-a.yaml"), "-f", str(SEED / "app-b.yaml"))
    node.cilia("apply", "--fix", "-f", str(SEED / "deny-a-to-b.yaml"))
    pods = node.pods()
    a = next(n for n in pods if n.startswith("app-a-"))
    b_ip = next(p["status"]["podIP"] for n, p in pods.items() if n.startswith("app-b-"))
    start = time.monotonic()
    curl = node.cilia("exec", a, "--", "curl", "-s", "--max-time", "2", f"http://{b_ip}:80", check=False)
    assert curl.returncode != 0  # dropped: curl times out
    out = node.cilia("observe", "--verdict", "DROPPED", "--from-pod", a, "-o", "json").stdout
    flows = [json.loads(line) for line in out.splitlines()]
    assert flows, "the drop was not observed"
    f = flows[0]
    assert (f["verdict"], f["drop_reason_desc"], f["traffic_direction"], f["IP"]["destination"],
            f["l4"]["TCP"]["destination_port"], f["source"]["pod_name"]) == (
        "DROPPED", "POLICY_DENY", "EGRESS", b_ip, 80, a)  # fmt: skip
    ((rule),) = {(r["kind"], r["namespace"], r["name"], r.get("rule", "")) for r in f["egress_denied_by"]}
    assert rule == ("CiliumNetworkPolicy", "default", "deny-app-a-to-app-b", "egressDeny[0]")
    seen_after = time.monotonic() - start
    print(f"drop observed {seen_after:.2f} s after the curl started (curl waits 2 s)")
