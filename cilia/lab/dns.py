"""The lab's DNS server: a world host (``dns``, at 198.19.<i>.53) answering A queries over UDP and
TCP from a records file (``<run_dir>/dns/records.json``: name -> addresses) that ``cilia dns add NAME
IP [--ttl N]`` edits, with each name's TTL in ``ttl.json`` (default 60 s); a name without records is
NXDOMAIN. Like CoreDNS it also answers the cluster's Service names: ``NAME.NAMESPACE.svc.cluster.local``
→ the Service's ClusterIP (read from the store the lab uses, ``store.json`` beside the records says
which, at most once a second), and NXDOMAIN for any other name in ``cluster.local``; records
added with ``cilia dns add`` win over Service names. It runs as its own process inside the host's
namespace (pid file next to the records), started with the node (its agent keeps it running:
every pod's resolv.conf names it) and stopped when the world
host is removed. No packet stops it: whatever one query does wrong is logged (``server.log``)
and the next one is served.

Run it with ``python -m cilia.lab.dns --netns NS --records FILE --pid-file FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cilia.datapath.dualstack import ipv6_of
from cilia.lab import netns
from cilia.lab.dns_process import pid_path, running_pid
from cilia.lab.errors import LabError
from cilia.lab.podfiles import dns_address
from cilia.lab.world import DNS_HOST, World, WorldHost
from cilia.proxy.dns.msg import (
    RCODE_NXDOMAIN,
    TYPE_A,
    TYPE_AAAA,
    DnsFormatError,
    frame,
    parse,
    query,
    read_framed,
    response,
)
from cilia.store import Kind, Store
from cilia.store.files import write_json
from cilia.store.sqlite import SqliteBackend

PORT = 53
DEFAULT_TTL = 60
TTL_FILE = "ttl.json"
TCP_IDLE_S = 10.0
CLUSTER_DOMAIN = "cluster.local"
SERVICE_TTL = 5  # CoreDNS's kubernetes plugin default
SERVICES_REFRESH_S = 1.0
STORE_FILE = "store.json"


def records_path(run_dir: Path) -> Path:
    return run_dir / "dns" / "records.json"


def ttl_path(run_dir: Path) -> Path:
    return run_dir / "dns" / TTL_FILE


def server_address(node_index: int) -> str:
    return dns_address(node_index)


def read_records(path: Path) -> dict[str, list[str]]:
    try:
        return {k.lower().rstrip("."): list(v) for k, v in json.loads(path.read_text() or "{}").items()}
    except FileNotFoundError:
        return {}


def read_ttls(path: Path) -> dict[str, int]:
    try:
        return {k.lower().rstrip("."): int(v) for k, v in json.loads(path.read_text() or "{}").items()}
    except FileNotFoundError:
        return {}


def _write_json(path: Path, data: object) -> None:
    write_json(path, data, durable=False, indent=1, sort_keys=True)


def add_record(run_dir: Path, name: str, ip: str, ttl: int | None = None) -> dict[str, list[str]]:
    """Add an A record (idempotent) and, if given, set the name's TTL (seconds); returns every record."""
    if ttl is not None and not 0 <= ttl <= 0x7FFFFFFF:
        raise LabError(f"TTL {ttl}: must be 0..2147483647 seconds (RFC 2181)")
    path = records_path(run_dir)
    recs = read_records(path)
    key = name.lower().rstrip(".")
    if ip not in recs.setdefault(key, []):
        recs[key].append(ip)
    if ttl is not None:  # before the record, so no answer carries the old TTL for a new name
        ttls = read_ttls(ttl_path(run_dir))
        ttls[key] = ttl
        _write_json(ttl_path(run_dir), ttls)
    _write_json(path, recs)
    return recs


def answer(data: bytes, records: dict[str, list[str]], ttls: dict[str, int] | None = None,
           services: Mapping[str, str | Sequence[str]] | None = None) -> bytes | None:
    """The response to one query message (None for something that is not a query). ``services``:
    ``name.namespace`` → ClusterIPs, answered under ``name.namespace.svc.cluster.local`` (A: the
    IPv4 one, AAAA: the IPv6 one of a dual-stack or IPv6 Service)."""
    try:
        msg = parse(data)
    except DnsFormatError:
        return None
    if msg.is_response or msg.question is None:
        return None
    qname = msg.question.name.lower().rstrip(".")
    addrs = records.get(qname)
    ttl = (ttls or {}).get(qname, DEFAULT_TTL)
    twins = True  # a world host's IPv4 address has its IPv6 twin (cilia.datapath.dualstack)
    if addrs is None:
        addrs, ttl, twins = service_addresses(qname, services or {}), SERVICE_TTL, False  # own ClusterIPs
    if addrs is None:
        return response(msg, [], RCODE_NXDOMAIN)
    if msg.question.qtype == TYPE_A:
        return response(msg, [a for a in addrs if ":" not in a], ttl=ttl)
    if msg.question.qtype == TYPE_AAAA:
        six = [a if ":" in a else ipv6_of(a) if twins else "" for a in addrs]
        six = [a for a in six if a]
        return response(msg, list(dict.fromkeys(six)), ttl=ttl)
    return response(msg, [], ttl=ttl)


