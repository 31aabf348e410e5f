"""Built-in workloads of every pod on the node, served from ONE asyncio event loop.

Each pod's listening sockets are created inside its network namespace by a worker thread
(setns, socket + bind, setns back) and then served by the loop like any other socket, so a
pod costs a few file descriptors and kilobytes, not a process. TCP ports answer like
``nginxdemos/hello:plain-text``; UDP ports echo. A container with a command runs that command
as a child of this process, killed when the pod is removed, the way a container runtime runs it:
in the pod's network namespace and a private mount namespace with the pod's own resolv.conf and
hosts (``ip netns exec``, :mod:`cilia.lab.podfiles`), as the user and with the privileges its
``securityContext`` gives (:mod:`cilia.lab.security`: by default nobody, no capabilities,
no_new_privs), in ``/``. Every pod
has one log file: an nginx-style access line per HTTP request, a line per UDP datagram, and
the stdout/stderr of its commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, TextIO

from cilia.lab import netns
from cilia.lab.errors import LabError
from cilia.lab.httpwire import BadRequest, escape, parse_head
from cilia.lab.security import RunAs
from cilia.store.files import open_private

KEEPALIVE_TIMEOUT = 65.0  # nginx's keepalive_timeout default
MAX_HEADER = 16 * 1024
MAX_BODY = 1024 * 1024
KEEPALIVE_REQUESTS = 1000  # nginx's keepalive_requests default: then the connection is closed
MAX_CONNECTIONS = 512  # open connections per pod (nginx's worker_connections default)
STOP_GRACE = 2.0


@dataclass(frozen=True)
class PodWorkload:
    """Everything the workload server needs to know about one pod (JSON-serialisable)."""

    key: str  # ns/name
    name: str  # the pod name, reported as "Server name"
    netns: str
    log_path: str
    tcp_ports: tuple[int, ...] = ()
    udp_ports: tuple[int, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()
    # for each command, the setpriv prefix it runs under (() = privileged); a command without
    # an entry runs unprivileged
    privileges: tuple[tuple[str, ...], ...] = ()

    def privileges_of(self, i: int) -> tuple[str, ...]:
        return self.privileges[i] if i < len(self.privileges) else RunAs().setpriv()

    @property
    def empty(self) -> bool:
        """Nothing to serve or run: such a pod never needs the daemon."""
        return not (self.tcp_ports or self.udp_ports or self.commands)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PodWorkload:
        return cls(
            key=d["key"], name=d["name"], netns=d["netns"], log_path=d["log_path"],
            tcp_ports=tuple(int(p) for p in d.get("tcp_ports", ())),
            udp_ports=tuple(int(p) for p in d.get("udp_ports", ())),
            commands=tuple(tuple(str(a) for a in c) for c in d.get("commands", ())),
            privileges=tuple(tuple(str(a) for a in c) for c in d.get("privileges", ())),
        )


@dataclass
class _Running:
    spec: PodWorkload
    log: TextIO
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    datagrams: list[asyncio.DatagramTransport] = field(default_factory=list)
    conns: set[asyncio.StreamWriter] = field(default_factory=set)
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    waiters: list[asyncio.Task[None]] = field(default_factory=list)


def time_local(now: float | None = None) -> str:
    """nginx's ``$time_local``: ``27/Nov/2026:07:03:37 +0000``."""
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))


def hello_body(server_addr: str, server_port: int, pod_name: str, uri: str, request_id: str) -> str:
    """The body ``nginxdemos/hello:plain-text`` returns."""
    return (
        f"Server address: {server_addr}:{server_port}\n"
        f"Server name: {pod_name}\n"
        f"Date: {time_local()}\n"
        f"URI: {uri}\n"
        f"Request ID: {request_id}\n"
    )


def _has_ipv6() -> bool:
    """Whether the calling thread's namespace has IPv6 on its ``eth0`` (a dual-stack lab host)."""
    try:
        return Path("/proc/sys/net/ipv6/conf/eth0/disable_ipv6").read_text().strip() == "0"
    except OSError:
        return False


