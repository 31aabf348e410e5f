"""The DNS proxy listening transparently (root): a client namespace, the proxy's namespace and a
server's namespace of the test's own; an nftables TPROXY rule in the proxy's namespace stands in
for the datapath's ``bpf_sk_assign`` (both hand the packet to the wildcard listener unchanged).
The proxy learns where each query was going from its socket (UDP ``IP_RECVORIGDSTADDR``, TCP the
accepted socket's address), answers from the server's address, and refuses as before — over IPv4
and over IPv6 (the proxy's IPv6 listeners beside the IPv4 ones)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace

import pytest

from cilia.agent.fqdn import ROUTING_CHECK_S, FqdnState, keep_routing
from cilia.datapath.capabilities import Capability
from cilia.lab import dns, netns
from cilia.proxy import transparent
from cilia.proxy.dns import msg
from cilia.proxy.dns.proxy import DnsProxy
from cilia.proxy.records import DnsRecord

pytestmark = pytest.mark.root

CLIENT, PROXY_C, PROXY_S, SERVER = "198.19.250.2", "198.19.250.1", "198.19.251.1", "198.19.251.53"
CLIENT6, PROXY_C6 = "2001:2:0:250::2", "2001:2:0:250::1"
PROXY_S6, SERVER6 = "2001:2:0:251::1", "2001:2:0:251::53"
API = "198.19.0.5"
API6 = "2001:2::c613:5"  # API's IPv6 twin: the lab's server answers AAAA with it
PORT = 15053


class Host:
    def __init__(self) -> None:
        self.learned: list[tuple[str, dict[str, int]]] = []
        self.reports: list[DnsRecord] = []

    def dns_rules(self, ip: str) -> tuple[str, ...] | None:
        return ("*.example.com",) if ip in (CLIENT, CLIENT6) else None

    def learn(self, name: str, addresses: Mapping[str, int]) -> None:
        self.learned.append((name, dict(addresses)))

    def identity_of(self, ip: str) -> int:
        return 2

    def report(self, record: DnsRecord) -> None:
        self.reports.append(record)


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[DnsProxy, Host, str]]:
    tag = os.urandom(3).hex()
    c, p, s = (f"cilia-dnstp-{x}-{tag}" for x in "cps")
    made: list[str] = []
    stopped = threading.Event()
    proxy = None
    try:
        for ns in (c, p, s):
            netns.create(ns)
            made.append(ns)
            ip(ns, "link", "set", "lo", "up")
        ip(p, "link", "add", f"ciliatc{tag}", "type", "veth", "peer", "name", "eth0", "netns", c)
        ip(p, "link", "add", f"ciliats{tag}", "type", "veth", "peer", "name", "eth0", "netns", s)
        for ns, dev, addr in ((p, f"ciliatc{tag}", PROXY_C), (p, f"ciliats{tag}", PROXY_S),
                              (c, "eth0", CLIENT), (s, "eth0", SERVER)):
            ip(ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip(ns, "link", "set", dev, "up")
        for ns, dev, addr in ((p, f"ciliatc{tag}", PROXY_C6), (p, f"ciliats{tag}", PROXY_S6),
                              (c, "eth0", CLIENT6), (s, "eth0", SERVER6)):
            ip(ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
        ip(c, "route", "add", "198.19.251.0/24", "via", PROXY_C)
        ip(s, "route", "add", "198.19.250.0/24", "via", PROXY_S)
        ip(c, "-6", "route", "add", "2001:2:0:251::/64", "via", PROXY_C6)
        ip(s, "-6", "route", "add", "2001:2:0:250::/64", "via", PROXY_S6)
        transparent.install_routing(p)
        rules = "".join(
            f'table {fam} cilia_dnstp {{\n chain pre {{\n  type filter hook prerouting priority mangle;\n'
            f'  iifname "ciliatc{tag}" meta l4proto {{ tcp, udp }} th dport 53 '
            f'meta mark set {transparent.MARK_TO_PROXY:#x} tproxy to :{PORT}\n }}\n}}\n'
            for fam in ("ip", "ip6"))
        subprocess.run(["ip", "netns", "exec", p, "nft", "-f", "-"], input=rules, check=True, text=True,
                       capture_output=True)
        dns.add_record(tmp_path, "api.example.com", API, ttl=30)
        for addr in (SERVER, SERVER6):
            with netns.entered(s):
                server = dns.Server(dns.records_path(tmp_path), (addr, 53))
            threading.Thread(target=server.run, args=(stopped,), daemon=True).start()
        host = Host()
        with netns.entered(p):
            proxy = DnsProxy(("0.0.0.0", PORT), host, None).start()
        yield proxy, host, c
    finally:
        stopped.set()
        if proxy is not None:
            proxy.close()
        for ns in made:
            netns.remove(ns)


def resolve(ns: str, name: str, tcp: bool, server: str = SERVER,
            qtype: int = msg.TYPE_A) -> tuple[int, list[str]]:
    """Ask the server from the client's namespace; over UDP on a socket connected to the server,
    so only an answer from the server's own address and port is taken."""
    with netns.entered(ns):
        if tcp:
            return dns.resolve(server, name, timeout=3, tcp=True, qtype=qtype)
        s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.settimeout(3)
        s.connect((server, 53))
        s.send(msg.query(0x5151, name, qtype))
        answer = msg.parse(s.recv(4096))
    return answer.rcode, [a for _, a, _ in answer.answers]


