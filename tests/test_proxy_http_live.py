"""HAProxy as cilia runs it, without the kernel redirect: the same configuration in test mode (a
listener on 127.0.0.1 forwarding to a local HTTP server, the "original destination" a constant),
driven through the supervisor and the runtime API, its access log read back as records.

One HAProxy and one server for the module; each test loads the rules it needs."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cilia.policy.l7 import HeaderMatch, HTTPRule, L7Parser, L7PortPolicy, L7Rule
from cilia.policy.types import Direction, RuleRef
from cilia.proxy.http import runtime
from cilia.proxy.http.accesslog import AccessLogReader, HttpRecord, TlsRecord
from cilia.proxy.http.config import ProxyConfig, ProxyFiles, StaticDestination, render
from cilia.proxy.http.rules import PortPolicyAt, decision_map
from cilia.proxy.http.rules import render as render_rules
from cilia.proxy.http.supervisor import Supervisor

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")

POD = "198.18.0.12"  # the original destination the listener stands for (no packet goes there)
CLIENT_ID = 1001
REF = RuleRef("CiliumNetworkPolicy", "default", "l7", "ingress", 0)


class Echo(BaseHTTPRequestHandler):
    """Answers every request with the request's headers as JSON (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        if n:
            self.rfile.read(n)
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # connections HAProxy resets when it is killed on purpose


class Proxy:
    def __init__(self, tmp: Path) -> None:
        self.server = QuietServer(("127.0.0.1", 0), Echo)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port, self.tls_port = free_port(), free_port()
        self.tls_backend = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._tls_backend, daemon=True).start()
        # a run directory deeper than a unix socket path may be (a node's under pytest's temp dir):
        # HAProxy's API and log sockets go to a short directory named after it
        self.files = ProxyFiles(tmp / ("run-" + "d" * 80))
        assert self.files.socket_dir != self.files.run_dir and len(str(self.files.api_socket)) <= 90
        self.files.make_dirs()
        self.records: list[HttpRecord | TlsRecord] = []
        self.reader = AccessLogReader(self.files.log_socket, self.records.append).start()
        server = f"127.0.0.1:{self.server.server_address[1]}"
        static = StaticDestination(f"127.0.0.1:{self.port}", server, (POD, 80))
        tls_server = f"127.0.0.1:{self.tls_backend.getsockname()[1]}"
        tls = StaticDestination(f"127.0.0.1:{self.tls_port}", tls_server, (POD, 443))
        self.cfg = ProxyConfig(self.files, transparent=False,
                               static={("http", Direction.INGRESS): static, ("tls", Direction.INGRESS): tls})
        self.version = 0
        self.sup = Supervisor(self.cfg, render_rules([], 0, False), {"127.0.0.1/32": CLIENT_ID},
                              log_path=tmp / "haproxy.log").start()  # fmt: skip

    def _tls_backend(self) -> None:
        """Stands for the TLS server: answers the first bytes it gets (the ClientHello) with OK."""
        while True:
            try:
                conn, _ = self.tls_backend.accept()
            except OSError:
                return
            with conn:
                if conn.recv(65536):
                    conn.sendall(b"OK")

    def load(self, *rules: L7Rule, tls: tuple[L7Rule, ...] = ()) -> float:
        """Load a policy for the pod's port 80 (and TLS rules for 443); returns the seconds taken."""
        self.version += 1
        pols = [PortPolicyAt(POD, L7PortPolicy(Direction.INGRESS, 6, 80, L7Parser.HTTP, 15001, rules))]
        if tls:
            pols.append(PortPolicyAt(POD, L7PortPolicy(Direction.INGRESS, 6, 443, L7Parser.TLS, 15003, tls)))
        t0 = time.monotonic()
        self.sup.write_data(render_rules(pols, self.version, False), decisions=decision_map(pols))
        assert runtime.load_rules(self.files.api_socket, self.files.rules) == self.version
        runtime.replace_map_entries(self.files.api_socket, self.files.decide_map, decision_map(pols))
        return time.monotonic() - t0

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def close(self) -> None:
        self.tls_backend.close()
        self.sup.stop()
        self.reader.close()
        self.server.shutdown()
        self.server.server_close()
        self.files.remove_socket_dir()
        assert not self.files.socket_dir.exists(), "the socket directory is left behind"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    p = Proxy(tmp_path_factory.mktemp("haproxy"))
    try:
        yield p
    finally:
        p.close()


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def client_hello(sni: str) -> bytes:
    """The ClientHello a TLS client sends first, naming ``sni``."""
    ctx = ssl.create_default_context()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


