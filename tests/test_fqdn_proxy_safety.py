"""The DNS proxy against hostile servers, racing senders and malformed queries (issue 13 item 3),
over real sockets on the loopback (no root): it learns only under the name it checked against the
pod's rules (and CNAME chains from it), takes only the reply to its own query from the server the
pod addressed, refuses what it cannot check without a traceback, and one pod's lookup to a silent
server does not hold up another pod's."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from cilia.proxy.dns import msg
from cilia.proxy.dns import proxy as proxy_mod
from cilia.proxy.dns.proxy import DnsProxy
from cilia.proxy.records import DnsRecord

API, EDGE, EVIL = "198.19.0.5", "198.19.0.7", "198.19.0.66"
POD_A, POD_B = "127.0.0.2", "127.0.0.3"  # two "pods": loopback addresses of their own
FORMERR = 1

Reply = Callable[[bytes, tuple[str, int], socket.socket], None]


class Upstream:
    """A DNS server on the loopback whose answers the test scripts: ``reply(query, client, sock)``
    (None: silent). Counts what it received."""

    def __init__(self, reply: Reply | None) -> None:
        self.reply = reply
        self.received: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.address: tuple[str, int] = self.sock.getsockname()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append(data)
            if self.reply is not None:
                self.reply(data, client, self.sock)

    def close(self) -> None:
        self._stop.set()
        self._t.join(timeout=2)
        self.sock.close()


class Host:
    """The agent's side (:class:`cilia.proxy.host.DnsProxyHost`): every pod may ask for
    ``*.example.com``; what is learned and reported is recorded."""

    def __init__(self, rules: tuple[str, ...] = ("*.example.com",)) -> None:
        self.rules = rules
        self.learned: list[tuple[str, dict[str, int]]] = []
        self.reports: list[DnsRecord] = []

    def dns_rules(self, ip: str) -> tuple[str, ...] | None:
        return self.rules

    def learn(self, name: str, addresses: Mapping[str, int]) -> None:
        self.learned.append((name, dict(addresses)))

    def identity_of(self, ip: str) -> int:
        return 2

    def report(self, record: DnsRecord) -> None:
        self.reports.append(record)


def rr_a(name: str, ip: str, ttl: int = 60) -> bytes:
    head = struct.pack("!HHIH", msg.TYPE_A, msg.CLASS_IN, ttl, 4)
    return msg.encode_name(name) + head + socket.inet_aton(ip)


def rr_cname(name: str, target: str, ttl: int = 60) -> bytes:
    t = msg.encode_name(target)
    return msg.encode_name(name) + struct.pack("!HHIH", 5, msg.CLASS_IN, ttl, len(t)) + t


def reply_to(query: bytes, records: list[bytes], qname: str | None = None, mid: int | None = None) -> bytes:
    """A response to ``query`` with the answer records given (another question name or ID if asked)."""
    q = msg.parse(query)
    assert q.question is not None
    question = msg.encode_name(qname or q.question.name) + struct.pack("!HH", q.question.qtype, 1)
    header = struct.pack("!HHHHHH", q.id if mid is None else mid, 0x8180, 1, len(records), 0, 0)
    return header + question + b"".join(records)


def ask(proxy: DnsProxy, name: str, src: str = POD_A, timeout: float = 3.0,
        raw: bytes | None = None) -> msg.Message | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(timeout)
        s.sendto(raw if raw is not None else msg.query(0x4242, name), proxy.bind)
        try:
            data, _ = s.recvfrom(65535)
        except TimeoutError:
            return None
    return msg.parse(data)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy_mod, "UPSTREAM_TIMEOUT", 0.5)


def start(host: Host, servers: Mapping[str, tuple[str, int]] | tuple[str, int]) -> DnsProxy:
    """A proxy on the loopback; each query goes to the server its client's address maps to."""
    def origin(client: tuple[str, int], proxy: tuple[str, int], proto: int) -> tuple[str, int] | None:
        return servers if isinstance(servers, tuple) else servers.get(client[0])

    return DnsProxy(("127.0.0.1", 0), host, origin).start()


@pytest.fixture
def run() -> Iterator[Callable[..., tuple[DnsProxy, Upstream]]]:
    made: list[Any] = []

    def make(reply: Reply | None, host: Host) -> tuple[DnsProxy, Upstream]:
        up = Upstream(reply)
        made.append(up)
        p = start(host, up.address)
        made.append(p)
        return p, up

    yield make
    for x in reversed(made):
        x.close()