def service_addresses(name: str, services: Mapping[str, str | Sequence[str]]) -> list[str] | None:
    """The ClusterIPs of a ``NAME.NAMESPACE.svc.cluster.local`` name (None: NXDOMAIN)."""
    suffix = f".svc.{CLUSTER_DOMAIN}"
    if not name.endswith(suffix):
        return None
    ips = services.get(name[: -len(suffix)])
    ips = [ips] if isinstance(ips, str) else list(ips or ())
    return [ip for ip in ips if ip and ip != "None"] or None


def write_store_description(run_dir: Path, store: Store) -> None:
    """Tell the server where the lab's store is (for Service names): SQLite file or etcd."""
    backend: Any = store.backend
    desc: dict[str, Any] = {}
    if isinstance(backend, SqliteBackend):
        desc = {"backend": "sqlite", "path": str(backend.path)}
    elif type(backend).__name__ == "EtcdBackend":
        desc = {"backend": "etcd", "endpoints": list(backend.endpoints),
                "tls": list(backend.tls) if getattr(backend, "tls", None) else None}
    _write_json(run_dir / "dns" / STORE_FILE, desc)


def _open_described_store(path: Path) -> Store | None:
    try:
        desc = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return None
    if desc.get("backend") == "sqlite":
        return Store(SqliteBackend(desc["path"]))
    if desc.get("backend") == "etcd":
        from cilia.store.etcd import open_etcd_store  # etcd3aio only when asked for

        tls = desc.get("tls")
        return open_etcd_store(desc["endpoints"], **({"tls": tuple(tls)} if tls else {}))
    return None


def _cluster_ips(spec: Mapping[str, Any]) -> list[str]:
    """A stored Service's ClusterIPs: ``clusterIPs`` (dual stack), else ``clusterIP``."""
    ips = spec.get("clusterIPs") or [spec.get("clusterIP") or ""]
    return [str(ip) for ip in ips if ip]