def tls_passes(port: int, sni: str) -> bool:
    """Whether the proxy forwards a ClientHello naming ``sni`` (the backend answers OK) or closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(client_hello(sni))
        try:
            return s.recv(10) == b"OK"
        except ConnectionResetError:
            return False


def ask(c: http.client.HTTPConnection, method: str, path: str, **headers: str) -> tuple[int, bytes]:
    c.request(method, path, headers=headers)
    r = c.getresponse()
    return r.status, r.read()


def test_allowed_refused_and_the_connection_stays_usable(proxy: Proxy) -> None:
    rule = HTTPRule(method="GET", path="/public(/.*)?")
    proxy.load(L7Rule(frozenset({CLIENT_ID}), (rule,), refs=frozenset({REF})))
    c = proxy.conn()
    assert ask(c, "GET", "/public")[0] == 200
    sock = c.sock
    status, body = ask(c, "GET", "/private")
    assert (status, body) == (403, b"Access denied\r\n")
    assert ask(c, "POST", "/public")[0] == 403
    assert ask(c, "GET", "/public/a?b=1")[0] == 200
    assert ask(c, "GET", "/publicity")[0] == 403  # a whole-path match, not a prefix
    assert ask(c, "GET", "/PUBLIC")[0] == 403  # RE2 is case-sensitive unless the rule says (?i)
    assert c.sock is sock  # one connection throughout: a 403 does not close it
    c.close()


def test_other_identity_and_headers(proxy: Proxy) -> None:
    proxy.load(
        L7Rule(frozenset({CLIENT_ID + 1}), None, refs=frozenset({REF})),  # another peer: anything
        L7Rule(frozenset({CLIENT_ID}), (HTTPRule(path="/h", headers=(HeaderMatch("X-Token", "abc"),
                                                                      HeaderMatch("X-Present"))),),
               refs=frozenset({REF})),
    )  # fmt: skip
    c = proxy.conn()
    assert ask(c, "GET", "/h", **{"X-Token": "abc", "X-Present": ""})[0] == 200
    assert ask(c, "GET", "/h", **{"X-Token": "abcd", "X-Present": "1"})[0] == 403
    assert ask(c, "GET", "/h", **{"X-Token": "abc"})[0] == 403
    assert ask(c, "GET", "/other")[0] == 403
    # the ipcache says the client is the other peer now: everything passes
    runtime.replace_map(proxy.files.api_socket, proxy.files.ipcache_map, {"127.0.0.0/8": CLIENT_ID + 1})
    try:
        assert ask(c, "GET", "/other")[0] == 200
    finally:
        runtime.replace_map(proxy.files.api_socket, proxy.files.ipcache_map, {"127.0.0.1/32": CLIENT_ID})
    c.close()


def test_mismatch_actions_change_the_request(proxy: Proxy) -> None:
    proxy.load(L7Rule(None, (HTTPRule(headers=(
        HeaderMatch("X-Add", "added", mismatch="ADD"),
        HeaderMatch("X-Env", "prod", mismatch="REPLACE"),
        HeaderMatch("X-Del", "keep", mismatch="DELETE"),
        HeaderMatch("X-Log", "x", mismatch="LOG"),
    )),), refs=frozenset({REF})))  # fmt: skip
    c = proxy.conn()
    status, body = ask(c, "GET", "/", **{"X-Env": "dev", "X-Del": "other", "X-Log": "y"})
    seen = json.loads(body)
    assert status == 200
    assert (seen["x-add"], seen["x-env"], seen.get("x-del"), seen["x-log"]) == ("added", "prod", None, "y")
    status, body = ask(c, "GET", "/", **{"X-Add": "added", "X-Env": "prod", "X-Del": "keep"})
    seen = json.loads(body)
    assert (seen["x-add"], seen["x-env"], seen["x-del"]) == ("added", "prod", "keep")
    c.close()


def test_rule_change_reaches_an_open_keep_alive_connection(proxy: Proxy) -> None:
    proxy.load(L7Rule(None, (HTTPRule(method="GET", path="/a"),), refs=frozenset({REF})))
    c = proxy.conn()
    assert ask(c, "GET", "/a")[0] == 200
    assert ask(c, "GET", "/b")[0] == 403
    sock = c.sock
    proxy.load(L7Rule(None, (HTTPRule(method="GET", path="/b"),), refs=frozenset({REF})))
    assert ask(c, "GET", "/b")[0] == 200
    assert ask(c, "GET", "/a")[0] == 403
    assert c.sock is sock
    c.close()


def test_access_log_records(proxy: Proxy) -> None:
    # Cilium's path rules see the query string: "/logged" alone would refuse "/logged?q=…"
    rule = HTTPRule(method="GET", path="/logged(\\?.*)?")
    proxy.load(L7Rule(frozenset({CLIENT_ID}), (rule,), refs=frozenset({REF})))
    before = len(proxy.records)
    c = proxy.conn()
    ask(c, "GET", "/logged?q=1 2".replace(" ", "%20"), **{"X-Trace": "t 1"})
    ask(c, "DELETE", "/logged")
    c.close()
    deadline = time.monotonic() + 5

    def logged() -> list[HttpRecord]:  # lines arrive in bursts: earlier tests' lines may come late
        got = proxy.records[before:]
        return [r for r in got if isinstance(r, HttpRecord) and r.path.startswith("/logged")]

    while len(logged()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    ok, refused = logged()
    assert (ok.allowed, ok.status, ok.method, ok.path) == (True, 200, "GET", "/logged?q=1%202")
    assert ok.decided == (("ingress", True),)
    assert (ok.server, ok.client_identity, ok.protocol) == ((POD, 80), CLIENT_ID, "HTTP/1.1")
    assert ("x-trace", "t 1") in ok.headers
    assert (refused.allowed, refused.status, refused.method, refused.decided) == (False, 403, "DELETE",
                                                                                   (("ingress", False),))


def test_a_burst_of_requests_is_logged_once_each(proxy: Proxy) -> None:
    """Every request of a burst (4 connections × 500 pipelined requests, refused by HAProxy itself
    at its full speed) reaches the agent's reader exactly once: the access log is a ring forwarded
    over a stream, not datagrams that a busy reader lets the kernel drop."""
    proxy.load(L7Rule(frozenset({CLIENT_ID}), (HTTPRule(path="/public"),), refs=frozenset({REF})))
    n, conns = 500, 4

    def burst(k: int) -> int:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"".join(f"GET /burst-{k}-{i} HTTP/1.1\r\nHost: b\r\n\r\n".encode() for i in range(n)))
            got = b""
            while got.count(b"HTTP/1.1 403") < n:
                chunk = s.recv(1 << 16)
                assert chunk, "closed"
                got += chunk
            return got.count(b"HTTP/1.1 403")

    with ThreadPoolExecutor(conns) as pool:
        assert list(pool.map(burst, range(conns))) == [n] * conns
    want = {f"/burst-{k}-{i}" for k in range(conns) for i in range(n)}

    def logged() -> list[str]:
        got = list(proxy.records)
        return [r.path for r in got if isinstance(r, HttpRecord) and r.path.startswith("/burst-")]

    deadline = time.monotonic() + 10
    while len(logged()) < len(want) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # nothing more may come
    paths = logged()
    assert len(paths) == len(want) and set(paths) == want


def test_killed_proxy_is_restarted_with_its_rules(proxy: Proxy) -> None:
    proxy.load(L7Rule(None, (HTTPRule(path="/after-restart"),), refs=frozenset({REF})))
    old = proxy.sup.pid
    assert old is not None
    restarts = proxy.sup.restarts
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (proxy.sup.restarts == restarts or proxy.sup.pid in (None, old)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proxy.sup.pid not in (None, old)
    c = proxy.conn()
    assert ask(c, "GET", "/after-restart")[0] == 200  # the last rules, loaded at start
    assert ask(c, "GET", "/other")[0] == 403
    c.close()


def test_node_config_is_valid_for_haproxy(tmp_path: Path) -> None:
    files = ProxyFiles(tmp_path)
    files.ipcache_map.write_text("")
    files.decide_map.write_text("")
    cfg = ProxyConfig(files)  # transparent listeners, as on a node
    files.config.write_text(render(cfg))
    out = subprocess.run(["haproxy", "-c", "-f", str(files.config)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_tls_server_names_on_the_client_hello(proxy: Proxy) -> None:
    ref = RuleRef("CiliumNetworkPolicy", "default", "sni", "ingress", 0)
    proxy.load(tls=(L7Rule(frozenset({CLIENT_ID}), None, server_names=("*.example.com", "www.cilium.io"),
                           refs=frozenset({ref})),))  # fmt: skip
    assert tls_passes(proxy.tls_port, "api.example.com")
    assert tls_passes(proxy.tls_port, "WWW.Cilium.IO")
    assert not tls_passes(proxy.tls_port, "a.b.example.com")  # '*' stays within one label
    assert not tls_passes(proxy.tls_port, "evil.org")
    # another peer's rule does not apply to this client
    proxy.load(tls=(L7Rule(frozenset({CLIENT_ID + 1}), None, refs=frozenset({ref})),))
    assert not tls_passes(proxy.tls_port, "api.example.com")
    # every ClientHello is logged: the server name, the verdict, the policy evaluated
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        tls = [(r.sni, r.allowed, r.decided) for r in proxy.records if isinstance(r, TlsRecord)]
        if len(tls) >= 5:
            break
        time.sleep(0.05)
    assert tls[-5:] == [("api.example.com", True, (("ingress", True),)),
                        ("WWW.Cilium.IO", True, (("ingress", True),)),
                        ("a.b.example.com", False, (("ingress", False),)),
                        ("evil.org", False, (("ingress", False),)),
                        ("api.example.com", False, (("ingress", False),))]  # fmt: skip


def test_cilium_proxy_tables_decided_by_haproxy_as_by_the_engine(proxy: Proxy) -> None:
    """cilium/proxy's integration tables (tests/test_policy_l7_match.py) through HAProxy: every
    request decided as L7PortPolicy.decide_http decides it, header actions applied to the request."""
    from tests.test_policy_l7_match import BASIC_POLICY, BASIC_REQUESTS, HEADER_POLICY, HEADER_REQUESTS

    runtime.replace_map(proxy.files.api_socket, proxy.files.ipcache_map, {"127.0.0.1/32": 1})
    try:
        proxy.load(*BASIC_POLICY.rules)
        c = proxy.conn()
        for name, method, path, host, allowed in BASIC_REQUESTS:
            assert BASIC_POLICY.decide_http(1, method, path, host, {}).allowed is allowed
            assert ask(c, method, path, Host=host)[0] == (200 if allowed else 403), name
        proxy.load(*HEADER_POLICY.rules)
        for name, method, path, host, headers, allowed, actions in HEADER_REQUESTS:
            status, body = ask(c, method, path, Host=host, **headers)
            assert status == (200 if allowed else 403), name
            if not allowed:
                continue
            seen = json.loads(body)
            for a in actions:
                if a.action == "DELETE":
                    assert a.name not in seen, name
                else:
                    assert seen.get(a.name.lower()) == a.value, name
        c.close()
    finally:
        runtime.replace_map(proxy.files.api_socket, proxy.files.ipcache_map, {"127.0.0.1/32": CLIENT_ID})


def test_stop_stale_ends_only_the_nodes_own_haproxy(tmp_path: Path) -> None:
    """What `cilia down` does after an agent crash: the HAProxy named by the node's pid file is
    ended, and only if it runs this node's configuration."""
    from cilia.proxy.http.supervisor import stop_stale

    files = ProxyFiles(tmp_path / "proxy")
    files.run_dir.mkdir(mode=0o700)
    files.ipcache_map.write_text("")
    files.decide_map.write_text("")
    static = StaticDestination(f"127.0.0.1:{free_port()}", "127.0.0.1:9", (POD, 80))
    cfg = ProxyConfig(files, transparent=False, static={("http", Direction.INGRESS): static})
    files.config.write_text(render(cfg))
    orphan = subprocess.Popen(["haproxy", "-db", "-f", str(files.config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    other = subprocess.Popen(["sleep", "30"])
    try:
        # HAProxy's command line reads empty for a moment while it starts: wait until it is up
        deadline = time.monotonic() + 5
        while str(files.config).encode() not in Path(f"/proc/{orphan.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline and orphan.poll() is None
            time.sleep(0.01)
        files.pid.write_text(f"{other.pid}\n")  # a pid file naming another program: left alone
        assert not stop_stale(cfg) and other.poll() is None
        files.pid.write_text(f"{orphan.pid}\n")
        assert stop_stale(cfg)
        assert orphan.wait(5) is not None and not files.pid.exists()
    finally:
        for p in (orphan, other):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_every_thread_decides_with_the_last_loaded_rules(proxy: Proxy) -> None:
    """HAProxy runs a Lua state per thread; right after `cilia load` returns, requests on
    connections served by any thread are decided by the new rules."""
    conns = [proxy.conn() for _ in range(8)]  # spread over HAProxy's threads
    for rounds in range(4):
        allowed, refused = ("/a", "/b") if rounds % 2 == 0 else ("/b", "/a")
        proxy.load(L7Rule(None, (HTTPRule(path=allowed),), refs=frozenset({REF})))
        for c in conns:
            assert (ask(c, "GET", allowed)[0], ask(c, "GET", refused)[0]) == (200, 403), rounds
    for c in conns:
        c.close()


def test_a_proxy_port_in_use_is_a_clear_error() -> None:
    """Two nodes with one index in one namespace would share proxy ports: the second one's proxy
    does not start (its L7 ports fail closed) and says why."""
    from cilia.agent.l7proxy import check_ports_free, proxy_threads
    from cilia.proxy.http.supervisor import ProxyStartError

    taken = socket.create_server(("", 0))  # stands for the other node's listener (every address)
    try:
        port = taken.getsockname()[1]
        free = free_port()
        check_ports_free({("http", Direction.INGRESS): free}, 3)
        want = rf"http egress proxy port {port} of node index 3 is in use"
        with pytest.raises(ProxyStartError, match=want):
            check_ports_free({("http", Direction.INGRESS): free, ("http", Direction.EGRESS): port}, 3)
    finally:
        taken.close()
    assert [proxy_threads(n) for n in (1, 2, 4, 16)] == [1, 1, 2, 4]