def test_learns_only_under_the_checked_name(run: Any, fast: None) -> None:
    """A reply for another name teaches nothing; A records outside the asked name's CNAME chain
    are not learned; the chain's addresses are learned under the name that was checked."""
    host = Host()

    def reply(q: bytes, client: tuple[str, int], sock: socket.socket) -> None:
        name = msg.parse(q).question.name  # type: ignore[union-attr]
        if name == "other.example.com":  # answers for a name the pod's rules would not allow
            sock.sendto(reply_to(q, [rr_a("evil.example.org", EVIL)], qname="evil.example.org"), client)
        else:
            sock.sendto(reply_to(q, [rr_cname(name, "edge.cdn.test"), rr_a("edge.cdn.test", EDGE, 30),
                                     rr_a("unrelated.test", EVIL)]), client)

    p, _ = run(reply, host)
    assert ask(p, "other.example.com", timeout=1.5) is None  # not the reply to this query: dropped
    answer = ask(p, "api.example.com")
    assert answer is not None and answer.rcode == 0
    assert host.learned == [("api.example.com", {EDGE: 30})]


def test_takes_only_the_reply_from_the_server_to_its_own_query(run: Any, fast: None) -> None:
    """A forged reply from another port, and one with another ID from the server itself, are
    ignored; the genuine reply that follows is the answer."""
    host = Host()

    def reply(q: bytes, client: tuple[str, int], sock: socket.socket) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as racer:
            racer.sendto(reply_to(q, [rr_a("api.example.com", EVIL)]), client)
        sock.sendto(reply_to(q, [rr_a("api.example.com", EVIL)], mid=(msg.parse(q).id + 1) & 0xFFFF), client)
        time.sleep(0.05)
        sock.sendto(reply_to(q, [rr_a("api.example.com", API)]), client)

    p, _ = run(reply, host)
    answer = ask(p, "api.example.com")
    assert answer is not None and [a for _, a, _ in answer.answers] == [API]
    assert host.learned == [("api.example.com", {API: 60})]


def test_more_than_one_question_is_refused(run: Any) -> None:
    host = Host()
    p, up = run(lambda q, c, s: s.sendto(reply_to(q, [rr_a("api.example.com", API)]), c), host)
    two = (struct.pack("!HHHHHH", 7, 0x0100, 2, 0, 0, 0) + msg.encode_name("api.example.com")
           + struct.pack("!HH", 1, 1) + msg.encode_name("evil.example.org") + struct.pack("!HH", 1, 1))
    answer = ask(p, "", raw=two)
    assert answer is not None and answer.id == 7 and answer.rcode in (FORMERR, msg.RCODE_REFUSED)
    assert up.received == [] and host.learned == []


def test_a_silent_server_does_not_hold_up_another_pods_lookup() -> None:
    """Pod A's query waits on a server that never answers (the proxy gives up after 2 s); pod B's
    lookup meanwhile is answered at once."""
    host = Host()
    silent = Upstream(None)
    good = Upstream(lambda q, c, s: s.sendto(reply_to(q, [rr_a("api.example.com", API)]), c))
    p = start(host, {POD_A: silent.address, POD_B: good.address})
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a:
            a.bind((POD_A, 0))
            a.sendto(msg.query(1, "slow.example.com"), p.bind)
            deadline = time.monotonic() + 2
            while not silent.received and time.monotonic() < deadline:
                time.sleep(0.01)
            assert silent.received
            t0 = time.monotonic()
            answer = ask(p, "api.example.com", src=POD_B)
            took = time.monotonic() - t0
        assert answer is not None and [a for _, a, _ in answer.answers] == [API]
        assert took < 1.0, f"pod B waited {took:.2f} s behind pod A's silent server"
    finally:
        p.close()
        silent.close()
        good.close()


def test_tcp_connections_are_bounded(run: Any) -> None:
    """Hundreds of idle connections do not each get a thread: the proxy closes what is over its
    bound, and its threads stay few."""
    p, _ = run(None, Host())
    before = threading.active_count()
    conns = [socket.create_connection(p.bind, timeout=2) for _ in range(300)]
    try:
        time.sleep(0.5)
        closed = 0
        for c in conns:
            c.settimeout(0.01)  # the proxy closed the excess ones 0.5 s ago: their EOF is there
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                closed += c.recv(1) == b""
        grown = threading.active_count() - before
        assert closed >= 300 - proxy_mod.MAX_TCP_CONNECTIONS, closed
        assert grown <= proxy_mod.MAX_TCP_CONNECTIONS + 2, grown
    finally:
        for c in conns:
            c.close()