class ServiceNames:
    """``name.namespace`` → ClusterIPs of every Service in the store, re-read at most once a second."""

    def __init__(self, description: Path) -> None:
        self.description = description
        self._store: Store | None = None
        self._names: dict[str, list[str]] = {}
        self._read_at = -SERVICES_REFRESH_S
        self._lock = threading.Lock()

    def get(self) -> dict[str, list[str]]:
        with self._lock:
            if time.monotonic() - self._read_at >= SERVICES_REFRESH_S:
                self._read_at = time.monotonic()
                try:
                    if self._store is None:
                        self._store = _open_described_store(self.description)
                    if self._store is not None:
                        self._names = {
                            f"{r.key.name}.{r.key.namespace}".lower(): _cluster_ips(r.value.get("spec") or {})
                            for r in self._store.list(Kind.SERVICES)
                        }
                except Exception as e:  # the store is down: keep the last names, say so
                    print(f"services: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return self._names

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


class Server:
    """The server's UDP and TCP sockets on one address (bound where it is created: inside the DNS
    host's namespace), answering from the records and TTL files as they are at each query."""

    def __init__(self, records: Path, bind: tuple[str, int] = ("0.0.0.0", PORT)) -> None:
        self.records, self.ttls = records, records.with_name(TTL_FILE)
        self.services = ServiceNames(records.with_name(STORE_FILE))
        # every address: IPv4 and the host's IPv6 twin on one dual-stack socket per transport
        family, host = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET, bind[0]
        if bind[0] == "0.0.0.0" and socket.has_ipv6:
            family, host = socket.AF_INET6, "::"
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        if host == "::":
            self.udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.udp.bind((host, bind[1]))
        self.address: tuple[str, int] = self.udp.getsockname()[:2]
        self.tcp = socket.socket(family, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if host == "::":
            self.tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.tcp.bind(self.address)  # the same port as UDP, also when the caller asked for any
        self.tcp.listen(64)
        self.udp.settimeout(0.5)
        self.tcp.settimeout(0.5)

    def answer(self, data: bytes) -> bytes | None:
        return answer(data, read_records(self.records), read_ttls(self.ttls), self.services.get())

    def safe_answer(self, data: bytes, peer: object) -> bytes | None:
        """:meth:`answer`, never raising: a query that breaks something is logged and dropped."""
        try:
            return self.answer(data)
        except Exception as e:  # broad: one bad query must not stop the lab's DNS server
            print(f"query from {peer} ({len(data)} bytes): {type(e).__name__}: {e}", file=sys.stderr,
                  flush=True)
            return None

    def run(self, stopped: threading.Event) -> None:
        """Serve until ``stopped`` is set, then close the sockets."""
        tcp = threading.Thread(target=self._tcp_loop, args=(stopped,), daemon=True)
        tcp.start()
        while not stopped.is_set():
            try:
                data, peer = self.udp.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            out = self.safe_answer(data, peer)
            if out is not None:
                with contextlib.suppress(OSError):  # the peer's problem, not the server's
                    self.udp.sendto(out, peer)
        tcp.join(timeout=2)
        self.udp.close()
        self.tcp.close()
        self.services.close()

    def _tcp_loop(self, stopped: threading.Event) -> None:
        while not stopped.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn: socket.socket) -> None:
        """Queries on one connection, answered in order (RFC 7766), until it closes or idles."""
        with conn:
            conn.settimeout(TCP_IDLE_S)
            try:
                while (data := read_framed(conn)) is not None:
                    out = self.safe_answer(data, conn.getpeername())
                    if out is None:
                        return
                    conn.sendall(frame(out))
            except (OSError, DnsFormatError):
                return


def serve(ns: str, records: Path, pid_file: Path) -> None:
    with netns.entered(ns):
        server = Server(records)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    pid_file.write_text(f"{os.getpid()}\n")
    server.run(stopped)
    pid_file.unlink(missing_ok=True)


def start(run_dir: Path, ns: str, wait: float = 5.0) -> int:
    """Start the server in namespace ``ns`` unless it runs; its pid."""
    pid = running_pid(run_dir)
    if pid is not None:
        return pid
    pid_file = pid_path(run_dir)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.unlink(missing_ok=True)
    log = open(pid_file.with_name("server.log"), "ab")  # noqa: SIM115 - closed once the child has it
    proc = subprocess.Popen(
        [sys.executable, "-m", "cilia.lab.dns", "--netns", ns, "--records", str(records_path(run_dir)),
         "--pid-file", str(pid_file)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
    )
    log.close()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"DNS server exited with {proc.returncode}")
        if running_pid(run_dir) == proc.pid:
            return proc.pid
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise LabError(f"DNS server did not come up within {wait}s")


def ensure(world: World) -> WorldHost:
    """The DNS world host with its server running (created on first use). A host whose namespace
    is gone (the machine restarted under the lab) is removed and created again."""
    host = world.get(DNS_HOST)
    if host is not None and not netns.exists(host.netns):
        running = running_pid(world.lab.run_dir)
        if running is None:  # its record outlived its namespace: clear the leftovers, start over
            with contextlib.suppress(LabError):
                world.delete(DNS_HOST)
            host = None
    if host is None:
        host = world.add(DNS_HOST, server_address(world.node_index))
    write_store_description(world.lab.run_dir, world.lab.store)
    start(world.lab.run_dir, host.netns)
    return host


def keep_running(world: World) -> WorldHost | None:
    """Called with the node and at each runtime check of the agent: every pod's resolv.conf names
    this server, so it runs from the node's start on (not only after a first ``cilia dns add``) and
    is started again should it have died. Cheap when it runs (a pid file and /proc); the host, or
    None when it runs under a record that cannot be read."""
    if running_pid(world.lab.run_dir) is not None:
        return world.get(DNS_HOST)
    return ensure(world)


def resolve(server: str, name: str, timeout: float = 2.0, tcp: bool = False,
            port: int = PORT, qtype: int = TYPE_A) -> tuple[int, list[str]]:
    """Ask ``server`` (IPv4 or IPv6) for the A (or ``qtype``) records of ``name`` from this
    namespace, over UDP or TCP: (rcode, addresses); rcode -1 when no answer came."""
    mid = int.from_bytes(os.urandom(2), "big")
    if tcp:
        try:
            with socket.create_connection((server, port), timeout=timeout) as c:
                c.sendall(frame(query(mid, name, qtype)))
                data = read_framed(c)
        except (OSError, DnsFormatError):
            return -1, []
        if data is None:
            return -1, []
    else:
        with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(query(mid, name, qtype), (server, port))
            try:
                data, _ = s.recvfrom(4096)
            except TimeoutError:
                return -1, []
    msg = parse(data)
    return msg.rcode, [a for _, a, _ in msg.answers]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="cilia-dns", description=__doc__.splitlines()[0])
    ap.add_argument("--netns", required=True)
    ap.add_argument("--records", type=Path, required=True)
    ap.add_argument("--pid-file", type=Path, required=True)
    args = ap.parse_args(argv)
    serve(args.netns, args.records, args.pid_file)


if __name__ == "__main__":
    main()
