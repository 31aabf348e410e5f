"""End to end on this machine (root): a real agent (``cilia up``), real pods (network namespaces),
real curl through the kernel's eBPF datapath, and ``cilia down`` leaving nothing behind.

Every test brings up its own node on a private state/run directory, a private bpffs pin directory
and its own pod range (node index 7: 198.18.112.0/20), and tears it down in ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers_world
import pytest
from helpers_world import _links, _processes

from cilia.agent.client import AgentClient
from cilia.lab import netns
from tests.conftest import SEED

pytestmark = pytest.mark.root

NODE_INDEX = "7"
CURL = ["curl", "-s", "--max-time", "2"]


class LiveNode(helpers_world.LiveNode):
    """A node run through the CLI, as a user would (tests/helpers_world.py), on node index 7; curl
    here reports its exit code (0 answered, 28 timed out: dropped)."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, int(NODE_INDEX))

    def up(self) -> None:
        self.cilia("up", "--node-index", NODE_INDEX)

    def pods(self, namespace: str = "default") -> dict[str, dict[str, Any]]:
        items = json.loads(self.cilia("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        return {i["metadata"]["name"]: i for i in items}

    def curl(self, src: str, ip: str, port: int = 80) -> int:
        url = f"http://{ip}:{port}"
        return self.cilia("exec", src, "--", *CURL, url, check=False).returncode

    def agent_pid(self) -> int:
        return int(json.loads(self.cilia("status", "-o", "json").stdout)["pid"])


def assert_nothing_left(node: LiveNode, created_netns: set[str], created_links: set[str]) -> None:
    assert created_netns.isdisjoint(netns.names()), "network namespaces left behind"
    assert created_links.isdisjoint(_links()), "links left behind"
    assert not node.pin_root.exists(), f"pins left behind under {node.pin_root}"
    assert not node.cfg.socket_path.exists(), "socket left behind"
    assert _processes(str(node.cfg.state_dir)) == [], "agent process left behind"
    assert _processes(str(node.cfg.lab_run_dir)) == [], "workload daemon left behind"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LiveNode]:
    n = LiveNode(tmp_path)
    try:
        n.up()
        yield n
    finally:
        created = n.created()
        n.cilia("down", "--purge", check=False)
        for pid in _processes(str(n.cfg.state_dir)) + _processes(str(n.cfg.lab_run_dir)):
            os.kill(pid, signal.SIGKILL)  # only processes of this test's node
        assert_nothing_left(n, *created)


def _split(names: dict[str, str], prefix: str) -> list[str]:
    return sorted(n for n in names if n.startswith(prefix))


def test_seed_story_through_the_kernel(node: LiveNode) -> None:
    node.cilia("apply", "-f", str(SEED / "app-a.yaml"), "-f", str(SEED / "app-b.yaml"))
    ips = node.ips()
    a0, a1 = _split(ips, "app-a-")
    b0, _ = _split(ips, "app-b-")
    assert all(ip.startswith("198.18.112.") for ip in ips.values()), (ips, node.cilia("get", "events").stdout)
    assert node.curl(a0, ips[b0]) == 0

    broken = node.cilia("apply", "-f", str(SEED / "deny-a-to-b.yaml"), check=False)
    assert broken.returncode == 1 and 'unknown field "spec.deny"' in broken.stderr
    node.cilia("apply", "--fix", "-f", str(SEED / "deny-a-to-b.yaml"))
    assert node.curl(a0, ips[b0]) == 28  # timed out: the kernel dropped the SYN
    flows = AgentClient(node.cfg.socket_path).flows(0, 100000)["flows"]
    drop = [f for f in flows if f["verdict"] == "DROPPED"][-1]
    assert (
        drop["drop_reason_desc"],
        drop["traffic_direction"],
        drop["policy_match_type"],
        drop["source"]["pod_name"],
        drop["destination"]["pod_name"],
        drop["l4"]["TCP"]["destination_port"],
    ) == ("POLICY_DENY", "EGRESS", 1, a0, b0, 80)  # 1 = L3-Only
    assert [(r["kind"], r["namespace"], r["name"], r.get("rule", "")) for r in drop["egress_denied_by"]] == [
        ("CiliumNetworkPolicy", "default", "deny-app-a-to-app-b", "egressDeny[0]")
    ]
    assert node.curl(b0, ips[a0]) == 0

    node.cilia("label", "pod", a0, "access=frontend")
    node.cilia("apply", "-f", str(SEED / "allow-frontend-to-b.yaml"))
    assert node.curl(b0, ips[a0]) == 0  # app-b -> frontend:80, what the policy really allows
    assert node.curl(a1, ips[a0]) == 28  # other ingress into the frontend pod: default deny
    assert node.curl(a0, ips[b0]) == 28  # the tutorial's claim: a deny always wins

    node.cilia("delete", "cnp", "deny-app-a-to-app-b")
    node.cilia("apply", "-f", str(SEED / "allow-frontend-egress-to-b.yaml"))
    assert node.curl(a0, ips[b0]) == 0
    assert node.curl(a0, ips[b0], 8080) == 28  # dropped (egress default deny), not refused (7)

    flows = node.cilia("exec", a0, "--", "true")  # exec passes exit codes through
    assert flows.returncode == 0
    assert node.cilia("exec", a0, "--", "sh", "-c", "exit 3", check=False).returncode == 3
    logs = node.cilia("logs", b0).stdout
    assert '"GET / HTTP/1.1" 200' in logs


def _probe(ns_name: str, ip: str, port: int, want_open: bool, limit: float = 5.0) -> float:
    """Seconds until a TCP connect from ``ns_name`` to ip:port succeeds (or, with ``want_open``
    False, first fails), probing every few milliseconds; inf if not within ``limit``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        with netns.entered(ns_name):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.02)
        try:
            s.connect((ip, port))
            opened = True
        except OSError:
            opened = False
        finally:
            s.close()
        if opened == want_open:
            return time.monotonic() - t0
    return float("inf")


def test_label_change_is_enforced_quickly(node: LiveNode) -> None:
    node.cilia("apply", "-f", str(SEED / "app-a.yaml"), "-f", str(SEED / "allow-frontend-to-b.yaml"))
    pods = node.pods()
    a0, a1 = sorted(pods)
    src_ns = pods[a1]["status"]["cilia"]["netns"]
    dst = pods[a0]["status"]["podIP"]
    results = {}
    for wait in ("--wait", "--no-wait"):
        node.cilia("label", "pod", a0, "access=frontend", "--overwrite")
        assert _probe(src_ns, dst, 80, want_open=False) < 5  # a1 -> frontend pod: denied now
        t0 = time.monotonic()
        node.cilia("label", "pod", a0, "access-", wait)
        command = time.monotonic() - t0
        took = _probe(src_ns, dst, 80, want_open=True)
        assert took < 5, "the label change was never enforced"
        results[wait] = (took * 1000, command * 1000)
    print(
        "\nlabel change → new verdict enforced: "
        + "; ".join(
            f"{w}: {r[0]:.1f} ms after `cilia label` returned (the command took {r[1]:.0f} ms)"
            for w, r in results.items()
        )
    )


def test_broken_apply_changes_nothing_on_a_live_node(node: LiveNode, tmp_path: Path) -> None:
    node.cilia("apply", "-f", str(SEED / "app-b.yaml"))
    before = (
        node.pods(),
        json.loads(node.cilia("status", "-o", "json").stdout)["revision"],
        set(netns.names()),
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text((SEED / "app-a.yaml").read_text() + "---\n" + (SEED / "deny-a-to-b.yaml").read_text())
    proc = node.cilia("apply", "-f", str(broken), check=False)
    assert proc.returncode == 1 and "nothing was applied" in proc.stderr
    time.sleep(0.3)
    after = (
        node.pods(),
        json.loads(node.cilia("status", "-o", "json").stdout)["revision"],
        set(netns.names()),
    )
    assert after[0].keys() == before[0].keys() and after[1] == before[1]
    assert not any("app-a" in n for n in after[2] - before[2])


def test_sigkill_keeps_enforcing_and_up_recovers(node: LiveNode) -> None:
    node.cilia(
        "apply",
        "-f",
        str(SEED / "app-a.yaml"),
        "-f",
        str(SEED / "app-b.yaml"),
        "-f",
        str(SEED / "deny-a-to-b-fixed.yaml"),
    )
    ips = node.ips()
    a0, _ = _split(ips, "app-a-")
    b0, _ = _split(ips, "app-b-")
    endpoints = json.loads(node.cilia("get", "endpoints", "-o", "json").stdout)["items"]
    identities = json.loads(node.cilia("get", "identities", "-o", "json").stdout)["items"]
    inodes = {e["netns"]: os.stat(netns.path_of(e["netns"])).st_ino for e in endpoints}
    os.kill(node.agent_pid(), signal.SIGKILL)
    time.sleep(0.2)
    assert node.cilia("status", check=False).returncode == 1
    # No agent: the pinned maps and attached programs keep enforcing.
    assert node.curl(a0, ips[b0]) == 28
    assert node.curl(b0, ips[a0]) == 0
    node.up()
    again = json.loads(node.cilia("get", "endpoints", "-o", "json").stdout)["items"]
    keep = ("id", "pod", "ip", "identity", "ifindex", "netns")
    assert [{k: e[k] for k in keep} for e in again] == [{k: e[k] for k in keep} for e in endpoints]
    assert json.loads(node.cilia("get", "identities", "-o", "json").stdout)["items"] == identities
    assert {n: os.stat(netns.path_of(n)).st_ino for n in inodes} == inodes  # not recreated
    assert node.curl(a0, ips[b0]) == 28 and node.curl(b0, ips[a0]) == 0
    node.cilia("delete", "cnp", "deny-app-a-to-app-b")  # and the recovered node keeps reconciling
    assert node.curl(a0, ips[b0]) == 0


def test_down_removes_everything(tmp_path: Path) -> None:
    n = LiveNode(tmp_path)
    n.up()
    try:
        n.cilia("apply", "-f", str(SEED / "prod-backend-to-database.yaml"))
        created_netns, created_links = n.created()
        names = sorted(n.pods("prod"))
        assert len(created_netns) == 3 and created_netns <= set(netns.names())
        assert n.pin_root.exists() and n.cfg.socket_path.exists()
        out = n.cilia("down", "-o", "json")
        report = json.loads(out.stdout)
        assert report["leftovers"] == [] and report["errors"] == []
        assert_nothing_left(n, created_netns, created_links)
        # The desired state survives `down` (without --purge): `up` brings the same pods back.
        n.up()
        pods = n.pods("prod")
        assert sorted(pods) == names and {p["status"]["phase"] for p in pods.values()} == {"Running"}
    finally:
        created = n.created()
        n.cilia("down", "--purge", check=False)
        assert_nothing_left(n, *created)


def test_a_pod_removed_behind_the_agents_back_comes_back(node: LiveNode) -> None:
    node.cilia("apply", "-f", str(SEED / "app-b.yaml"))
    pods = node.pods()
    victim = sorted(pods)[0]
    ns_name = pods[victim]["status"]["cilia"]["netns"]
    subprocess.run(["ip", "netns", "del", ns_name], check=True)  # also takes the veth pair with it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1)
        if ns_name in netns.names():
            break
    assert ns_name in netns.names(), "the agent did not recreate the pod"
    time.sleep(0.5)
    ip = node.ips()[victim]
    other = sorted(pods)[1]
    assert node.curl(other, ip) == 0
    events = node.cilia("get", "events").stdout
    assert "PodVanished" in events