def _bind(netns_name: str, tcp: tuple[int, ...], udp: tuple[int, ...]) -> tuple[list[socket.socket], ...]:
    """The TCP and the UDP sockets of a workload: on ``0.0.0.0`` and, in a dual-stack namespace,
    on ``::`` beside it (IPv6 only, so IPv4 clients keep their IPv4 addresses in the logs)."""
    socks: list[socket.socket] = []
    out: tuple[list[socket.socket], list[socket.socket]] = ([], [])
    try:
        with netns.entered(netns_name):
            families = [(socket.AF_INET, "0.0.0.0")] + ([(socket.AF_INET6, "::")] if _has_ipv6() else [])
            for group, kind, ports in ((0, socket.SOCK_STREAM, tcp), (1, socket.SOCK_DGRAM, udp)):
                for port in ports:
                    for family, any_addr in families:
                        s = socket.socket(family, kind)
                        socks.append(s)
                        out[group].append(s)
                        if family == socket.AF_INET6:
                            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                        if kind == socket.SOCK_STREAM:
                            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        s.bind((any_addr, port))
                        if kind == socket.SOCK_STREAM:
                            s.listen(511)
        for s in socks:
            s.setblocking(False)
        return out
    except BaseException:  # broad: close the sockets opened so far whatever happened, then re-raise
        for s in socks:
            s.close()
        raise


class _Echo(asyncio.DatagramProtocol):
    def __init__(self, log: TextIO) -> None:
        self.log = log
        self.transport: Any = None  # asyncio's selector datagram transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)
        port = self.transport.get_extra_info("sockname")[1]
        self.log.write(f'{addr[0]} - - [{time_local()}] "UDP {port}" echo {len(data)}\n')


