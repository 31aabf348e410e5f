"""The DNS proxy and the lab's DNS server talking over real sockets on the loopback (no root, no
redirect): UDP and TCP answers with the records' TTL, several queries on one TCP connection, a name
the rules do not allow answered REFUSED by the proxy itself, what the proxy learns and reports."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from cilia.lab import dns
from cilia.proxy.dns import msg as dnsmsg
from cilia.proxy.dns.proxy import DnsProxy
from cilia.proxy.records import DnsRecord

API, WEB = "198.19.0.5", "198.19.0.6"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dns.Server]:
    dns.add_record(tmp_path, "api.example.com", API, ttl=7)
    dns.add_record(tmp_path, "web.example.com", WEB)
    srv = dns.Server(dns.records_path(tmp_path), ("127.0.0.1", 0))
    stopped = threading.Event()
    t = threading.Thread(target=srv.run, args=(stopped,), daemon=True)
    t.start()
    yield srv
    stopped.set()
    t.join(timeout=3)


class Proxy:
    """The DNS proxy on the loopback, serving a host that allows ``*.example.com`` to everyone."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.learned: list[tuple[str, dict[str, int]]] = []
        self.reports: list[dict[str, Any]] = []
        self.origins: list[int] = []

        def origin(client: tuple[str, int], proxy: tuple[str, int], proto: int) -> tuple[str, int]:
            self.origins.append(proto)
            return upstream

        self.proxy = DnsProxy(("127.0.0.1", 0), Host(self), origin).start()
        self.port = self.proxy.bind[1]


class Host:
    """The agent's side of the proxy (:class:`cilia.proxy.host.DnsProxyHost`), recording."""

    def __init__(self, p: Proxy, rules: tuple[str, ...] | None = ("*.example.com",)) -> None:
        self.p, self.rules = p, rules

    def dns_rules(self, ip: str) -> tuple[str, ...] | None:
        return self.rules

    def learn(self, name: str, addresses: Mapping[str, int]) -> None:
        self.p.learned.append((name, dict(addresses)))

    def identity_of(self, ip: str) -> int:
        return 2

    def report(self, record: DnsRecord) -> None:
        fields = asdict(record)
        for k in ("time_ns", "latency_ns", "client", "client_identity", "server_identity"):
            del fields[k]
        for k in ("ips", "ttl", "refused", *(() if record.response else ("rcode",))):
            if not fields[k]:
                del fields[k]
        self.p.reports.append(fields)


@pytest.fixture
def proxy(server: dns.Server) -> Iterator[Proxy]:
    p = Proxy(server.address)
    yield p
    p.proxy.close()


def test_lab_server_answers_udp_and_tcp_with_the_names_ttl(server: dns.Server) -> None:
    host, port = server.address
    assert dns.resolve(host, "api.example.com", port=port) == (0, [API])
    assert dns.resolve(host, "API.example.com.", port=port, tcp=True) == (0, [API])
    assert dns.resolve(host, "nope.example.com", port=port, tcp=True) == (3, [])
    with socket.create_connection(server.address, timeout=3) as c:  # two queries, one connection
        answers = []
        for mid, name in ((1, "api.example.com"), (2, "web.example.com")):
            c.sendall(dnsmsg.frame(dnsmsg.query(mid, name)))
            answers.append(dnsmsg.parse(dnsmsg.read_framed(c) or b""))
    assert [(m.id, m.answers) for m in answers] == [
        (1, (("api.example.com", API, 7),)), (2, (("web.example.com", WEB, dns.DEFAULT_TTL),))]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_proxy_forwards_learns_and_reports(proxy: Proxy, server: dns.Server, tcp: bool) -> None:
    assert dns.resolve("127.0.0.1", "api.example.com", port=proxy.port, tcp=tcp) == (0, [API])
    assert dns.resolve("127.0.0.1", "evil.test", port=proxy.port, tcp=tcp) == (dnsmsg.RCODE_REFUSED, [])
    proto = socket.IPPROTO_TCP if tcp else socket.IPPROTO_UDP
    assert proxy.origins == [proto, proto]
    assert proxy.learned == [("api.example.com", {API: 7})]
    common = {"server": server.address, "proto": proto, "qtype": 1}
    assert proxy.reports == [
        {**common, "query": "api.example.com", "response": False},
        {**common, "query": "api.example.com", "response": True, "ips": (API,), "ttl": 7, "rcode": 0},
        {**common, "query": "evil.test", "response": True, "rcode": dnsmsg.RCODE_REFUSED, "refused": True},
    ]


def test_tcp_framing_errors() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"\x00\x10abc")
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(dnsmsg.DnsFormatError, match="inside a 16-byte message"):
            dnsmsg.read_framed(b)
    with pytest.raises(dnsmsg.DnsFormatError):
        dnsmsg.frame(b"x" * 70000)
    assert dnsmsg.type_name(28) == "AAAA" and dnsmsg.type_name(99) == "TYPE99"


def test_a_second_proxy_on_the_same_address_fails(proxy: Proxy) -> None:
    with pytest.raises(OSError):
        DnsProxy(("127.0.0.1", proxy.port), proxy.proxy.host, lambda *a: None)
