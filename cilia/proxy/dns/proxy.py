"""The DNS proxy of toFQDNs (semantics.md §7): UDP and TCP on one address; queries arrive
redirected by the datapath, ``origin(client, proxy, proto)`` says where each was sent. It answers
REFUSED for names the endpoint's DNS rules do not allow; otherwise it forwards the query to that
server over the same transport, has the agent learn the answer's addresses (:meth:`DnsProxyHost.learn`,
which returns once policy knows them) and only then returns the answer. Every query, answer and
refusal is reported (:meth:`ProxyHost.report`)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from cilia.identity.fqdn import name_matches
from cilia.proxy.dns import msg
from cilia.proxy.host import DnsProxyHost
from cilia.proxy.records import DnsRecord

log = logging.getLogger("cilia.proxy")

IP_FREEBIND = 15  # linux/in.h
UPSTREAM_TIMEOUT = 2.0
TCP_IDLE_S = 10.0  # a DNS-over-TCP client connection idle this long is closed

Origin = Callable[[tuple[str, int], tuple[str, int], int], "tuple[str, int] | None"]


def _min_ttls(resp: msg.Message) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, ip, ttl in resp.answers:
        out[ip] = min(ttl, out.get(ip, ttl))
    return out


class DnsProxy:
    """The DNS proxy on ``bind``, UDP and TCP, serving the agent ``host``."""

    def __init__(self, bind: tuple[str, int], host: DnsProxyHost, origin: Origin) -> None:
        self.bind = bind
        self.host, self.origin = host, origin
        self.sock = self._socket(socket.SOCK_DGRAM)
        self.bind = self.sock.getsockname()  # TCP on the same port, also when any port was asked for
        try:
            self.tcp = self._socket(socket.SOCK_STREAM)
        except OSError:
            self.sock.close()
            raise
        self.tcp.listen(64)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._udp_loop, name="cilia-dnsproxy", daemon=True),
                         threading.Thread(target=self._tcp_loop, name="cilia-dnsproxy-tcp", daemon=True)]

    def _socket(self, kind: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                # a restarted agent must not wait for TIME_WAIT; UDP goes without it, so a second
                # proxy on the same address fails loudly instead of silently sharing the port
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # The gateway address exists only once a pod (or world host) link carries it.
            s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            s.bind(self.bind)
            s.settimeout(0.2)
        except OSError:
            s.close()
            raise
        return s

    def start(self) -> DnsProxy:
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.sock.close()
        self.tcp.close()

    def _udp_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                out = self.handle(data, client, socket.IPPROTO_UDP, _forward_udp)
                if out is not None:
                    self.sock.sendto(out, client)
            except Exception:  # one bad query must not stop the proxy
                log.exception("dns proxy: query from %s", client)

    def _tcp_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, client = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn, client), name="cilia-dnsproxy-conn",
                             daemon=True).start()

    def _tcp_conn(self, conn: socket.socket, client: tuple[str, int]) -> None:
        """Queries on one connection, answered in order, until the client closes it or idles."""
        with conn:
            conn.settimeout(TCP_IDLE_S)
            while not self._stop.is_set():
                try:
                    data = msg.read_framed(conn)
                    if data is None:
                        return
                    out = self.handle(data, client, socket.IPPROTO_TCP, _forward_tcp)
                    if out is None:
                        return  # no answer to give: close, the client retries or gives up
                    conn.sendall(msg.frame(out))
                except (OSError, msg.DnsFormatError):
                    return
                except Exception:
                    log.exception("dns proxy: TCP query from %s", client)
                    return

    def allowed(self, client_ip: str, name: str) -> bool:
        """May the endpoint at ``client_ip`` resolve ``name``?"""
        patterns = self.host.dns_rules(client_ip)
        return patterns is not None and any(name_matches(name, p) for p in patterns)

    def handle(self, data: bytes, client: tuple[str, int], proto: int,
               forward: Callable[[bytes, tuple[str, int]], bytes | None]) -> bytes | None:
        """The answer to one query message from ``client`` (None: nothing to send back)."""
        server = self.origin(client, self.bind, proto)
        try:
            req = msg.parse(data)
        except msg.DnsFormatError:
            return None
        if server is None or req.question is None or req.is_response:
            return None
        name, qtype = req.question.name, req.question.qtype
        if not self.allowed(client[0], name):
            refused = msg.response(req, [], msg.RCODE_REFUSED)
            self._report(client, server, proto, name, qtype, response=True, rcode=msg.RCODE_REFUSED,
                         refused=True)
            return refused
        self._report(client, server, proto, name, qtype, response=False)
        t0 = time.monotonic_ns()
        answer = forward(data, server)
        if answer is None:
            return None  # the client retries or times out, as with a lost answer
        try:
            resp: msg.Message | None = msg.parse(answer)
        except msg.DnsFormatError:
            resp = None
        if resp is not None and resp.question is not None:
            ttls = _min_ttls(resp)
            if ttls:
                self.host.learn(resp.question.name, ttls)
            self._report(client, server, proto, name, qtype, response=True, ips=tuple(ttls),
                         ttl=min(ttls.values(), default=0), rcode=resp.rcode,
                         latency_ns=time.monotonic_ns() - t0)
        return answer

    def _report(self, client: tuple[str, int], server: tuple[str, int], proto: int, name: str, qtype: int,
                **fields: Any) -> None:
        try:
            record = DnsRecord(time.time_ns(), client=client, server=server, proto=proto,
                               client_identity=self.host.identity_of(client[0]),
                               server_identity=self.host.identity_of(server[0]), query=name, qtype=qtype,
                               **fields)
            self.host.report(record)
        except Exception:  # flows are for people watching; they must never fail a lookup
            log.exception("dns proxy: reporting a flow")


def _forward_udp(data: bytes, server: tuple[str, int]) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
        up.settimeout(UPSTREAM_TIMEOUT)
        up.sendto(data, server)
        try:
            answer, _ = up.recvfrom(4096)
        except TimeoutError:
            return None
    return answer


def _forward_tcp(data: bytes, server: tuple[str, int]) -> bytes | None:
    try:
        with socket.create_connection(server, timeout=UPSTREAM_TIMEOUT) as up:
            up.sendall(msg.frame(data))
            return msg.read_framed(up)
    except (OSError, msg.DnsFormatError):
        return None
