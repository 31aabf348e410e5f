"""The lab DNS server's process: its pid file, whether it runs, and stopping it.

Apart from :mod:`cilia.lab.dns` (which starts the server and builds on :mod:`cilia.lab.world`) so
that the world can stop the server before it deletes the DNS host without importing it back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def pid_path(run_dir: Path) -> Path:
    return run_dir / "dns" / "server.pid"


def _is_server(pid: int, pid_file: Path) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"cilia.lab.dns" in cmd and str(pid_file).encode() in cmd


def running_pid(run_dir: Path) -> int | None:
    path = pid_path(run_dir)
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return None
    return pid if _is_server(pid, path) else None


def stop(run_dir: Path, wait: float = 5.0) -> int | None:
    """Stop the server (by its pid); the pid it had, if one ran."""
    pid = running_pid(run_dir)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and _is_server(pid, pid_path(run_dir)):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    if _is_server(pid, pid_path(run_dir)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pid_path(run_dir).unlink(missing_ok=True)
    return pid
