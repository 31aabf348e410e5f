"""A local etcd cluster of N members on 127.0.0.1, for tests and the multi-node lab.

Members are ``etcd`` processes (Debian's etcd-server 3.4) started by this module and tracked
by PID: :meth:`EtcdCluster.kill` and :meth:`EtcdCluster.stop` signal only those PIDs. Data
and logs live under ``base_dir`` (``<state dir>/etcd`` in the lab), removed by ``stop``.
Members are started through ``setpriv --pdeathsig KILL`` (util-linux) so a crashed test run
leaves no etcd behind; no Python code runs between fork and exec, which matters in a process
that already has gRPC threads.

With ``tls`` (an :class:`~cilia.lab.etcd_pki.EtcdPki`) members speak only mutual TLS, to clients
and to each other: ``https`` URLs, ``--client-cert-auth`` and ``--peer-client-cert-auth`` with the
lab's CA; this module's own health and status checks then present the client certificate.

etcd limits a transaction to 128 operations and a request to 1.5 MiB by default; the store
applies whole manifests in one transaction, so members run with higher limits.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cilia.lab.errors import LabError
from cilia.lab.etcd_pki import EtcdPki

ETCD_BIN = "etcd"
MAX_TXN_OPS = 20_000
MAX_REQUEST_BYTES = 32 * 1024 * 1024


class EtcdClusterError(LabError):
    """etcd is missing, did not become healthy, or a member operation failed."""


@dataclass
class Member:
    """One etcd member: its name, ports, data dir and (while running) its process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    scheme: str = "http"  # https when the cluster runs with TLS

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.peer_port}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _post_json(url: str, body: dict[str, object], timeout: float,
               context: ssl.SSLContext | None = None) -> dict[str, object]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
        return json.loads(resp.read())


def client_context(pki: EtcdPki) -> ssl.SSLContext:
    """An SSL context that trusts only the lab's CA and presents the client certificate."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


class EtcdCluster:
    """Start, inspect, break and stop a local etcd cluster (see the module docstring)."""

    def __init__(self, base_dir: Path | str, members: int = 3, *, etcd_bin: str = ETCD_BIN,
                 election_timeout_ms: int = 1000, heartbeat_ms: int = 100,
                 tls: EtcdPki | None = None) -> None:
        if members < 1:
            raise EtcdClusterError("an etcd cluster needs at least one member")
        self.base_dir = Path(base_dir)
        self.tls = tls
        self._context = client_context(tls) if tls is not None else None
        self.etcd_bin = etcd_bin
        self.token = f"cilia-{uuid.uuid4().hex[:12]}"
        self.election_timeout_ms = election_timeout_ms
        self.heartbeat_ms = heartbeat_ms
        ports = _free_ports(2 * members)
        self.members = [
            Member(f"m{i + 1}", ports[2 * i], ports[2 * i + 1], self.base_dir / f"m{i + 1}",
                   scheme="https" if tls is not None else "http")
            for i in range(members)
        ]

    # ------------------------------------------------------------------ lifecycle

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` of every member's client URL."""
        return [m.endpoint for m in self.members]

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise EtcdClusterError(f"no etcd member {name!r} (have {', '.join(m.name for m in self.members)})")

    def start(self, timeout: float = 15.0) -> EtcdCluster:
        """Start every member and wait until each one reports healthy."""
        if shutil.which(self.etcd_bin) is None:
            raise EtcdClusterError(
                f"{self.etcd_bin!r} not found: apt-get install -y etcd-server etcd-client")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        try:
            for m in self.members:
                self._spawn(m, "new")
            self.wait_healthy(timeout)
        except BaseException:  # broad: stop what was spawned whatever happened (even ^C), then re-raise
            self.stop()
            raise
        return self

    def _spawn(self, m: Member, state: str) -> None:
        initial = ",".join(f"{o.name}={o.peer_url}" for o in self.members)
        setpriv = shutil.which("setpriv")
        cmd = [
            *([setpriv, "--pdeathsig", "KILL"] if setpriv else []),
            self.etcd_bin, "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--election-timeout", str(self.election_timeout_ms),
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--max-txn-ops", str(MAX_TXN_OPS), "--max-request-bytes", str(MAX_REQUEST_BYTES),
        ]
        if self.tls is not None:
            t = self.tls
            cmd += ["--client-cert-auth", "--trusted-ca-file", str(t.ca), "--cert-file", str(t.server_cert),
                    "--key-file", str(t.server_key),
                    "--peer-client-cert-auth", "--peer-trusted-ca-file", str(t.ca),
                    "--peer-cert-file", str(t.server_cert), "--peer-key-file", str(t.server_key)]
        log = (self.base_dir / f"{m.name}.log").open("ab")
        try:
            m.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def log_tail(self, m: Member, lines: int = 15) -> str:
        try:
            text = (self.base_dir / f"{m.name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def healthy(self, m: Member, timeout: float = 1.0) -> bool:
        if m.pid is None:
            return False
        try:
            with urllib.request.urlopen(f"{m.client_url}/health", timeout=timeout,
                                        context=self._context) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 15.0, members: list[Member] | None = None) -> None:
        """Wait until every running member (or those given) reports healthy."""
        wanted = members if members is not None else [m for m in self.members if m.proc is not None]
        deadline = time.monotonic() + timeout
        while True:
            dead = [m for m in wanted if m.proc is not None and m.proc.poll() is not None]
            if dead:
                m = dead[0]
                raise EtcdClusterError(
                    f"etcd member {m.name} exited with {m.proc.returncode if m.proc else '?'}; "
                    f"its log ends with:\n{self.log_tail(m)}")
            if all(self.healthy(m) for m in wanted):
                return
            if time.monotonic() > deadline:
                sick = [m.name for m in wanted if not self.healthy(m)]
                raise EtcdClusterError(f"etcd members {sick} not healthy after {timeout:.0f} s; "
                                       f"{sick[0]}'s log ends with:\n{self.log_tail(self.member(sick[0]))}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every member this object started (by PID) and remove the data dir."""
        for m in self.members:
            self._terminate(m)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _terminate(self, m: Member, sig: signal.Signals = signal.SIGTERM) -> None:
        proc, m.proc = m.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ inspection and faults

    def status(self, m: Member, timeout: float = 1.0) -> dict[str, object]:
        """The member's ``Maintenance.Status`` through etcd's grpc-gateway (JSON)."""
        return _post_json(f"{m.client_url}/v3/maintenance/status", {}, timeout, self._context)

    def leader(self, timeout: float = 10.0) -> Member:
        """The current raft leader (waits for an election to finish)."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.members:
                if m.pid is None:
                    continue
                try:
                    st = self.status(m)
                except (OSError, ValueError):
                    continue
                header = st.get("header")
                if isinstance(header, dict) and st.get("leader") and header.get("member_id") == st["leader"]:
                    return m
            if time.monotonic() > deadline:
                raise EtcdClusterError(f"no etcd leader after {timeout:.0f} s")
            time.sleep(0.05)

    def kill(self, name: str) -> None:
        """SIGKILL one member (by its PID), as a crash."""
        self._terminate(self.member(name), signal.SIGKILL)

    def restart(self, name: str, timeout: float = 15.0) -> None:
        """Start a stopped member again on its data dir; it rejoins the cluster."""
        m = self.member(name)
        if m.pid is not None:
            raise EtcdClusterError(f"etcd member {name} is still running (pid {m.pid})")
        self._spawn(m, "existing")
        self.wait_healthy(timeout, [m])
