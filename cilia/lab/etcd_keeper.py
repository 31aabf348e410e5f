"""The lab's etcd for several nodes, kept by a small background process of its own.

Members of :class:`~cilia.lab.etcd_cluster.EtcdCluster` die with the process that started them
(``--pdeathsig``), and ``cilia up`` returns, so a detached keeper (``python -m
cilia.lab.etcd_keeper DIR ADDRESS``) starts them, writes ``DIR/keeper.json`` (its pid, the
endpoints, the members' pids) and stops them (by PID) on SIGTERM, removing their data. Clients
listen on ``ADDRESS`` (the underlay bridge), which agents in node namespaces can reach. Members
speak mutual TLS only, with the certificates of ``DIR/pki`` (:mod:`cilia.lab.etcd_pki`, made on
the first start; root-only): clients need ``pki/client.crt`` and its key.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cilia.lab import etcd_pki
from cilia.lab.etcd_cluster import EtcdCluster, EtcdClusterError, Member
from cilia.lab.etcd_pki import EtcdPki

KEEPER_FILE = "keeper.json"


@dataclass
class _AddressedMember(Member):
    host: str = "127.0.0.1"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"


def pki(base: Path) -> EtcdPki:
    """The keeper's certificates (made if missing)."""
    return etcd_pki.ensure(base / "pki")


def _serve(base: Path, host: str, tls: bool = True) -> int:
    cluster = EtcdCluster(base / "data", members=3, tls=pki(base) if tls else None)
    cluster.members = [_AddressedMember(m.name, m.client_port, m.peer_port, m.data_dir, scheme=m.scheme,
                                        host=host)
                       for m in cluster.members]
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    cluster.start()
    try:
        info = {"pid": os.getpid(), "endpoints": cluster.endpoints,
                "members": [m.pid for m in cluster.members]}
        tmp = base / (KEEPER_FILE + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, base / KEEPER_FILE)
        while not done.wait(1.0):
            pass
    finally:
        cluster.stop()
        (base / KEEPER_FILE).unlink(missing_ok=True)
    return 0


def read(base: Path) -> dict[str, object] | None:
    """The running keeper's record (None if there is none or its process is gone)."""
    try:
        info = json.loads((base / KEEPER_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return info if _is_keeper(int(info["pid"])) else None


def _is_keeper(pid: int) -> bool:
    try:
        return b"cilia.lab.etcd_keeper" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def start(base: Path, host: str, timeout: float = 30.0, tls: bool = True) -> list[str]:
    """Start the keeper (detached) and wait for its cluster; the client endpoints. ``tls`` False:
    a plain etcd (tests stand one up as an etcd that is not the lab's)."""
    running = read(base)
    if running is not None:
        return list(running["endpoints"])  # type: ignore[call-overload]
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(base, 0o700)  # data, keys and logs of the cluster's store: root's only
    if tls:
        pki(base)  # before the keeper: a failure here is the caller's error, not a log line
    with open(base / "keeper.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cilia.lab.etcd_keeper", str(base), host,
                                 *([] if tls else ["--plain"])],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read(base)
        if info is not None:
            return list(info["endpoints"])  # type: ignore[call-overload]
        if proc.poll() is not None:
            tail = (base / "keeper.log").read_text(errors="replace")[-2000:]
            raise EtcdClusterError(f"the etcd keeper exited with code {proc.returncode}:\n{tail}")
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    raise EtcdClusterError(f"etcd was not ready after {timeout:.0f}s (log {base / 'keeper.log'})")


def stop(base: Path, timeout: float = 20.0) -> list[int]:
    """SIGTERM the keeper (it stops its members by PID); the pids that were stopped."""
    info = read(base)
    if info is None:
        return []
    pid = int(info["pid"])  # type: ignore[call-overload]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _is_keeper(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _is_keeper(pid):
        os.kill(pid, signal.SIGKILL)
    return [pid, *(int(p) for p in info.get("members", []) if p)]  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(_serve(Path(sys.argv[1]), sys.argv[2], tls="--plain" not in sys.argv[3:]))
