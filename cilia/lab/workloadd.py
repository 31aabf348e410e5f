"""The workload daemon: one process serving every pod's built-in workloads, and its client.

Why a daemon and not the agent's own loop: pods must keep answering while the agent restarts,
and a CLI process can start pods too. The daemon listens on ``<run_dir>/workloads.sock``;
each request is one JSON line and gets one JSON line back:

    {"op": "add", "pod": {...PodWorkload...}}  {"op": "remove", "key": "ns/name"}
    {"op": "list"}                               {"op": "shutdown"}

Replies are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. Embedding instead is
possible: :class:`cilia.lab.workloads.WorkloadServer` runs in any asyncio loop.

Run it with ``python -m cilia.lab.workloadd --run-dir DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cilia.lab.errors import LabError
from cilia.lab.workloads import PodWorkload, WorkloadServer
from cilia.store.files import open_private, private_dir

SOCKET_NAME = "workloads.sock"
PID_NAME = "workloads.pid"
LOG_NAME = "workloadd.log"


async def _dispatch(server: WorkloadServer, req: dict[str, Any], stop: asyncio.Event) -> dict[str, Any]:
    op = req.get("op")
    if op == "add":
        await server.add(PodWorkload.from_json(req["pod"]))
        return {"ok": True}
    if op == "remove":
        return {"ok": True, "removed": await server.remove(str(req["key"]))}
    if op == "list":
        return {"ok": True, "pid": os.getpid(), "pods": server.describe()}
    if op == "shutdown":
        stop.set()
        return {"ok": True}
    return {"ok": False, "error": f"unknown op {op!r}"}


async def serve(run_dir: Path) -> None:
    """Serve until SIGTERM/SIGINT or a shutdown request; then stop every workload."""
    private_dir(run_dir)  # 0700: the control socket starts root's commands in pods
    sock_path = run_dir / SOCKET_NAME
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    server = WorkloadServer()
    stop = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    resp = await _dispatch(server, json.loads(line), stop)
                except Exception as e:  # reported to the client, the daemon keeps serving
                    resp = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                writer.write(json.dumps(resp).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the daemon is stopping
        finally:
            writer.close()

    old_umask = os.umask(0o177)  # the socket is created 0600: no window with wider access
    try:
        ctl = await asyncio.start_unix_server(handle, path=str(sock_path), limit=1 << 20)
    finally:
        os.umask(old_umask)
    os.chmod(sock_path, 0o600)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    (run_dir / PID_NAME).write_text(f"{os.getpid()}\n")
    try:
        await stop.wait()
    finally:
        ctl.close()
        await server.close()
        for p in (sock_path, run_dir / PID_NAME):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="cilia-workloadd", description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, required=True)
    args = ap.parse_args(argv)
    # Each pod holds a log file and a socket per port; a thousand pods need more than 1024 fds.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve(args.run_dir))


def _is_daemon(pid: int, run_dir: Path) -> bool:
    """True if ``pid`` is a workload daemon for ``run_dir`` (guards against a reused pid)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"cilia.lab.workloadd" in cmd and str(run_dir).encode() in cmd


class WorkloadClient:
    """Talks to (and starts or stops) the workload daemon of ``run_dir``."""

    def __init__(self, run_dir: Path, timeout: float = 30.0) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.timeout = timeout

    @property
    def socket_path(self) -> Path:
        return self.run_dir / SOCKET_NAME

    def pid(self) -> int | None:
        """The daemon's pid, if one runs for this run dir."""
        try:
            pid = int((self.run_dir / PID_NAME).read_text())
        except (OSError, ValueError):
            return None
        return pid if _is_daemon(pid, self.run_dir) else None

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            try:
                s.connect(str(self.socket_path))
                s.sendall(json.dumps(req).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError as e:
                raise LabError(f"workload daemon at {self.socket_path}: {e}") from e
        if not data:
            raise LabError(f"workload daemon at {self.socket_path} closed the connection")
        resp: dict[str, Any] = json.loads(data)
        if not resp.get("ok"):
            raise LabError(f"workload daemon: {resp.get('error')}")
        return resp

    def running(self) -> bool:
        if self.pid() is None:
            return False
        try:
            self.request({"op": "list"})
            return True
        except LabError:
            return False

    def ensure_started(self, wait: float = 10.0) -> int:
        """Start the daemon unless it runs; returns its pid."""
        if self.running():
            pid = self.pid()
            assert pid is not None
            return pid
        private_dir(self.run_dir)
        with open_private(self.run_dir / LOG_NAME, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cilia.lab.workloadd", "--run-dir", str(self.run_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log_path = self.run_dir / LOG_NAME
                raise LabError(f"workload daemon exited with {proc.returncode}; see {log_path}")
            if self.running():
                return proc.pid
            time.sleep(0.02)
        self._kill(proc.pid)
        raise LabError(f"workload daemon did not come up within {wait}s; see {self.run_dir / LOG_NAME}")

    def add(self, pod: PodWorkload) -> None:
        self.request({"op": "add", "pod": pod.to_json()})

    def remove(self, key: str) -> bool:
        return bool(self.request({"op": "remove", "key": key})["removed"])

    def list(self) -> dict[str, Any]:
        """``{"pid": ..., "pods": {key: {"tcp", "udp", "pids"}}}``."""
        return self.request({"op": "list"})

    def stop(self, wait: float = 10.0) -> None:
        """Stop the daemon (and with it every workload); kills it by pid if it does not exit."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(LabError):
            self.request({"op": "shutdown"})
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _is_daemon(pid, self.run_dir):
            _reap(pid)
            time.sleep(0.02)
        if _is_daemon(pid, self.run_dir):
            self._kill(pid)

    @staticmethod
    def _kill(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)


def _reap(pid: int) -> None:
    # The daemon is our child when this process started it; collect it so it is not a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


if __name__ == "__main__":
    main()
