"""A live node for the world / CIDR / Services tests: run through the CLI as a user would, on a
private state dir, run dir, pin directory and pod range (node index 11: 198.18.176.0/20, world
hosts 198.19.11.0/24), torn down in ``finally`` with a check that nothing is left."""

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

import yaml

from cilia.agent.config import AgentConfig
from cilia.agent.endpoints import EndpointTable
from cilia.lab import netns
from cilia.lab.world import world_ifname, world_netns_name

NODE_INDEX = 11
GATEWAY = "198.18.176.1"
WORLD = "198.19.11"  # world hosts of these tests: 198.19.11.0/24
CURL = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2"]


def pod(
    name: str, labels: dict[str, str], ports: tuple[int, ...] = (80,), namespace: str = "default"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "web", "image": "nginxdemos/hello:plain-text",
                                 "ports": [{"containerPort": p} for p in ports]}]},
    }


def cnp(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


class LiveNode:
    def __init__(self, base: Path, node_index: int = NODE_INDEX) -> None:
        """``node_index``: another index than the world tests' (11) lets a module's live tests run
        beside them (pod range, gateway and world hosts 198.19.<index>.0/24 are the index's)."""
        self.base = base
        self.node_index = node_index
        self.world = f"198.19.{node_index}"
        self.env = {
            **os.environ,
            "CILIA_STATE_DIR": str(base / "state"),
            "CILIA_RUN_DIR": str(base / "run"),
            "CILIA_PIN_ROOT": f"/sys/fs/bpf/cilia/test-{uuid.uuid4().hex[:8]}",
        }
        self.cfg = AgentConfig.resolve(base / "state", base / "run")
        self.pin_root = Path(self.env["CILIA_PIN_ROOT"])
        self.world_hosts: list[str] = []
        self.manifests = base / "manifests"
        self.manifests.mkdir(exist_ok=True)
        self._n = 0

    def cilia(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "cilia.cli.main", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"cilia {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def apply(self, *docs: dict[str, Any]) -> Path:
        """Write the documents to a file in the manifests dir (kept for offline analysis), apply it."""
        self._n += 1
        path = self.manifests / f"{self._n:02d}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        self.cilia("apply", "-f", str(path))
        return path

    def delete(self, path: Path) -> None:
        self.cilia("delete", "-f", str(path))
        path.unlink()

    def ips(self, namespace: str = "default") -> dict[str, str]:
        items = json.loads(self.cilia("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        return {i["metadata"]["name"]: i["status"].get("podIP", "") for i in items}

    def world_add(self, name: str, last_octet: int, *ports: str) -> str:
        ip = f"{self.world}.{last_octet}"
        self.world_hosts.append(name)
        self.cilia("world", "add", name, "--ip", ip, *(a for p in ports for a in ("--port", p)))
        return ip

    def curl_from_pod(self, pod_name: str, ip: str, port: int = 80, max_time: str = CURL[-1]) -> bool:
        """``max_time``: curl's --max-time (an expected drop waits it out: 1 s is plenty in the lab)."""
        out = self.cilia("exec", pod_name, "--", *CURL[:-1], max_time, f"http://{ip}:{port}/", check=False)
        return out.returncode == 0 and out.stdout == "200"

    def curl_from_world(self, host: str, ip: str, port: int = 80) -> bool:
        out = self.cilia("world", "exec", host, "--", *CURL, f"http://{ip}:{port}/", check=False)
        return out.returncode == 0 and out.stdout == "200"

    def trace(self, src: str, dst: str, port: str = "80/TCP") -> bool:
        """The offline verdict (``cilia trace`` on every manifest applied so far)."""
        files = [a for p in sorted(self.manifests.glob("*.yaml")) for a in ("-f", str(p))]
        out = self.cilia("trace", *files, "--from", src, "--to", dst, "--port", port, check=False)
        assert out.returncode in (0, 1), out.stdout + out.stderr
        return out.returncode == 0

    def created(self) -> tuple[set[str], set[str]]:
        eps = list(EndpointTable(self.cfg.endpoints_path)) if self.cfg.endpoints_path.exists() else []
        ns = {e.netns for e in eps} | {world_netns_name(self.node_index, h) for h in self.world_hosts}
        links = {e.host_ifname for e in eps} | {world_ifname(self.node_index, h) for h in self.world_hosts}
        return ns, links


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


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


def live_node(base: Path, node: LiveNode | None = None) -> Iterator[LiveNode]:
    """Fixture body: a node up for the test, down (and checked empty) afterwards."""
    n = node if node is not None else LiveNode(base)
    try:
        n.cilia("up", "--node-index", str(n.node_index))
        yield n
    finally:
        created_netns, created_links = n.created()
        down = n.cilia("down", "--purge", check=False)
        for pid in _processes(str(n.cfg.state_dir)) + _processes(str(n.cfg.lab_run_dir)):
            os.kill(pid, signal.SIGKILL)  # only processes of this test's node
        # The kernel frees namespaces and their links asynchronously; on a busy machine give it time.
        for _ in range(100):
            if created_netns.isdisjoint(netns.names()) and created_links.isdisjoint(_links()):
                break
            time.sleep(0.1)
        assert created_netns.isdisjoint(netns.names()), f"network namespaces left behind\n{down.stdout}"
        assert created_links.isdisjoint(_links()), f"links left behind\n{down.stdout}"
        assert not n.pin_root.exists(), f"pins left behind under {n.pin_root}"
        assert _processes(str(n.cfg.lab_run_dir)) == [], "workload daemon or DNS server left behind"