def test_a_tcp_client_dripping_a_message_is_cut_off(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message must arrive whole within the idle time: a byte now and then does not hold the
    connection open."""
    monkeypatch.setattr(proxy_mod, "TCP_IDLE_S", 0.5)
    p, _ = run(None, Host())
    with socket.create_connection(p.bind, timeout=2) as c:
        c.sendall(b"\x00\x40")  # a 64-byte message is announced ...
        c.setblocking(False)
        cut = False
        for _ in range(12):  # ... and sent one byte every 0.25 s: 3 s in all
            time.sleep(0.25)
            try:
                cut = c.recv(1) == b""  # the proxy closed it
            except BlockingIOError:
                pass
            except ConnectionResetError:
                cut = True
            if cut:
                break
            try:
                c.send(b"\x00")
            except OSError:
                cut = True
                break
        assert cut


def _query_raw(name_bytes: bytes, mid: int = 9) -> bytes:
    return struct.pack("!HHHHHH", mid, 0x0100, 1, 0, 0, 0) + name_bytes + struct.pack("!HH", 1, 1)


BAD_QUERIES = {
    "root": _query_raw(b"\x00"),
    "non-ascii": _query_raw(b"\x03\xe9ab\x07example\x03com\x00"),
    "64-byte label": _query_raw(b"\x40" + b"a" * 64 + b"\x07example\x03com\x00"),
    "compression loop": _query_raw(b"\xc0\x0c"),
    "pointer forward": _query_raw(b"\xc0\x20" + b"\x00" * 30),
    "name over 255": _query_raw(b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00"),
    "64 KiB": _query_raw(msg.encode_name("api.example.com")) + b"\x00" * (65535 - 37),
    "no question": struct.pack("!HHHHHH", 9, 0x0100, 0, 0, 0, 0),
    "answers in a query": struct.pack("!HHHHHH", 9, 0x0100, 1, 1, 0, 0) + msg.encode_name("api.example.com")
    + struct.pack("!HH", 1, 1) + rr_a("api.example.com", EVIL),
}


@pytest.mark.parametrize("raw", list(BAD_QUERIES.values()), ids=list(BAD_QUERIES))
def test_bad_queries_are_refused_cleanly(raw: bytes) -> None:
    """Each is answered REFUSED or FORMERR with the query's ID, or dropped — never a traceback —
    and nothing is forwarded."""
    host = Host()
    forwarded: list[bytes] = []

    def forward(data: bytes, server: tuple[str, int], *_: Any) -> bytes | None:
        forwarded.append(data)
        return None

    p = DnsProxy(("127.0.0.1", 0), host, lambda *a: ("127.0.0.1", 53)).start()
    try:
        for proto in (socket.IPPROTO_UDP, socket.IPPROTO_TCP):
            out = p.handle(raw, (POD_A, 5353), proto, forward)
            if out is not None:
                answer = msg.parse(out)
                assert answer.id == 9 and answer.rcode in (FORMERR, msg.RCODE_REFUSED)
        assert forwarded == [] and host.learned == []
    finally:
        p.close()


def test_every_truncation_of_a_query_is_refused_cleanly() -> None:
    host = Host(("*",))
    p = DnsProxy(("127.0.0.1", 0), host, lambda *a: ("127.0.0.1", 53)).start()
    try:
        full = msg.query(9, "api.example.com")
        for n in range(len(full)):
            out = p.handle(full[:n], (POD_A, 5353), socket.IPPROTO_UDP, lambda *a: pytest.fail("forwarded"))
            assert out is None or msg.parse(out).rcode == FORMERR
    finally:
        p.close()


def test_a_label_with_a_dot_in_it_is_not_two_labels(run: Any) -> None:
    """``\\x0fapi.example.com`` is one label (a name under the root), not api.example.com: the rule
    for api.example.com does not let it through."""
    host = Host(("api.example.com",))
    p, up = run(lambda q, c, s: s.sendto(reply_to(q, [rr_a("api.example.com", EVIL)]), c), host)
    answer = ask(p, "", raw=_query_raw(b"\x0fapi.example.com\x00"))
    assert answer is not None and answer.rcode == msg.RCODE_REFUSED
    assert up.received == [] and host.learned == []
