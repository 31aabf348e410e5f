"""The generic proxy redirect, live: a policy entry with a proxy port sends the connection to the
node's transparent listener on that port, in both directions, and nothing listening = dropped.

A private node (its own network namespace, so its policy routing touches nothing else) with pods
A and B joined by veths as the lab joins pods, cilia's programs on the node-side veths, MapStates
built directly. The proxies are minimal Python transparent listeners (cilia.proxy.transparent)
run in the node's namespace: they accept with the original destination, connect onward with the
client's own address and relay one request. Only namespaces this test creates are involved.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers_bpf import private_datapath

from cilia.datapath import sim
from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.maps.events import PolicyEvent
from cilia.lab import netns
from cilia.observe.flow import Verdict
from cilia.observe.pipeline import FlowPipeline
from cilia.observe.render import compact
from cilia.policy.types import Direction, DropReason, Entry, Key, RuleRef
from cilia.proxy import transparent

pytestmark = pytest.mark.root

TCP, UDP = 6, 17
ING, EG = int(Direction.INGRESS), int(Direction.EGRESS)
SUFFIX = str(os.getpid() % 100000)
NODE, POD_A, POD_B = (f"cilia-tp{n}-{SUFFIX}" for n in ("n", "a", "b"))
GW, A, B = "198.18.250.1", "198.18.250.10", "198.18.250.20"
GW6, A6, B6 = "2001:2:0:fa::1", "2001:2:0:fa::10", "2001:2:0:fa::20"
EP_A, EP_B, ID_A, ID_B = 11, 12, 1100, 1200
EGRESS_PROXY, INGRESS_PROXY, UDP_PROXY, NOBODY = 15102, 15101, 15103, 15199


def rule(name: str, direction: str) -> frozenset[RuleRef]:
    return frozenset({RuleRef("CiliumNetworkPolicy", "default", name, direction, 0)})


def allow(name: str, direction: str, proxy_port: int = 0) -> Entry:
    return Entry(False, rule(name, direction), proxy_port)


POLICY_A = {  # A's egress towards B
    Key(ID_B, EG, TCP, 8080, 16): allow("http-egress", "egress", EGRESS_PROXY),
    Key(ID_B, EG, UDP, 5353, 16): allow("udp-egress", "egress", UDP_PROXY),
    Key(ID_B, EG, TCP, 8081, 16): allow("plain", "egress"),
    Key(ID_B, EG, TCP, 8082, 16): allow("nobody-listens", "egress", NOBODY),
    Key(ID_B, EG, TCP, EGRESS_PROXY, 16): allow("plain", "egress"),
}
POLICY_B = {  # B's ingress from A
    Key(ID_A, ING, TCP, 8080, 16): allow("from-a", "ingress"),
    Key(ID_A, ING, UDP, 5353, 16): allow("from-a", "ingress"),
    Key(ID_A, ING, TCP, 8081, 16): allow("http-ingress", "ingress", INGRESS_PROXY),
    Key(ID_A, ING, TCP, 8082, 16): allow("from-a", "ingress"),
    Key(ID_A, ING, TCP, EGRESS_PROXY, 16): allow("from-a", "ingress"),
}


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def ifindex(ns: str, name: str) -> int:
    return int(json.loads(ip("-n", ns, "-j", "link", "show", name))[0]["ifindex"])


@dataclass
class Proxy:
    """A minimal transparent proxy: accepts, connects onward from the client's address, relays one
    request and answers ``via <port>: <reply>``; records (client, original destination)."""

    port: int
    mark: int = 0
    udp: bool = False
    same_port: bool = False  # connect onward from the client's own port too (HAProxy's usesrc client)
    address: str = transparent.LISTEN_ADDRESS
    v6only: bool = False  # on "::": IPv6 alone, beside an IPv4 listener (as the node's proxies)
    seen: list[tuple[tuple[str, int], tuple[str, int] | None]] = field(default_factory=list)

    def start(self) -> Proxy:
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        assert ready.wait(5)
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # wakes the thread blocked on the socket (close would not)
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _run(self, ready: threading.Event) -> None:
        with netns.entered(NODE):  # the onward sockets are created in the node's namespace too
            listen = transparent.udp_listener if self.udp else transparent.tcp_listener
            self.sock = listen(self.port, self.address, v6only=self.v6only)
            ready.set()
            with contextlib.suppress(OSError):
                while True:
                    self._udp_once() if self.udp else self._tcp_once()

    def _tcp_once(self) -> None:
        conn, client = self.sock.accept()
        with conn:
            conn.settimeout(5)
            orig = transparent.original_destination(conn)
            self.seen.append(((client[0], client[1]), orig))
            port = client[1] if self.same_port else 0
            with transparent.connect_from(client[0], orig, port=port, mark=self.mark) as up:
                up.sendall(conn.recv(100))
                conn.sendall(f"via {self.port}: ".encode() + up.recv(100))

    def _udp_once(self) -> None:
        data, client, orig = transparent.recv_with_destination(self.sock)
        self.seen.append((client, orig))
        assert orig is not None
        with transparent.connect_from(client[0], orig, kind=socket.SOCK_DGRAM) as up:
            up.send(data)
            reply = up.recv(100)
        transparent.send_from(f"via {self.port}: ".encode() + reply, orig, client)


def serve_b() -> list[socket.socket]:
    """Servers in pod B that answer with the address they saw the client as."""
    socks = []
    with netns.entered(POD_B):
        for port in (8080, 8081, 8082, EGRESS_PROXY):
            s = socket.create_server((B, port))
            socks.append(s)
            threading.Thread(target=_tcp_server, args=(s,), daemon=True).start()
        for port in (8080, 8081, 8082, EGRESS_PROXY):
            s6 = socket.create_server((B6, port), family=socket.AF_INET6)
            socks.append(s6)
            threading.Thread(target=_tcp_server, args=(s6,), daemon=True).start()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((B, 5353))
        socks.append(u)
        threading.Thread(target=_udp_server, args=(u,), daemon=True).start()
    return socks


def _tcp_server(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            conn, peer = s.accept()
            with conn:
                conn.recv(100)
                conn.sendall(f"B saw {peer[0]}".encode())


def _udp_server(u: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            _, peer = u.recvfrom(100)
            u.sendto(f"B saw {peer[0]}".encode(), peer)


def tcp_from_a(port: int, timeout: float = 5, dst: str = B) -> str:
    with netns.entered(POD_A):
        s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(timeout)
        s.connect((dst, port))
        s.sendall(b"hello")
        return s.recv(100).decode()


def udp_from_a(port: int) -> str:
    with netns.entered(POD_A):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.settimeout(5)
        s.sendto(b"hello", (B, port))
        return s.recv(100).decode()


def events(dp: Datapath) -> list[PolicyEvent]:
    out: list[PolicyEvent] = []
    while dp.read_events(out.append, timeout_ms=0):
        pass
    return out


def _build_node() -> None:
    for ns in (NODE, POD_A, POD_B):
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
    subprocess.run(["ip", "netns", "exec", NODE, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                    "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                    "net.ipv6.conf.all.forwarding=1"], check=True)
    for pod, addr, addr6, host in ((POD_A, A, A6, f"lxctpa{SUFFIX}"), (POD_B, B, B6, f"lxctpb{SUFFIX}")):
        ip("-n", NODE, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod)
        ip("-n", NODE, "addr", "add", f"{GW}/32", "dev", host)
        ip("-n", NODE, "link", "set", host, "up")
        ip("-n", NODE, "route", "add", f"{addr}/32", "dev", host)
        ip("-n", pod, "addr", "add", f"{addr}/32", "dev", "eth0")
        ip("-n", pod, "link", "set", "eth0", "up")
        ip("-n", pod, "route", "add", f"{GW}/32", "dev", "eth0", "scope", "link")
        ip("-n", pod, "route", "add", "198.18.0.0/15", "via", GW, "dev", "eth0")  # no default route
        ip("-n", NODE, "addr", "add", f"{GW6}/128", "dev", host, "nodad")
        ip("-n", NODE, "route", "add", f"{addr6}/128", "dev", host)
        ip("-n", pod, "addr", "add", f"{addr6}/128", "dev", "eth0", "nodad")
        ip("-n", pod, "route", "add", f"{GW6}/128", "dev", "eth0")
        ip("-n", pod, "route", "add", "2001:2::/48", "via", GW6, "dev", "eth0")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Datapath]:
    tmp: Path = tmp_path_factory.mktemp("redirect")
    attached: list[int] = []
    servers: list[socket.socket] = []
    try:
        _build_node()
        transparent.install_routing(NODE)
        with private_datapath(tmp) as dp:
            try:
                for prefix, ident in ((A, ID_A), (B, ID_B), (A6, ID_A), (B6, ID_B)):
                    dp.upsert_ipcache(prefix, ident)
                dp.set_policy(EP_A, POLICY_A)
                dp.set_policy(EP_B, POLICY_B)
                with netns.entered(NODE):
                    for ep, ident, host in ((EP_A, ID_A, f"lxctpa{SUFFIX}"), (EP_B, ID_B, f"lxctpb{SUFFIX}")):
                        idx = ifindex(NODE, host)
                        dp.attach(idx, ep, ident)
                        attached.append(idx)
                servers = serve_b()
                yield dp
            finally:
                with netns.entered(NODE):  # ifindexes are the node's: detach there, never in ours
                    for idx in attached:
                        dp.detach(idx)
    finally:
        for s in servers:
            s.close()
        for ns in (POD_A, POD_B, NODE):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def test_routing_is_cilias_and_removed() -> None:
    scratch = f"cilia-tpr-{SUFFIX}"
    ip("netns", "add", scratch)
    try:
        ip("-n", scratch, "link", "set", "lo", "up")
        transparent.install_routing(scratch)
        transparent.install_routing(scratch)  # idempotent: one rule
        rules = ip("-n", scratch, "-4", "rule", "show")
        assert rules.count("fwmark 0xc1a/0xffff lookup 3098") == 1, rules
        assert transparent.routing_installed(scratch)
        assert "local default dev lo" in ip("-n", scratch, "-6", "route", "show", "table", "3098")
        assert "socket transparent 1 meta mark set 0x00000c1a" in subprocess.run(
            ["ip", "netns", "exec", scratch, "nft", "list", "table", "inet", "cilia_proxy"],
            capture_output=True, text=True, check=True).stdout
        assert len(transparent.remove_routing(scratch)) == 5
        assert not transparent.routing_installed(scratch) and "3098" not in ip("-n", scratch, "rule", "show")
    finally:
        ip("netns", "del", scratch)


def test_egress_redirect_tcp(node: Datapath) -> None:
    proxy = Proxy(EGRESS_PROXY).start()
    try:
        events(node)
        assert tcp_from_a(8080) == f"via {EGRESS_PROXY}: B saw {A}"  # B saw A's own address
        # B's own service on the proxy's port number is not taken by the node's wildcard listener
        assert tcp_from_a(EGRESS_PROXY) == f"B saw {A}"
        [(client, orig)] = proxy.seen
        assert client[0] == A and orig == (B, 8080)
        ev_all = events(node)
        ev = [e for e in ev_all if e.endpoint_id == EP_A and e.dport == 8080]
        assert [(e.redirected, e.proxy_port, e.direction, node.rules_for(e.cookie)) for e in ev] == [
            (True, EGRESS_PROXY, Direction.EGRESS, rule("http-egress", "egress"))]
        flow = FlowPipeline(rules_for=node.rules_for).ingest(ev[0])  # as `cilia observe` shows it
        assert flow.verdict is Verdict.REDIRECTED and flow.to_json()["verdict"] == "REDIRECTED"
        line = compact(flow)
        assert " REDIRECTED " in line and "CiliumNetworkPolicy default/http-egress egress[0]" in line, line
        # the proxy's onward connection was decided by B's ingress policy, as a flow from A
        assert [(e.endpoint_id, e.direction, e.src, e.allowed, node.rules_for(e.cookie))
                for e in ev_all if e.dport == 8080 and e.endpoint_id == EP_B] == [
            (EP_B, Direction.INGRESS, A, True, rule("from-a", "ingress"))]
    finally:
        proxy.stop()


def test_egress_redirect_tcp_ipv6(node: Datapath) -> None:
    proxy = Proxy(EGRESS_PROXY, address="::").start()  # dual-stack: IPv4 and IPv6 redirects
    try:
        assert tcp_from_a(8080, dst=B6) == f"via {EGRESS_PROXY}: B saw {A6}"
        assert tcp_from_a(8080) == f"via {EGRESS_PROXY}: B saw {A}"
        assert [(c[0], orig) for c, orig in proxy.seen] == [
            (A6, (B6, 8080)), (f"::ffff:{A}", (f"::ffff:{B}", 8080))]
    finally:
        proxy.stop()


def test_egress_redirect_udp(node: Datapath) -> None:
    proxy = Proxy(UDP_PROXY, udp=True).start()
    try:
        assert udp_from_a(5353) == f"via {UDP_PROXY}: B saw {A}"
        [(client, orig)] = proxy.seen
        assert client[0] == A and orig == (B, 5353)
    finally:
        proxy.stop()


def test_ingress_redirect_tcp(node: Datapath) -> None:
    proxy = Proxy(INGRESS_PROXY, mark=transparent.MARK_PROXY_INGRESS).start()
    try:
        events(node)
        assert tcp_from_a(8081) == f"via {INGRESS_PROXY}: B saw {A}"
        [(client, orig)] = proxy.seen
        assert client[0] == A and orig == (B, 8081)
        ev = [e for e in events(node) if e.endpoint_id == EP_B and e.dport == 8081]
        # A's connection is redirected; the proxy's onward one (from A's address, marked as an
        # ingress proxy's) is decided by B's ingress policy and goes to B
        assert [(e.redirected, e.proxy_port, e.direction, e.src, node.rules_for(e.cookie)) for e in ev] == [
            (True, INGRESS_PROXY, Direction.INGRESS, A, rule("http-ingress", "ingress")),
            (False, 0, Direction.INGRESS, A, rule("http-ingress", "ingress"))]
    finally:
        proxy.stop()
    # nothing listens any more: the next connection is dropped, not forwarded to B
    with pytest.raises(OSError):
        tcp_from_a(8081, timeout=1.5)
    assert any(e.reason is DropReason.PROXY_LOOKUP_FAILED and e.direction is Direction.INGRESS
               for e in events(node))


def test_ingress_redirect_onward_from_the_clients_own_port(node: Datapath) -> None:
    """An ingress proxy without a mark that connects on from the client's own address and port is
    recognised by conntrack (a node socket on the tuple it redirected) and not redirected again."""
    proxy = Proxy(INGRESS_PROXY, same_port=True).start()
    try:
        for _ in range(2):
            assert tcp_from_a(8081) == f"via {INGRESS_PROXY}: B saw {A}"
        assert [orig for _, orig in proxy.seen] == [(B, 8081)] * 2
    finally:
        proxy.stop()


def test_nothing_listening_fails_closed(node: Datapath) -> None:
    events(node)
    with pytest.raises(OSError):  # B listens on 8082, but the connection must not reach it directly
        tcp_from_a(8082, timeout=1.5)
    dropped = [e for e in events(node) if e.reason is DropReason.PROXY_LOOKUP_FAILED]
    assert dropped and all(e.endpoint_id == EP_A and e.dport == 8082 for e in dropped)
    counts = node.metrics_map.counts()
    assert counts[("egress", "dropped", "Proxy lookup failed")] >= 1


def test_ipv6_redirects_as_ipv4_kernel_equals_sim(node: Datapath) -> None:
    """The same L7 connections over IPv4 and IPv6 (egress proxy, ingress proxy, a proxy port with
    no listener, a plain port): what the kernel does equals what the sim's redirect predicts from
    the same MapStates (redirected to which proxy, or dropped with PROXY_LOOKUP_FAILED), and the
    IPv6 outcome equals the IPv4 one."""
    listening = {EGRESS_PROXY, INGRESS_PROXY}
    mark = transparent.MARK_PROXY_INGRESS
    proxies = [Proxy(EGRESS_PROXY).start(), Proxy(EGRESS_PROXY, address="::", v6only=True).start(),
               Proxy(INGRESS_PROXY, mark=mark).start(),
               Proxy(INGRESS_PROXY, mark=mark, address="::", v6only=True).start()]
    try:
        outcomes: dict[str, list[str]] = {}
        for client, server in ((A, B), (A6, B6)):
            events(node)
            outcomes[client] = []
            for port in (8080, 8081, 8082, EGRESS_PROXY):
                eg, eg_port = sim.redirect(sim.policy_lookup(POLICY_A, ID_B, EG, TCP, port), listening)
                # an egress proxy's onward connection is decided at B but not redirected again
                ing, ing_port = sim.redirect(sim.policy_lookup(POLICY_B, ID_A, ING, TCP, port),
                                             () if eg_port else listening)
                want = "dropped"
                if eg.allowed and (ing.allowed or eg_port):
                    want = "".join(f"via {p}: " for p in (eg_port, ing_port) if p) + f"B saw {client}"
                try:
                    seen = tcp_from_a(port, timeout=0.5, dst=server)
                except OSError:
                    seen = "dropped"
                assert seen == want, (client, port)
                ev = [e for e in events(node) if e.endpoint_id == EP_A and e.dport == port]
                # the kernel reports the redirect (to a listener or to none), then a failed one's drop
                assert (ev[0].redirected, ev[0].proxy_port) == (bool(eg_port), eg_port), (client, port)
                assert (eg.reason is DropReason.PROXY_LOOKUP_FAILED) == any(
                    e.reason is DropReason.PROXY_LOOKUP_FAILED for e in ev), (client, port)
                outcomes[client].append(seen.replace(client, "<client>"))
        assert outcomes[A] == outcomes[A6] == [
            f"via {EGRESS_PROXY}: B saw <client>", f"via {INGRESS_PROXY}: B saw <client>", "dropped",
            "B saw <client>"]
    finally:
        for p in proxies:
            p.stop()