@pytest.mark.parametrize("tcp,six", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["udp", "tcp", "udp6", "tcp6"])
def test_transparent_dns_proxy(lab: tuple[DnsProxy, Host, str], tcp: bool, six: bool) -> None:
    """Over IPv4, and over IPv6 to the proxy's IPv6 listeners (an AAAA query: the IPv6 answer is
    learned)."""
    _, host, client_ns = lab
    server, qtype, addr = (SERVER6, msg.TYPE_AAAA, API6) if six else (SERVER, msg.TYPE_A, API)
    # the answer comes back from the server's own address
    assert resolve(client_ns, "api.example.com", tcp, server, qtype) == (0, [addr])
    assert host.learned == [("api.example.com", {addr: 30})]
    assert resolve(client_ns, "evil.test", tcp, server, qtype) == (msg.RCODE_REFUSED, [])
    assert {(r.client[0], r.server, r.query, r.response) for r in host.reports} == {
        (CLIENT6 if six else CLIENT, (server, 53), name, response) for name, response in (
            ("api.example.com", False), ("api.example.com", True), ("evil.test", True))}
    assert host.learned == [("api.example.com", {addr: 30})]


def test_the_timer_puts_the_proxy_routing_back() -> None:
    """Another node's ``cilia down`` in the same namespace removes the shared policy routing; the
    agent's timer installs it again (checked every ROUTING_CHECK_S), in a namespace of the test's."""
    ns = f"cilia-dnstp-r-{os.urandom(3).hex()}"
    netns.create(ns)
    try:
        ip(ns, "link", "set", "lo", "up")
        rec = SimpleNamespace(datapath=SimpleNamespace(capabilities=frozenset({Capability.PROXY_REDIRECT})))
        state = FqdnState()
        with netns.entered(ns):
            assert keep_routing(rec, state, now=100.0)  # type: ignore[arg-type]
        assert transparent.routing_installed(ns)
        transparent.remove_routing(ns)
        with netns.entered(ns):
            assert not keep_routing(rec, state, now=101.0)  # type: ignore[arg-type]  # not due yet
            assert keep_routing(rec, state, now=100.0 + ROUTING_CHECK_S)  # type: ignore[arg-type]
            assert not keep_routing(rec, state, now=200.0)  # type: ignore[arg-type]  # there: nothing to do
        assert transparent.routing_installed(ns)
        ip(ns, "-6", "rule", "del", "priority", str(transparent.RULE_PRIORITY))  # IPv6's alone gone
        assert not transparent.routing_installed(ns)
        with netns.entered(ns):
            assert keep_routing(rec, state, now=300.0)  # type: ignore[arg-type]
        assert transparent.routing_installed(ns)
    finally:
        netns.remove(ns)