class WorkloadServer:
    """Pods' built-in servers and commands; add and remove pods while it runs."""

    def __init__(self) -> None:
        self._pods: dict[str, _Running] = {}
        # One thread does every setns: it must return home before the next pod's sockets.
        self._netns_thread = ThreadPoolExecutor(1, thread_name_prefix="cilia-netns")

    def keys(self) -> list[str]:
        return sorted(self._pods)

    def describe(self) -> dict[str, Any]:
        return {
            k: {"tcp": list(r.spec.tcp_ports), "udp": list(r.spec.udp_ports),
                "pids": [p.pid for p in r.procs if p.returncode is None]}
            for k, r in sorted(self._pods.items())
        }

    async def add(self, spec: PodWorkload) -> None:
        """Start the pod's workloads (replacing any it had)."""
        if spec.key in self._pods:
            await self.remove(spec.key)
        loop = asyncio.get_running_loop()
        check_ports(spec)
        tcp_socks, udp_socks = await loop.run_in_executor(
            self._netns_thread, _bind, spec.netns, spec.tcp_ports, spec.udp_ports
        )
        socks = tcp_socks + udp_socks
        # 0600 in 0700 directories: the access log holds what the pod's clients sent
        run = _Running(spec, open_private(spec.log_path, "a", buffering=1))
        self._pods[spec.key] = run
        try:
            for s in tcp_socks:
                run.servers.append(await asyncio.start_server(
                    lambda r, w, run=run: self._http(run, r, w), sock=s, limit=MAX_HEADER))
            for s in udp_socks:
                transport, _ = await loop.create_datagram_endpoint(lambda run=run: _Echo(run.log), sock=s)
                run.datagrams.append(transport)
            for i, argv in enumerate(spec.commands):
                await self._spawn(run, argv, spec.privileges_of(i))
        except BaseException:  # broad: undo a half-started workload (also on cancel), then re-raise
            for s in socks:
                s.close()
            await self.remove(spec.key)
            raise

    async def _spawn(self, run: _Running, argv: tuple[str, ...], privileges: tuple[str, ...]) -> None:
        run.log.write(f"[{time_local()}] start: {' '.join(argv)}\n")
        proc = await asyncio.create_subprocess_exec(
            # pdeathsig: if this daemon dies (even by SIGKILL) its commands die with it, so no
            # pod command outlives the process that owns it. Every step execs the next, so the
            # pid is the command's own.
            "setpriv", "--pdeathsig", "KILL", "--",
            *netns.exec_argv(run.spec.netns), *privileges, *argv,
            stdin=subprocess.DEVNULL, stdout=run.log.fileno(), stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it reaches its children
            cwd="/",
        )
        run.procs.append(proc)

        async def reap() -> None:
            code = await proc.wait()
            if not run.log.closed:
                run.log.write(f"[{time_local()}] exit {code}: {' '.join(argv)}\n")

        run.waiters.append(asyncio.ensure_future(reap()))

    async def remove(self, key: str) -> bool:
        """Stop the pod's workloads: close its sockets and connections, stop its commands."""
        run = self._pods.pop(key, None)
        if run is None:
            return False
        for srv in run.servers:
            srv.close()
        for t in run.datagrams:
            t.close()
        for w in list(run.conns):
            w.close()
        await asyncio.gather(*(self._stop(p) for p in run.procs))
        await asyncio.gather(*run.waiters, return_exceptions=True)
        for srv in run.servers:
            with contextlib.suppress(TimeoutError, OSError):  # closed already; a slow close is not waited for
                await asyncio.wait_for(srv.wait_closed(), 1)
        run.log.close()
        return True

    @staticmethod
    async def _stop(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        # The group id is the child's pid (new session): only processes we started are in it.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
                return
            except TimeoutError:
                continue

    async def close(self) -> None:
        for key in list(self._pods):
            await self.remove(key)
        self._netns_thread.shutdown(wait=True)

    async def _http(self, run: _Running, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(run.conns) >= MAX_CONNECTIONS:  # bounded per pod, as nginx's worker_connections
            writer.close()
            return
        run.conns.add(writer)
        peer = writer.get_extra_info("peername") or ("-", 0)
        local = writer.get_extra_info("sockname") or ("-", 0)
        try:
            for served in range(1, KEEPALIVE_REQUESTS + 1):
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), KEEPALIVE_TIMEOUT)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                        ConnectionError):
                    break
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                try:
                    req = parse_head(head, MAX_BODY)  # strict: 400 for anything malformed
                    await asyncio.wait_for(reader.readexactly(req.content_length), KEEPALIVE_TIMEOUT)
                except BadRequest:
                    await self._respond(run, writer, peer, request_line, {}, 400, "", False)
                    break
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    break
                keep = req.keep_alive and served < KEEPALIVE_REQUESTS
                body = hello_body(local[0], local[1], run.spec.name, req.target, secrets.token_hex(16))
                await self._respond(run, writer, peer, request_line, req.headers, 200,
                                    "" if req.method == "HEAD" else body, keep, len(body.encode()))
                if not keep:
                    break
        except ConnectionError:
            pass
        finally:
            run.conns.discard(writer)
            writer.close()

    @staticmethod
    async def _respond(run: _Running, writer: asyncio.StreamWriter, peer: tuple[str, int], request_line: str,
                       headers: dict[str, str], status: int, body: str, keep: bool,
                       length: int | None = None) -> None:
        data = body.encode()
        reason = {200: "OK", 400: "Bad Request"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\nServer: nginx\r\nDate: {formatdate(usegmt=True)}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(data) if length is None else length}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n"
            "Expires: Thu, 01 Jan 1970 00:00:01 GMT\r\nCache-Control: no-cache\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()
        referer = headers.get("referer", "-")
        agent = headers.get("user-agent", "-")
        if not run.log.closed:
            # nginx's "combined" access log format, escaped as nginx escapes it (no raw control bytes)
            run.log.write(f'{peer[0]} - - [{time_local()}] "{escape(request_line)}" {status} {len(data)} '
                          f'"{escape(referer)}" "{escape(agent)}"\n')


def check_ports(spec: PodWorkload) -> None:
    """Reject what a socket cannot bind before touching any namespace."""
    for p in (*spec.tcp_ports, *spec.udp_ports):
        if not 1 <= p <= 65535:
            raise LabError(f"{spec.key}: port {p} out of range")
