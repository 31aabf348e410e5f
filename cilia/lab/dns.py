"""The lab's DNS server: a world host (``dns``, at 198.19.<i>.53) answering A queries from a records
file (``<run_dir>/dns/records.json``: name -> addresses) that ``cilia dns add NAME IP`` edits; a name
without records is NXDOMAIN. It runs as its own process inside the host's namespace (pid file next to
the records), started on the first record and stopped when the world host is removed.

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
import time
from pathlib import Path

from cilia.agent.dnsmsg import RCODE_NOERROR, RCODE_NXDOMAIN, TYPE_A, DnsFormatError, parse, query, response
from cilia.lab import netns
from cilia.lab.errors import LabError
from cilia.lab.world import DNS_HOST, World, WorldHost

PORT = 53


def records_path(run_dir: Path) -> Path:
    return run_dir / "dns" / "records.json"


def pid_path(run_dir: Path) -> Path:
    return run_dir / "dns" / "server.pid"


def server_address(node_index: int) -> str:
    return f"198.19.{node_index}.53"


def read_records(path: Path) -> dict[str, list[str]]:
    try:
        return {k.lower().rstrip("."): list(v) for k, v in json.loads(path.read_text() or "{}").items()}
    except FileNotFoundError:
        return {}


def add_record(run_dir: Path, name: str, ip: str) -> dict[str, list[str]]:
    """Add an A record (idempotent); returns every record."""
    path = records_path(run_dir)
    recs = read_records(path)
    key = name.lower().rstrip(".")
    if ip not in recs.setdefault(key, []):
        recs[key].append(ip)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(recs, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return recs


def answer(data: bytes, records: dict[str, list[str]]) -> bytes | None:
    """The response to one query datagram (None for something that is not a query)."""
    try:
        msg = parse(data)
    except DnsFormatError:
        return None
    if msg.is_response or msg.question is None:
        return None
    addrs = records.get(msg.question.name)
    if addrs is None:
        return response(msg, [], RCODE_NXDOMAIN)
    return response(msg, addrs if msg.question.qtype == TYPE_A else [], RCODE_NOERROR)


def serve(ns: str, records: Path, pid_file: Path) -> None:
    with netns.entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", PORT))
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    pid_file.write_text(f"{os.getpid()}\n")
    sock.settimeout(0.5)
    while not stop:
        try:
            data, peer = sock.recvfrom(4096)
        except TimeoutError:
            continue
        out = answer(data, read_records(records))
        if out is not None:
            sock.sendto(out, peer)
    pid_file.unlink(missing_ok=True)


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


def start(run_dir: Path, ns: str, wait: float = 5.0) -> int:
    """Start the server in namespace ``ns`` unless it runs; its pid."""
    pid = running_pid(run_dir)
    if pid is not None:
        return pid
    pid_file = pid_path(run_dir)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cilia.lab.dns", "--netns", ns, "--records", str(records_path(run_dir)),
         "--pid-file", str(pid_file)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )
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


def ensure(world: World) -> WorldHost:
    """The DNS world host with its server running (created on first use)."""
    host = world.get(DNS_HOST)
    if host is None:
        host = world.add(DNS_HOST, server_address(world.node_index))
    start(world.lab.run_dir, host.netns)
    return host


def resolve(server: str, name: str, timeout: float = 2.0) -> tuple[int, list[str]]:
    """Ask ``server`` for the A records of ``name`` from this namespace: (rcode, addresses); rcode -1
    when no answer came."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        mid = int.from_bytes(os.urandom(2), "big")
        s.sendto(query(mid, name), (server, PORT))
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
