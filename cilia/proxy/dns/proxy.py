"""The DNS proxy of toFQDNs (semantics.md §7): UDP and TCP on one port; queries arrive redirected
by the datapath. Transparently (``origin`` None, :mod:`cilia.proxy.transparent`): the datapath hands
them to the proxy's wildcard listeners unchanged, the original destination is the accepted socket's
own address (TCP) or the datagram's (``IP_RECVORIGDSTADDR``), and a UDP answer is sent from that
address; listening on ``0.0.0.0``, it listens on ``::`` too (IPv6-only sockets of their own), so
IPv6 queries are proxied as IPv4 ones are. Otherwise (the port-53 rewrite, IPv4 only)
``origin(client, proxy, proto)`` says where each was sent. It answers REFUSED for names the
endpoint's DNS rules do not allow; otherwise it forwards the query to that server over the same
transport, has the agent learn the answer's addresses (:meth:`DnsProxyHost.learn`, which returns
once policy knows them) and only then returns the answer. Every query, answer and refusal is
reported (:meth:`ProxyHost.report`).

What it reads is untrusted, from pods and from servers alike:

* Cheap checks come first (size, header, question count, origin); only then is the one question
  read. A query that cannot be checked gets FORMERR (NOTIMP for another opcode); a response sent
  to the proxy is dropped. Nothing is forwarded that was not checked.
* Each forwarded query has a socket of its own, connected to the server the pod addressed (UDP),
  or a connection of its own (TCP); only a reply with the query's ID and question is taken, other
  datagrams are ignored until the upstream timeout.
* Addresses are learned only under the name that was checked against the pod's rules: the A
  records of that name and of the CNAME chain from it, nothing else in the answer.
* Queries are served by a bounded pool of workers, a few in flight per client at most, so a pod
  whose server is silent holds up nobody else; TCP connections are bounded in number (in all and
  per client), and a message must arrive whole within the idle time.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cilia.identity.fqdn import name_matches
from cilia.proxy import transparent
from cilia.proxy.dns import msg
from cilia.proxy.host import DnsProxyHost
from cilia.proxy.records import DnsRecord

log = logging.getLogger("cilia.proxy")

IP_FREEBIND = 15  # linux/in.h
UPSTREAM_TIMEOUT = 2.0  # seconds a forwarded query waits for its reply
TCP_IDLE_S = 10.0  # a DNS-over-TCP connection idle this long is closed; a message must arrive within it
MAX_QUERY_BYTES = 1232  # a header, one name (<= 255 bytes) and an EDNS record fit with room to spare
WORKERS = 32  # threads forwarding UDP queries
MAX_IN_FLIGHT = 256  # UDP queries queued or being forwarded; beyond, a query is dropped (clients retry)
MAX_IN_FLIGHT_PER_CLIENT = 8
MAX_TCP_CONNECTIONS = 64
MAX_TCP_PER_CLIENT = 16
MAX_ADDITIONAL = 2  # an EDNS OPT record and one more; a plain query has nothing else

Origin = Callable[[tuple[str, int], tuple[str, int], int], "tuple[str, int] | None"]
IsReply = Callable[[bytes], bool]
Forward = Callable[[bytes, tuple[str, int], IsReply], "bytes | None"]


def learned_addresses(resp: msg.Message, name: str) -> dict[str, int]:
    """The addresses an answer gives ``name``: its A and AAAA records and those of the CNAME chain from it
    (address -> the smallest TTL it came with); every other record is ignored."""
    names = {name}
    for _ in range(len(resp.cnames)):
        grown = {t for owner, t, _ in resp.cnames if owner in names} - names
        if not grown:
            break
        names |= grown
    out: dict[str, int] = {}
    for owner, ip, ttl in resp.answers:
        if owner in names:
            out[ip] = min(ttl, out.get(ip, ttl))
    return out


def is_reply_to(q: msg.Header, question: msg.Question) -> IsReply:
    """Does a message answer the query: a response with its ID and its question (in any letter
    case)?"""
    def match(data: bytes) -> bool:
        try:
            h = msg.header(data)
            if h.id != q.id or not h.is_response or h.qdcount != 1:
                return False
            got, _ = msg.parse_question(data)
        except msg.DnsFormatError:
            return False
        return (got.name, got.qtype, got.qclass) == (question.name, question.qtype, question.qclass)
    return match


class DnsProxy:
    """The DNS proxy on ``bind``, UDP and TCP, serving the agent ``host``; transparent (the
    datapath's generic redirect) when ``origin`` is None."""

    def __init__(self, bind: tuple[str, int], host: DnsProxyHost, origin: Origin | None) -> None:
        self.bind = bind
        self.host, self.origin = host, origin
        self.upstream_timeout, self.tcp_idle_s = UPSTREAM_TIMEOUT, TCP_IDLE_S
        if origin is None:
            self.sock = transparent.udp_listener(bind[1], bind[0])
            self.sock.settimeout(0.2)
        else:
            self.sock = self._socket(socket.SOCK_DGRAM)
        self.bind = self.sock.getsockname()  # TCP on the same port, also when any port was asked for
        try:
            if origin is None:
                self.tcp = transparent.tcp_listener(self.bind[1], self.bind[0], backlog=128)
                self.tcp.settimeout(0.2)
            else:
                self.tcp = self._socket(socket.SOCK_STREAM)
                self.tcp.listen(128)
        except OSError:
            self.sock.close()
            raise
        # IPv6 queries (the node's transparent proxy: the rewriting path is IPv4): listeners of their
        # own on "::" beside the IPv4 ones; without them the datapath drops IPv6 DNS (fail closed)
        wildcard = origin is None and self.bind[0] == transparent.LISTEN_ADDRESS
        self.sock6, self.tcp6 = self._ipv6_listeners() if wildcard else (None, None)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}  # client address -> UDP queries queued or forwarding
        self._tcp_conns: dict[str, int] = {}  # client address -> open TCP connections
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="cilia-dnsproxy-worker")
        self._threads = [threading.Thread(target=self._udp_loop, args=(self.sock,), name="cilia-dnsproxy",
                                          daemon=True),
                         threading.Thread(target=self._tcp_loop, args=(self.tcp,), name="cilia-dnsproxy-tcp",
                                          daemon=True)]
        if self.sock6 is not None and self.tcp6 is not None:
            self._threads += [
                threading.Thread(target=self._udp_loop, args=(self.sock6,), name="cilia-dnsproxy6",
                                 daemon=True),
                threading.Thread(target=self._tcp_loop, args=(self.tcp6,), name="cilia-dnsproxy6-tcp",
                                 daemon=True)]

    def _ipv6_listeners(self) -> tuple[socket.socket | None, socket.socket | None]:
        """The transparent IPv6 UDP and TCP listeners on the proxy's port ((None, None) where the
        namespace has no IPv6: the proxy serves IPv4 alone)."""
        port = self.bind[1]
        try:
            udp = transparent.udp_listener(port, transparent.LISTEN_ADDRESS_V6, v6only=True)
        except OSError as e:
            log.warning("dns proxy: no IPv6 listener on port %d: %s", port, e)
            return None, None
        try:
            tcp = transparent.tcp_listener(port, transparent.LISTEN_ADDRESS_V6, backlog=128, v6only=True)
        except OSError as e:
            udp.close()
            log.warning("dns proxy: no IPv6 listener on port %d: %s", port, e)
            return None, None
        udp.settimeout(0.2)
        tcp.settimeout(0.2)
        return udp, tcp

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
            if t.is_alive():
                t.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for sock in (self.sock, self.tcp, self.sock6, self.tcp6):
            if sock is not None:
                sock.close()

    # -- UDP: one receiver, a bounded pool of workers ---------------------------------------------
    def _udp_loop(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            server: tuple[str, int] | None = None
            try:
                if self.origin is None:
                    data, client, server = transparent.recv_with_destination(sock, MAX_QUERY_BYTES + 1)
                    if server is None or server[1] == self.bind[1]:
                        continue  # sent to the proxy port itself, not redirected: nowhere to go
                else:
                    data, client = self.sock.recvfrom(MAX_QUERY_BYTES + 1)
            except (TimeoutError, ConnectionError):
                continue
            except OSError:
                return  # the socket is closed: the proxy is stopping
            if not self._admit(client[0]):
                continue  # too many of this client's (or everyone's) queries in flight: dropped
            try:
                self._pool.submit(self._serve_udp, data, client, server)
            except RuntimeError:  # the pool is shut down: the proxy is closing
                return

    def _admit(self, ip: str) -> bool:
        with self._lock:
            if (sum(self._in_flight.values()) >= MAX_IN_FLIGHT
                    or self._in_flight.get(ip, 0) >= MAX_IN_FLIGHT_PER_CLIENT):
                return False
            self._in_flight[ip] = self._in_flight.get(ip, 0) + 1
            return True

    def _release(self, counts: dict[str, int], ip: str) -> None:
        with self._lock:
            n = counts.get(ip, 0) - 1
            if n > 0:
                counts[ip] = n
            else:
                counts.pop(ip, None)

    def _serve_udp(self, data: bytes, client: tuple[str, int], server: tuple[str, int] | None) -> None:
        try:
            out = self.handle(data, client, socket.IPPROTO_UDP, self._forward_udp, server)
            if out is None or self._stop.is_set():
                return
            if server is not None:
                transparent.send_from(out, server, client)  # the answer comes from the server
            else:
                self.sock.sendto(out, client)
        except Exception:  # one bad query must not stop the proxy
            log.exception("dns proxy: query from %s", client)
        finally:
            self._release(self._in_flight, client[0])

    # -- TCP: bounded connections, each with an idle deadline -------------------------------------
    def _tcp_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, client = listener.accept()
            except (TimeoutError, ConnectionError):
                continue
            except OSError:
                return  # the socket is closed: the proxy is stopping
            with self._lock:
                full = (sum(self._tcp_conns.values()) >= MAX_TCP_CONNECTIONS
                        or self._tcp_conns.get(client[0], 0) >= MAX_TCP_PER_CLIENT)
                if not full:
                    self._tcp_conns[client[0]] = self._tcp_conns.get(client[0], 0) + 1
            if full:
                conn.close()  # over the bound: the client may try again later
                continue
            threading.Thread(target=self._tcp_conn, args=(conn, client), name="cilia-dnsproxy-conn",
                             daemon=True).start()

    def _tcp_conn(self, conn: socket.socket, client: tuple[str, int]) -> None:
        """Queries on one connection, answered in order, until the client closes it, idles, or
        takes longer than the idle time to send one message."""
        server = None
        if self.origin is None:
            server = transparent.original_destination(conn)
            if server[1] == self.bind[1]:
                conn.close()  # connected to the proxy port itself, not redirected
                self._release(self._tcp_conns, client[0])
                return
        try:
            with conn:
                while not self._stop.is_set():
                    try:
                        data = msg.read_framed(conn, time.monotonic() + self.tcp_idle_s)
                        if data is None:
                            return
                        out = self.handle(data, client, socket.IPPROTO_TCP, self._forward_tcp, server)
                        if out is None:
                            return  # no answer to give: close, the client retries or gives up
                        conn.settimeout(self.tcp_idle_s)
                        conn.sendall(msg.frame(out))
                    except (OSError, msg.DnsFormatError):
                        return
                    except Exception:  # broad: a bug on one connection is logged, the proxy serves on
                        log.exception("dns proxy: TCP query from %s", client)
                        return
        finally:
            self._release(self._tcp_conns, client[0])

    # -- forwarding ---------------------------------------------------------------------------------
    def _forward_udp(self, data: bytes, server: tuple[str, int], is_reply: IsReply) -> bytes | None:
        """Send the query from a socket of its own, connected to ``server`` (the kernel drops
        datagrams from anyone else), and wait for the reply to it."""
        deadline = time.monotonic() + self.upstream_timeout
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as up:
            try:
                up.connect(server)
                up.send(data)
                while (left := deadline - time.monotonic()) > 0:
                    up.settimeout(left)
                    answer = up.recv(msg.MAX_TCP_MESSAGE)
                    if is_reply(answer):
                        return answer
            except OSError:  # the timeout, or the server's port is closed (ICMP)
                return None
        return None

    def _forward_tcp(self, data: bytes, server: tuple[str, int], is_reply: IsReply) -> bytes | None:
        """The query on a connection of its own to ``server``; its first message must be the reply."""
        deadline = time.monotonic() + self.upstream_timeout
        try:
            with socket.create_connection(server, timeout=self.upstream_timeout) as up:
                up.sendall(msg.frame(data))
                answer = msg.read_framed(up, deadline)
        except (OSError, msg.DnsFormatError):
            return None
        return answer if answer is not None and is_reply(answer) else None

    # -- one query ------------------------------------------------------------------------------------
    def allowed(self, client_ip: str, name: str) -> bool:
        """May the endpoint at ``client_ip`` resolve ``name``?"""
        patterns = self.host.dns_rules(client_ip)
        return patterns is not None and any(name_matches(name, p) for p in patterns)

    def handle(self, data: bytes, client: tuple[str, int], proto: int, forward: Forward,
               server: tuple[str, int] | None = None) -> bytes | None:
        """The answer to one query message from ``client`` to ``server`` (default: ``origin``
        says; None: nothing to send back). ``forward(query, server, is_reply)`` returns the
        server's reply, one for which ``is_reply`` holds (None: none came in time)."""
        try:
            h = msg.header(data)
        except msg.DnsFormatError:
            return None
        if h.is_response:
            return None  # never answer an answer (no loops between proxies)
        if server is None and self.origin is not None:
            server = self.origin(client, self.bind, proto)
        if server is None:
            return None  # not redirected here by the datapath: there is nowhere to send it
        if (len(data) > MAX_QUERY_BYTES or h.qdcount != 1 or h.ancount or h.nscount
                or h.arcount > MAX_ADDITIONAL):
            return msg.error_response(h, msg.RCODE_FORMERR)
        if h.opcode != msg.OPCODE_QUERY:
            return msg.error_response(h, msg.RCODE_NOTIMP)
        try:
            question, _ = msg.parse_question(data)
        except msg.DnsFormatError:
            return msg.error_response(h, msg.RCODE_FORMERR)
        name, qtype = question.name, question.qtype
        if not self.allowed(client[0], name):
            self._report(client, server, proto, name, qtype, response=True, rcode=msg.RCODE_REFUSED,
                         refused=True)
            return msg.response(msg.Message(h.id, h.flags, question), [], msg.RCODE_REFUSED)
        self._report(client, server, proto, name, qtype, response=False)
        t0 = time.monotonic_ns()
        answer = forward(data, server, is_reply_to(h, question))
        if answer is None:
            return None  # the client retries or times out, as with a lost answer
        try:
            resp: msg.Message | None = msg.parse(answer)
        except msg.DnsFormatError:
            resp = None  # passed on as it came; nothing is learned from it
        if resp is not None:
            ttls = learned_addresses(resp, name) if resp.rcode == msg.RCODE_NOERROR else {}
            if ttls:
                self.host.learn(name, ttls)  # the checked name, never the answer's own words
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
