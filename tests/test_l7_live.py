"""HTTP rules on a live node (root): the datapath redirects connections whose policy entry has a
proxy port to the node's HAProxy, which decides every request — curl from lab pods gets 200, the
proxy's 403, or (a peer the L4 policy does not allow) a drop. Ingress rules, egress rules and both
on one connection, over IPv4 and IPv6; header rules (a Secret's value too); whole-path matches; a
policy change reaches an open keep-alive connection; HAProxy killed → L7 ports fail closed, then recover;
every request an L7 flow.

One node for the module (index 6: its own pod range and gateway); each test applies the one policy
it needs (same name, replaced) and the pods stay."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cilia.datapath.dualstack import ipv6_of
from cilia.lab import netns
from tests.helpers_world import LiveNode, cnp, live_node, pod

pytestmark = pytest.mark.root

NODE_INDEX = 6
# this node's HTTP ingress listener (cilia.agent.l7proxy.node_proxy_ports: 15001 + 100 × index)
HTTP_INGRESS_PORT = 15001 + 100 * NODE_INDEX
CURL = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    base = tmp_path_factory.mktemp("l7")
    n = LiveNode(base, NODE_INDEX)
    for live in live_node(base, n):
        live.apply(pod("l7-client", {"app": "l7-client"}), pod("l7-other", {"app": "l7-other"}),
                   pod("l7-server", {"app": "l7-server"}))  # fmt: skip
        yield live


def ips(node: LiveNode) -> dict[str, str]:
    return node.ips()


def netns_of(node: LiveNode, name: str) -> str:
    items = json.loads(node.cilia("get", "pods", "-o", "json").stdout)["items"]
    return next(i["status"]["cilia"]["netns"] for i in items if i["metadata"]["name"] == name)


def http(node: LiveNode, src: str, url: str, *args: str) -> int:
    """The HTTP status curl gets from pod ``src`` (0: no answer, e.g. dropped)."""
    out = node.cilia("exec", src, "--", *CURL, *args, url, check=False)
    return int(out.stdout) if out.stdout.strip().isdigit() else 0


def http_each(node: LiveNode, src: str, *requests: tuple[str, ...]) -> list[int]:
    """The HTTP status of each request (``(url, *curl args)``) from pod ``src``, sent by one curl
    (``--next`` between them: one ``cilia exec``; 0: no answer)."""
    argv = ["curl"]
    for url, *args in requests:
        argv += [*(["--next"] if len(argv) > 1 else []), *CURL[1:], "-w", "%{http_code}\\n", *args, url]
    out = node.cilia("exec", src, "--", *argv, check=False).stdout.split()
    return [int(code) for code in out] + [0] * (len(requests) - len(out))


def ingress_rule(http_rules: list[dict[str, Any]], peer: str = "l7-client") -> dict[str, Any]:
    ports = [{"port": "80", "protocol": "TCP"}]
    to_ports = [{"ports": ports, "rules": {"http": http_rules}}]
    return {"fromEndpoints": [{"matchLabels": {"app": peer}}], "toPorts": to_ports}


def server_policy(*rules: dict[str, Any]) -> dict[str, Any]:
    return cnp("l7-server", {"endpointSelector": {"matchLabels": {"app": "l7-server"}},
                             "ingress": list(rules)})  # fmt: skip


def client_policy(http_rules: list[dict[str, Any]]) -> dict[str, Any]:
    ports = [{"port": "80", "protocol": "TCP"}]
    return cnp("l7-client", {"endpointSelector": {"matchLabels": {"app": "l7-client"}}, "egress": [
        {"toEndpoints": [{"matchLabels": {"app": "l7-server"}}],
         "toPorts": [{"ports": ports, "rules": {"http": http_rules}}]}]})  # fmt: skip


def settle(node: LiveNode, src: str, url: str, want: int, *args: str, limit: float = 10.0) -> int:
    """Ask until the answer is ``want`` (the agent applies a policy asynchronously)."""
    deadline = time.monotonic() + limit
    got = http(node, src, url, *args)
    while got != want and time.monotonic() < deadline:
        time.sleep(0.2)
        got = http(node, src, url, *args)
    return got


def observe(node: LiveNode, *args: str) -> list[dict[str, Any]]:
    out = node.cilia("observe", "--protocol", "http", *args, "-o", "json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_ingress_http_rules(node: LiveNode) -> None:
    server = f"http://{ips(node)['l7-server']}"
    node.apply(server_policy(ingress_rule([
        {"method": "GET", "path": "/public(/.*)?"},
        {"method": "POST", "path": "/submit", "headers": ["X-Token: s3cret"]},
    ])))  # fmt: skip
    assert settle(node, "l7-client", f"{server}/public", 200) == 200
    assert http(node, "l7-client", f"{server}/public/a?b=1") == 200
    assert http(node, "l7-client", f"{server}/private") == 403
    assert http(node, "l7-client", f"{server}/publicity") == 403  # the whole path must match
    assert http(node, "l7-client", f"{server}/public", "-X", "DELETE") == 403
    assert http(node, "l7-client", f"{server}/submit", "-X", "POST", "-H", "X-Token: s3cret") == 200
    assert http(node, "l7-client", f"{server}/submit", "-X", "POST", "-H", "X-Token: other") == 403
    assert http(node, "l7-other", f"{server}/public") == 0  # not allowed at L4: dropped, no answer
    # over IPv6 (the pods' twins): the same proxy decides, on its IPv6 listener
    server6 = f"http://[{ipv6_of(ips(node)['l7-server'])}]"
    assert http_each(node, "l7-client", (f"{server6}/public", "-6", "-g"), (f"{server6}/private", "-6", "-g")
                     ) == [200, 403]  # fmt: skip

    flows = observe(node, "--to-pod", "default/l7-server")
    client6 = ipv6_of(ips(node)["l7-client"])
    assert {(f["IP"]["source"], f["source"]["pod_name"], f["verdict"],
             f["l7"]["http"]["url"].rsplit("/", 1)[-1]) for f in flows if f["IP"]["ipVersion"] == "IPv6"} == {
        (client6, "l7-client", "FORWARDED", "public"), (client6, "l7-client", "DROPPED", "private")}
    seen = {(f["l7"]["http"]["method"], f["l7"]["http"]["url"].split("/", 3)[-1], f["verdict"])
            for f in flows}  # fmt: skip
    assert ("GET", "public", "FORWARDED") in seen and ("GET", "private", "DROPPED") in seen, seen
    refused = next(f for f in flows if f["verdict"] == "DROPPED")
    assert refused["traffic_direction"] == "INGRESS" and refused["l7"]["http"]["code"] == 403
    assert [p["name"] for p in refused["ingress_denied_by"]] == ["l7-server"]
    allowed = next(f for f in flows if f["verdict"] == "FORWARDED")
    assert [p["name"] for p in allowed["ingress_allowed_by"]] == ["l7-server"]
    assert allowed["source"]["pod_name"] == "l7-client"  # the server saw the client's own address

    # headerMatches with a Secret: the header must equal the Secret's value (base64 "s3cr3t-v"),
    # not the inline value the rule also carries
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "l7-key", "namespace": "default"},
              "data": {"value": "czNjcjN0LXY="}}  # fmt: skip
    match = {"name": "X-Key", "value": "inline", "secret": {"namespace": "default", "name": "l7-key"}}
    node.apply(secret, server_policy(ingress_rule([{"path": "/secret", "headerMatches": [match]}])))
    assert settle(node, "l7-client", f"{server}/secret", 200, "-H", "X-Key: s3cr3t-v") == 200
    assert http(node, "l7-client", f"{server}/secret", "-H", "X-Key: inline") == 403
    assert http(node, "l7-client", f"{server}/secret") == 403


def test_egress_and_both(node: LiveNode) -> None:
    server = f"http://{ips(node)['l7-server']}"
    node.apply(server_policy(ingress_rule([{"path": "/both.*"}])))
    node.apply(client_policy([{"method": "GET"}]))
    assert settle(node, "l7-client", f"{server}/both", 200) == 200
    assert http(node, "l7-client", f"{server}/both", "-X", "POST") == 403  # the client's egress rule
    assert http(node, "l7-client", f"{server}/other") == 403  # the server's ingress rule
    server6 = f"http://[{ipv6_of(ips(node)['l7-server'])}]"  # the same over IPv6
    assert http_each(node, "l7-client", (f"{server6}/both", "-6", "-g"),
                     (f"{server6}/both", "-6", "-g", "-X", "POST"), (f"{server6}/other", "-6", "-g")
                     ) == [200, 403, 403]  # fmt: skip
    flows = observe(node, "--from-pod", "default/l7-client", "--http-path", "^/(both|other)$")
    decided = [(f["traffic_direction"], f["verdict"], f["l7"]["http"]["method"], f["l7"]["http"]["url"][-5:])
               for f in flows]  # fmt: skip
    assert ("EGRESS", "DROPPED", "POST", "/both") in decided, decided
    assert ("EGRESS", "FORWARDED", "GET", "other") in decided
    assert ("INGRESS", "DROPPED", "GET", "other") in decided
    node.cilia("delete", "cnp", "l7-client")


class KeepAlive:
    """One keep-alive HTTP connection from the client pod's namespace, opened by this process."""

    def __init__(self, ns: str, ip: str) -> None:
        with netns.entered(ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(3)
        self.sock.connect((ip, 80))

    def get(self, path: str) -> int:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: l7-server\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        lengths = [int(h.split(b":")[1]) for h in lines if h.lower().startswith(b"content-length")]
        length = lengths[0] if lengths else 0
        while len(body) < length:
            body += self.sock.recv(65536)
        return int(head.split()[1])


def test_policy_change_reaches_an_open_keep_alive_connection(node: LiveNode) -> None:
    server_ip = ips(node)["l7-server"]
    node.apply(server_policy(ingress_rule([{"path": "/a"}])))
    assert settle(node, "l7-client", f"http://{server_ip}/a", 200) == 200
    conn = KeepAlive(netns_of(node, "l7-client"), server_ip)
    try:
        assert (conn.get("/a"), conn.get("/b")) == (200, 403)
        node.apply(server_policy(ingress_rule([{"path": "/b"}])))
        deadline = time.monotonic() + 10
        while conn.get("/b") != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (conn.get("/b"), conn.get("/a")) == (200, 403)  # the same connection, the new rules
    finally:
        conn.sock.close()


def _alive(pid: int) -> bool:
    """Any thread of the process still running. The group leader's own state is not enough: after
    SIGKILL the leader is a zombie ("Z") while HAProxy's other thread may still be exiting and holds
    the shared fd table, so its listeners still complete handshakes in the kernel (seen here: a
    connect to the L7 port succeeded right after the leader turned "Z")."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for t in tasks:
        try:
            if (t / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except OSError:
            continue
    return False


def _listening(port: int) -> bool:
    """Does a TCP socket of this (the node's) namespace listen on ``port``?"""
    tables = ("/proc/net/tcp", "/proc/net/tcp6")
    lines = [ln.split() for t in tables for ln in Path(t).read_text().splitlines()[1:]]
    return any(f[1].rsplit(":", 1)[1] == f"{port:04X}" and f[3] == "0A" for f in lines)


def connects(ns: str, ip: str) -> bool:
    """Whether a TCP connection from namespace ``ns`` to ip:80 is answered within 2 s."""
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((ip, 80))
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_killed_proxy_fails_closed_then_recovers(node: LiveNode) -> None:
    server_ip = ips(node)["l7-server"]
    node.apply(server_policy(ingress_rule([{"path": "/.*"}])))
    assert settle(node, "l7-client", f"http://{server_ip}/x", 200) == 200
    client_ns = netns_of(node, "l7-client")
    pid_file = node.cfg.run_dir / "proxy" / "haproxy.pid"
    pid = int(pid_file.read_text().split()[0])
    assert b"haproxy" in Path(f"/proc/{pid}/cmdline").read_bytes()
    agent = int(node.cfg.pid_path.read_text().split()[0])
    os.kill(agent, signal.SIGSTOP)  # this node's agent paused: it cannot restart HAProxy yet
    try:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while (_alive(pid) or _listening(HTTP_INGRESS_PORT)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _listening(HTTP_INGRESS_PORT), "HAProxy's listener outlived SIGKILL for 5 s"
        # nothing listens on the proxy port: the datapath drops (Proxy lookup failed)
        assert not connects(client_ns, server_ip), node.cilia("observe", "--from-log", "--last", "8").stdout
    finally:
        os.kill(agent, signal.SIGCONT)
    assert settle(node, "l7-client", f"http://{server_ip}/x", 200) == 200  # restarted, same rules
    assert http(node, "l7-client", f"http://{server_ip}/x", "-X", "POST") == 200
    assert int(pid_file.read_text().split()[0]) != pid


def test_tls_server_names(node: LiveNode, tmp_path: Path) -> None:
    """serverNames on a live node: the ClientHello's SNI decided by the TLS listener (no TLS
    termination); a refused name gets its connection closed."""
    import subprocess

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=lab", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    argv = ["openssl", "s_server", "-quiet", "-accept", "443", "-key", str(key), "-cert", str(cert), "-www"]
    server = subprocess.Popen([*netns.exec_argv(netns_of(node, "l7-server")), *argv],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        ip = ips(node)["l7-server"]
        ports = [{"port": "443", "protocol": "TCP"}]
        to_ports = [{"ports": ports, "serverNames": ["*.example.com"]}]
        peer = [{"matchLabels": {"app": "l7-client"}}]
        node.apply(server_policy({"fromEndpoints": peer, "toPorts": to_ports}))

        def https(name: str) -> int:
            curl = ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3"]
            out = node.cilia("exec", "l7-client", "--", *curl, "--resolve", f"{name}:443:{ip}", f"https://{name}/",
                             check=False)  # fmt: skip
            return int(out.stdout) if out.stdout.strip().isdigit() else 0

        deadline = time.monotonic() + 15
        while https("api.example.com") != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert https("api.example.com") == 200
        assert https("evil.org") == 0  # the proxy closed the connection after the ClientHello
        assert https("a.b.example.com") == 0  # '*' stays within one label
        ip6 = f"[{ipv6_of(ip)}]"  # over IPv6: the TLS listener's IPv6 socket decides the same
        assert http_each(node, "l7-client", *((f"https://{name}/", "-k", "--resolve", f"{name}:443:{ip6}")
                                             for name in ("api.example.com", "evil.org"))) == [200, 0]
        # each ClientHello is an L7 flow: the server name, the verdict and the policy that decided
        out = node.cilia("observe", "--to-pod", "default/l7-server", "-o", "json").stdout
        tls = [f for f in map(json.loads, out.splitlines()) if "tls" in f.get("l7", {})]
        seen = {(f["l7"]["tls"]["sni"], f["verdict"], f["IP"]["ipVersion"]) for f in tls}
        assert {(name, verdict, version) for name, verdict in (("api.example.com", "FORWARDED"),
                ("evil.org", "DROPPED")) for version in ("IPv4", "IPv6")} <= seen, seen
        refused = next(f for f in tls if f["l7"]["tls"]["sni"] == "evil.org")
        assert [p["name"] for p in refused["ingress_denied_by"]] == ["l7-server"]
    finally:
        server.kill()
        server.wait()
