"""Routed test pods: network namespaces ``cilia-t…`` with a veth whose host side is ``lxct…``.

Topology as Cilium's lxc model (datapath-notes §3): the host side carries the gateway address
(198.18.200.1/32) and a /32 route per pod; the pod has its /32 on ``eth0``, a scope-link route to
the gateway and 198.18.0.0/15 via it. Only 198.18.200.0/24 is used. Forwarding is switched on per
host veth (not globally). Everything is removed on exit, also on failure; processes started in
pods are killed by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

GATEWAY = "198.18.200.1"
SUBNET = "198.18.200"
PROBE = Path(__file__).resolve().parent / "helpers_probe.py"


@dataclass
class Pod:
    netns: str
    ip: str
    host_if: str
    ifindex: int
    procs: list[subprocess.Popen] = field(default_factory=list)

    def cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*argv), capture_output=True, text=True, timeout=timeout, check=False)

    def spawn(self, *argv: str) -> subprocess.Popen:
        p = subprocess.Popen(self.cmd(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)


def _remove(netns: str, host_if: str) -> None:
    subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


@contextlib.contextmanager
def routed_pods(count: int, first_host: int = 10) -> Iterator[list[Pod]]:
    """``count`` pods at 198.18.200.<first_host + 10·i>; all removed afterwards."""
    tag = f"{os.getpid() % 100000}"
    pods: list[Pod] = []
    made: list[tuple[str, str]] = []
    try:
        for i in range(count):
            netns, host_if = f"cilia-t{tag}-{i}", f"lxct{tag}x{i}"
            ip = f"{SUBNET}.{first_host + 10 * i}"
            made.append((netns, host_if))
            _ip("netns", "add", netns)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", f"ciliap{tag}x{i}")
            _ip("link", "set", f"ciliap{tag}x{i}", "netns", netns)
            _ip("-n", netns, "link", "set", f"ciliap{tag}x{i}", "name", "eth0")
            _ip("-n", netns, "addr", "add", f"{ip}/32", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
            _ip("-n", netns, "route", "add", GATEWAY, "dev", "eth0", "scope", "link")
            _ip("-n", netns, "route", "add", "198.18.0.0/15", "via", GATEWAY, "dev", "eth0")
            _ip("addr", "add", f"{GATEWAY}/32", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("route", "add", f"{ip}/32", "dev", host_if, "scope", "link")
            Path(f"/proc/sys/net/ipv4/conf/{host_if}/forwarding").write_text("1")
            ifindex = int(Path(f"/sys/class/net/{host_if}/ifindex").read_text())
            pods.append(Pod(netns, ip, host_if, ifindex))
        yield pods
    finally:
        for pod in pods:
            for p in pod.procs:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
        for netns, host_if in made:
            _remove(netns, host_if)


def probe_cmd(targets: list[tuple[str, int]], rounds: int = 1, wait_s: float = 0.5, interval_s: float = 0.0,
              duration_s: float = 0.0) -> list[str]:
    """The command line of a prober (see :func:`probe`), to spawn in a pod and read later."""
    spec = {"targets": targets, "rounds": rounds, "wait": wait_s, "interval": interval_s,
            "duration": duration_s}
    return [sys.executable, str(PROBE), json.dumps(spec)]


def probe(pod: Pod, targets: list[tuple[str, int]], rounds: int = 1, wait_s: float = 0.5,
          interval_s: float = 0.0) -> list[list[bool]]:
    """Concurrent TCP connects from ``pod``; per round, per target: True when the SYN got an answer
    (connected or refused), False when it was dropped (no answer within ``wait_s``)."""
    out = pod.run(*probe_cmd(targets, rounds, wait_s, interval_s),
                  timeout=60 + rounds * (wait_s + interval_s))
    if out.returncode != 0:
        raise RuntimeError(f"probe in {pod.netns} failed: {out.stderr}")
    return json.loads(out.stdout)
