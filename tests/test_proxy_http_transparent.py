"""The node's HAProxy configuration in transparent mode (root), without cilia's datapath: three
network namespaces of the test's own (client, proxy node, server) and the kernel's nftables TPROXY
in the node namespace steering the client's port-80 connections to the egress listener, so that
what HAProxy does as a node's proxy is tested on its own — the original destination taken from the
socket, the onward connection from the client's own address (``usesrc clientip``: the server sees
the client), replies back through the proxy, 403 on the kept connection, and the egress listener
deciding the destination's ingress policy too (``both_at_egress``).

Everything (namespaces, veths, the nftables table, the policy routing) lives in the test's
namespaces and goes with them."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cilia.lab import netns
from cilia.policy.l7 import HTTPRule, L7Parser, L7PortPolicy, L7Rule
from cilia.policy.types import Direction, RuleRef
from cilia.proxy.http.accesslog import AccessLogReader, HttpRecord
from cilia.proxy.http.config import ProxyConfig, ProxyFiles
from cilia.proxy.http.rules import PortPolicyAt, decision_map
from cilia.proxy.http.rules import render as render_rules
from cilia.proxy.http.supervisor import Supervisor

pytestmark = pytest.mark.root

C, R, S = "cilia-l7t-client", "cilia-l7t-node", "cilia-l7t-server"
CLIENT, GATEWAY_C, GATEWAY_S, SERVER = "198.18.250.2", "198.18.250.1", "198.18.251.1", "198.18.251.2"
CLIENT_ID, SERVER_ID = 1000, 2000
EGRESS = RuleRef("CiliumNetworkPolicy", "default", "client-egress", "egress", 0)
INGRESS = RuleRef("CiliumNetworkPolicy", "default", "server-ingress", "ingress", 0)
NFT = f"""table ip cilia_l7t {{
  chain pre {{
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 1 accept
    iifname "cilia-l7t-c1" tcp dport 80 tproxy to {GATEWAY_C}:15002 meta mark set 1 accept
  }}
}}
"""
SERVER_PY = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        b = ('client ' + self.client_address[0]).encode()
        self.send_response(200); self.send_header('content-length', str(len(b))); self.end_headers()
        self.wfile.write(b)
    do_POST = do_GET
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    def handle_error(self, *a): pass
S(('0.0.0.0', 80), H).serve_forever()
"""


def sh(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True)


def topology() -> None:
    for ns in (C, R, S):
        netns.create(ns)
    for side, ns in (("c", C), ("s", S)):
        sh("ip", "link", "add", f"cilia-l7t-{side}0", "netns", ns, "type", "veth",
           "peer", "name", f"cilia-l7t-{side}1", "netns", R)  # fmt: skip
    for ns, dev, addr, gw in ((C, "cilia-l7t-c0", CLIENT, GATEWAY_C), (S, "cilia-l7t-s0", SERVER, GATEWAY_S)):
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "route", "add", "198.18.0.0/15", "via", gw)
    sh("ip", "-n", R, "addr", "add", f"{GATEWAY_C}/24", "dev", "cilia-l7t-c1")
    sh("ip", "-n", R, "addr", "add", f"{GATEWAY_S}/24", "dev", "cilia-l7t-s1")
    for dev in ("cilia-l7t-c1", "cilia-l7t-s1", "lo"):
        sh("ip", "-n", R, "link", "set", dev, "up")
    sh("ip", "netns", "exec", R, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "netns", "exec", R, "nft", "-f", "-", stdin=NFT)
    # replies and redirected packets marked 1 are delivered locally (to HAProxy's sockets)
    sh("ip", "-n", R, "rule", "add", "fwmark", "1", "lookup", "100")
    sh("ip", "-n", R, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")


class Node:
    def __init__(self, tmp: Path) -> None:
        self.files = ProxyFiles(tmp / "proxy")
        self.files.run_dir.mkdir(mode=0o700)
        self.records: list[HttpRecord] = []
        self.reader = AccessLogReader(self.files.log_socket, self.records.append).start()
        self.server = subprocess.Popen([*netns.exec_argv(S), sys.executable, "-c", SERVER_PY])
        get = (HTTPRule(method="GET"),)
        egress = L7PortPolicy(Direction.EGRESS, 6, 80, L7Parser.HTTP, 15002,
                              (L7Rule(frozenset({SERVER_ID}), get, refs=frozenset({EGRESS})),))  # fmt: skip
        ingress = L7PortPolicy(Direction.INGRESS, 6, 80, L7Parser.HTTP, 15001,
                               (L7Rule(frozenset({CLIENT_ID}), (HTTPRule(path="/both|/x"),),
                                       refs=frozenset({INGRESS})),))  # fmt: skip
        pols = [PortPolicyAt(CLIENT, egress), PortPolicyAt(SERVER, ingress)]
        rules = render_rules(pols, 1, True)
        cfg = ProxyConfig(self.files, bind_address=GATEWAY_C)  # the node's configuration, transparent
        with netns.entered(R):  # HAProxy starts in the node's namespace (a child of this thread)
            self.sup = Supervisor(cfg, rules, {f"{CLIENT}/32": CLIENT_ID, f"{SERVER}/32": SERVER_ID},
                                  log_path=tmp / "haproxy.log",
                                  decisions=decision_map(pols)).start()  # fmt: skip

    def close(self) -> None:
        self.sup.stop()
        self.reader.close()
        self.server.kill()
        self.server.wait()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n: Node | None = None
    try:
        topology()
        n = Node(tmp_path_factory.mktemp("transparent"))
        yield n
    finally:
        if n is not None:
            n.close()
        for ns in (C, R, S):
            if netns.exists(ns):
                netns.remove(ns)


def curl(*args: str) -> tuple[int, str]:
    out = subprocess.run([*netns.exec_argv(C), "curl", "-s", "-m", "3", "-w", "\n%{http_code}", *args],
                         capture_output=True)  # fmt: skip
    body, _, code = out.stdout.decode().rpartition("\n")
    return int(code or 0), body


def test_transparent_egress_and_ingress_decisions(node: Node) -> None:
    deadline = time.monotonic() + 5
    while curl(f"http://{SERVER}/x")[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)  # the server starting
    assert curl(f"http://{SERVER}/x") == (200, f"client {CLIENT}")  # the server sees the client itself
    assert curl(f"http://{SERVER}/both", "-X", "POST") == (403, "Access denied\r\n")  # the egress rule
    assert curl(f"http://{SERVER}/other")[0] == 403  # the server's ingress rule, decided at egress
    # one curl, two requests on one connection: the refused one does not close it
    code, body = curl(f"http://{SERVER}/other", f"http://{SERVER}/both")
    assert (code, body.endswith(f"client {CLIENT}")) == (200, True)
    time.sleep(0.3)
    decided = [(r.path, r.method, r.server, r.client_identity, r.server_identity, r.decided)
               for r in node.records]  # fmt: skip
    ids = (CLIENT_ID, SERVER_ID)
    assert ("/x", "GET", (SERVER, 80), *ids, (("egress", True), ("ingress", True))) in decided
    assert ("/both", "POST", (SERVER, 80), *ids, (("egress", False),)) in decided
    assert ("/other", "GET", (SERVER, 80), *ids, (("egress", True), ("ingress", False))) in decided
