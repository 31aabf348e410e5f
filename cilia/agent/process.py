"""Running the agent as a background process: start, wait for ready, stop.

``cilia up`` starts ``cilia agent`` in its own session (so it outlives the shell), with stdout and
stderr appended to the agent log, and waits until the REST API reports ready. ``cilia down`` sends
SIGTERM to the pid it recorded and waits; only that pid is ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cilia.agent.client import AgentAPIError, AgentClient, AgentUnavailable
from cilia.agent.config import AgentConfig
from cilia.agent.errors import AgentError
from cilia.store.files import open_private, private_dir


class AgentStartError(AgentError, RuntimeError):
    """The background agent exited or did not become ready; the log tail says why."""


def read_pid(cfg: AgentConfig) -> int | None:
    """The pid recorded by a running agent, if that process still exists."""
    try:
        pid = int(cfg.pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) and _is_agent(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_agent(pid: int) -> bool:
    # A pid file can outlive its process and the pid be reused: check it is really an agent.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"agent" in cmdline and any(b"cilia" in part for part in cmdline)


def agent_argv(cfg: AgentConfig) -> list[str]:
    return [
        sys.executable, "-m", "cilia.cli.main", "agent",
        "--state-dir", str(cfg.state_dir), "--run-dir", str(cfg.run_dir),
        "--node-index", str(cfg.node_index), "--enforcement-mode", cfg.enforcement_mode,
        "--allow-localhost", cfg.allow_localhost, "--datapath", cfg.datapath,
        "--metrics-addr", cfg.metrics_addr, "--tofqdns-min-ttl", str(cfg.tofqdns_min_ttl),
        "--host-firewall" if cfg.host_firewall else "--no-host-firewall",
    ]  # fmt: skip


def log_tail(cfg: AgentConfig, lines: int = 20) -> str:
    try:
        return "\n".join(cfg.log_path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def start_background(
    cfg: AgentConfig, timeout: float = 30.0, progress: Callable[[dict[str, Any]], None] | None = None
) -> int:
    """Start the agent detached from this process and wait until it is ready; its pid. ``progress``
    gets each status the starting agent reports (``pods_created`` of ``pods_to_create``, one step
    per pod); ``timeout`` counts from the start or from the last pod the agent created, so a node
    with many pods is not given up while it makes progress."""
    running = read_pid(cfg)
    if running is not None:
        return running
    private_dir(cfg.state_dir)
    private_dir(cfg.run_dir)
    with open_private(cfg.log_path, "ab") as log:
        # In a node's network namespace (several nodes): network only, since `ip netns exec`
        # would also remount /sys and hide the bpffs pins (datapath-notes.md).
        argv = agent_argv(cfg)
        if cfg.netns:
            argv = ["nsenter", f"--net=/run/netns/{cfg.netns}", "--", *argv]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, env={**os.environ, "CILIA_PIN_ROOT": cfg.pin_root},
        )  # fmt: skip
    client = AgentClient(cfg.socket_path, timeout=2.0)
    deadline = time.monotonic() + timeout
    created = 0
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise AgentStartError(f"the agent exited with code {code}; log {cfg.log_path}:\n{log_tail(cfg)}")
        with contextlib.suppress(AgentUnavailable, AgentAPIError):
            status = client.status()
            if status.get("ready"):
                return proc.pid
            if int(status.get("pods_created", 0)) > created:  # a pod more: the agent is not stuck
                created = int(status["pods_created"])
                deadline = time.monotonic() + timeout
            if progress is not None:
                progress(status)
        time.sleep(0.05)
    raise AgentStartError(
        f"the agent was not ready ({timeout:.0f}s without progress); log {cfg.log_path}:\n{log_tail(cfg)}"
    )


def stop(cfg: AgentConfig, timeout: float = 30.0) -> int | None:
    """SIGTERM the recorded agent and wait for it to exit (SIGKILL after ``timeout``); its pid."""
    pid = read_pid(cfg)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid) or _zombie(pid):
            return pid
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return pid


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False
