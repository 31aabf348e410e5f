"""Runs HAProxy for a node and keeps it running.

The supervisor writes the configuration (:mod:`cilia.proxy.http.config`) and the data HAProxy
loads at start (the rules document, the ipcache and decision maps) into the node's run directory (mode 0700,
files 0600), starts ``haproxy -db`` as its child in a session of its own, and restarts it when it
exits unexpectedly (the rules in force come back with it: the Lua script reads the last document
at start); HAProxy ends with its agent (``PR_SET_PDEATHSIG``). While HAProxy is down nothing
listens on the proxy ports and the datapath drops the redirected connections: L7 ports fail
closed. ``stop`` ends it by PID; :func:`stop_stale` ends one a crashed agent left behind (by the
PID in its pid file, only if that process is HAProxy running this node's configuration).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cilia.proxy.errors import ProxyError
from cilia.proxy.http import runtime
from cilia.proxy.http.config import ProxyConfig, render
from cilia.proxy.http.rules import decision_map_text

log = logging.getLogger("cilia.proxy.http")
HAPROXY = "/usr/sbin/haproxy"
START_TIMEOUT_S = 10.0
RESTART_BACKOFF_S = 0.2  # first retry; doubled after each failed start, up to RESTART_BACKOFF_MAX_S
RESTART_BACKOFF_MAX_S = 5.0


class ProxyStartError(ProxyError, RuntimeError):
    """HAProxy did not start (not installed, a bad configuration, a port in use)."""


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started it ends (the agent dying,
    even by SIGKILL), so no HAProxy outlives its agent holding the node's proxy ports; the next
    agent starts its own."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or (HAPROXY if os.path.exists(HAPROXY) else None)
    if found is None:
        raise ProxyStartError("haproxy is not installed (apt-get install -y haproxy)")
    return found


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _is_our_haproxy(pid: int, config: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].endswith(b"haproxy") and str(config).encode() in cmdline


def stop_stale(cfg: ProxyConfig, timeout: float = 5.0) -> bool:
    """End the HAProxy of this node's run directory that no supervisor owns any more (its pid file
    names it); True if one was running."""
    try:
        pid = int(cfg.files.pid.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    if not _is_our_haproxy(pid, cfg.files.config):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _is_our_haproxy(pid, cfg.files.config):
        time.sleep(0.05)
    if _is_our_haproxy(pid, cfg.files.config):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        cfg.files.pid.unlink()
    return True


class Supervisor:
    """One HAProxy for one node. ``on_start`` runs after every (re)start, once the API answers."""

    def __init__(self, cfg: ProxyConfig, rules_text: str, ipcache: Mapping[str, int],
                 on_start: Callable[[], None] | None = None, log_path: Path | None = None,
                 decisions: Sequence[tuple[str, str]] = ()) -> None:
        self.cfg = cfg
        self.on_start = on_start
        self.log_path = log_path
        self.restarts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._rules_text = rules_text
        self._ipcache = dict(ipcache)
        self._decisions = list(decisions)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def write_data(self, rules_text: str | None = None, ipcache: Mapping[str, int] | None = None,
                   decisions: Sequence[tuple[str, str]] | None = None) -> None:
        """Keep what a restarted HAProxy must load at start (the rules document, the map files)."""
        if rules_text is not None:
            self._rules_text = rules_text
            _write(self.cfg.files.rules, rules_text)
        if ipcache is not None:
            self._ipcache = dict(ipcache)
            _write(self.cfg.files.ipcache_map, runtime.map_text(self._ipcache))
        if decisions is not None:
            self._decisions = list(decisions)
            _write(self.cfg.files.decide_map, decision_map_text(self._decisions))

    def start(self) -> Supervisor:
        """Write the files, start HAProxy and wait until its API answers; then watch it."""
        files = self.cfg.files
        files.make_dirs()
        stop_stale(self.cfg)
        _write(files.config, render(self.cfg))
        self.write_data(self._rules_text, self._ipcache, self._decisions)
        self._spawn()
        self._thread = threading.Thread(target=self._watch, name="cilia-haproxy", daemon=True)
        self._thread.start()
        return self

    def _spawn(self) -> None:
        files = self.cfg.files
        with contextlib.suppress(FileNotFoundError):
            files.api_socket.unlink()
        out: Any = subprocess.DEVNULL
        if self.log_path is not None:
            out = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        env = dict(os.environ, CILIA_HTTP_RULES=str(files.rules))
        try:
            proc = subprocess.Popen(
                [haproxy_binary(), "-db", "-f", str(files.config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True,
                preexec_fn=_die_with_parent,  # one prctl call: safe between fork and exec
            )  # fmt: skip
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise ProxyStartError(f"haproxy exited with {proc.returncode} at start (see {self.log_path})")
            try:
                runtime.rules_version(files.api_socket, timeout=1.0)
                break
            except runtime.RuntimeAPIError:
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise ProxyStartError(f"haproxy's API did not answer in {START_TIMEOUT_S}s") from None
                time.sleep(0.02)
        with self._lock:
            self.proc = proc
        _write(files.pid, f"{proc.pid}\n")  # HAProxy writes none in the foreground (-db)
        if self.on_start is not None:
            self.on_start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self.proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            log.warning("haproxy (pid %d) exited with %s: restarting", proc.pid, code)
            backoff = RESTART_BACKOFF_S
            while not self._stopping.wait(backoff):
                try:
                    self._spawn()
                    self.restarts += 1
                    break
                except Exception as e:  # keep trying: its ports fail closed meanwhile
                    log.error("haproxy restart failed: %s", e)
                    backoff = min(backoff * 2, RESTART_BACKOFF_MAX_S)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and end HAProxy (SIGTERM, then SIGKILL), by its PID."""
        self._stopping.set()
        with self._lock:
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout)
        for p in (self.cfg.files.pid, self.cfg.files.api_socket):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
