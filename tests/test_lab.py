"""The node lab: names, IPAM and specs without root; pods as network namespaces with root."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from cilia.datapath.dualstack import ipv6_of
from cilia.lab import bigtcp, netns
from cilia.lab.errors import IpamExhaustedError, LabError, PodExistsError, PodNotFoundError
from cilia.lab.ipam import Ipam, gateway, pod_cidr
from cilia.lab.names import host_ifname, netns_name
from cilia.lab.node import Lab, Pod
from cilia.lab.spec import Container, ContainerPort, PodSpec
from cilia.lab.workloads import PodWorkload, hello_body
from cilia.store import Kind, open_store

NODE = 11  # 198.18.176.0/20: clear of node 0, which a real `cilia up` on this machine would use
TEST_NS = "cilia-h4"  # Kubernetes namespace of every test pod; netns names become cilia-cilia-h4-*
HELLO = re.compile(
    r"Server address: (?P<addr>[\d.]+):80\nServer name: (?P<name>\S+)\n"
    r"Date: \d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\nURI: (?P<uri>\S+)\nRequest ID: [0-9a-f]{32}\n"
)


# ---------------------------------------------------------------------------------- no root


def test_names_are_prefixed_sanitised_and_length_safe() -> None:
    assert netns_name("default", "app-a-7d4b9c-x2x4q") == "cilia-default-app-a-7d4b9c-x2x4q"
    long = netns_name("default", "p" * 80)
    assert len(long) == 64 and long.startswith("cilia-default-ppp") and re.search(r"-[0-9a-f]{8}$", long)
    odd = netns_name("Team_A", "web")
    assert re.fullmatch(r"cilia-team-a-web-[0-9a-f]{8}", odd)
    assert netns_name("a-b", "c") != netns_name("a", "b-c", hashed=True)
    assert netns_name("a", "b", hashed=True) != netns_name("a", "b")
    names = {host_ifname("default", f"p{i}") for i in range(1000)}
    assert len(names) == 1000
    assert all(len(n) == 15 and n.startswith("lxc") for n in names)


def test_node_cidrs_and_gateways() -> None:
    assert (pod_cidr(0), gateway(0)) == (IPv4Network("198.18.0.0/20"), IPv4Address("198.18.0.1"))
    assert (pod_cidr(14), gateway(14)) == (IPv4Network("198.18.224.0/20"), IPv4Address("198.18.224.1"))
    with pytest.raises(LabError):
        pod_cidr(15)


def test_ipam_round_robin_persisted_in_the_store(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        ipam = Ipam(store, node_index=0)
        assert [str(ipam.allocate(f"default/p{i}")) for i in range(3)] == [
            "198.18.0.2", "198.18.0.3", "198.18.0.4"]
        assert str(ipam.allocate("default/p1")) == "198.18.0.3"  # idempotent per owner
        ipam.release_owner("default/p1")
        # A replacement gets a new address, not the one just freed.
        assert str(ipam.allocate("default/p1-new")) == "198.18.0.5"
        other_node = Ipam(store, node_index=1)
        assert str(other_node.allocate("default/q")) == "198.18.16.2"
    with open_store(tmp_path) as store:
        assert {str(k): v for k, v in Ipam(store, 0).allocations().items()} == {
            "198.18.0.2": "default/p0", "198.18.0.4": "default/p2", "198.18.0.5": "default/p1-new"}
        assert [r.key.name for r in store.list(Kind.IPAM)] == [
            "198.18.0.2", "198.18.0.4", "198.18.0.5", "198.18.16.2", "cursor-node0", "cursor-node1",
            "owner-default_p0", "owner-default_p1-new", "owner-default_p2", "owner-default_q"]
        assert Ipam(store, 0).lookup("default/p2") == IPv4Address("198.18.0.4")
        Ipam(store, 0).release(IPv4Address("198.18.0.4"))
        assert Ipam(store, 0).lookup("default/p2") is None


def test_ipam_wraps_and_reports_exhaustion() -> None:
    store = open_store(backend="memory")
    ipam = Ipam(store, node_index=2)
    ipam.cidr = IPv4Network("198.18.32.0/29")  # .2 .. .6 usable: keeps the test small
    got = [str(ipam.allocate(f"ns/p{i}")) for i in range(5)]
    assert got == [f"198.18.32.{i}" for i in range(2, 7)]
    with pytest.raises(IpamExhaustedError):
        ipam.allocate("ns/one-too-many")
    ipam.release_owner("ns/p1")
    assert str(ipam.allocate("ns/again")) == "198.18.32.3"


def test_ipam_concurrent_writers_never_share_an_address(tmp_path: Path) -> None:
    results: list[list[str]] = [[], []]

    def worker(i: int) -> None:
        with open_store(tmp_path) as store:  # each thread its own connection, as two processes would
            ipam = Ipam(store, node_index=3)
            results[i] = [str(ipam.allocate(f"ns/w{i}-{j}")) for j in range(40)]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = results[0] + results[1]
    assert len(every) == 80 and len(set(every)) == 80
    assert {IPv4Address(a) for a in every} == {IPv4Address("198.18.48.2") + i for i in range(80)}


def test_pod_spec_from_manifest() -> None:
    manifest = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "prod", "labels": {"app": "web"}},
        "spec": {"containers": [
            {"name": "nginx", "image": "nginxdemos/hello:plain-text",
             "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "udp"}]},
            {"name": "side", "command": ["sleep"], "args": ["60"], "ports": [{"containerPort": 9000}]},
        ]},
    }
    spec = PodSpec.from_manifest(manifest)
    assert spec == PodSpec("prod", "web", {"app": "web"}, (
        Container("nginx", (ContainerPort(80, "TCP"), ContainerPort(53, "UDP"))),
        Container("side", (ContainerPort(9000, "TCP"),), ("sleep",), ("60",)),
    ))
    assert (spec.served_ports("TCP"), spec.served_ports("UDP"), spec.commands()) == (
        (80,), (53,), (("sleep", "60"),))
    pod = Pod("prod", "web", "cilia-prod-web", "lxc0123456789ab", 7, "198.18.0.9", "198.18.0.1", "/l", spec)
    assert Pod.from_json(pod.to_json()) == pod and Pod.from_json(pod.to_json()).spec == spec
    assert PodWorkload.from_json(pod.workload().to_json()) == pod.workload()
    with pytest.raises(LabError, match=r"no metadata\.name"):
        PodSpec.from_manifest({"kind": "Pod", "metadata": {}})


def test_hello_body_has_nginx_hello_shape() -> None:
    body = hello_body("198.18.0.2", 80, "web-1", "/a?b=c", "0" * 32)
    m = HELLO.fullmatch(body)
    assert m and m.group("addr", "name", "uri") == ("198.18.0.2", "web-1", "/a?b=c")


# ---------------------------------------------------------------------------------- root


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines()}


def _netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _routes() -> str:
    return subprocess.run(["ip", "route", "show", "root", str(pod_cidr(NODE))],
                          capture_output=True, text=True, check=True).stdout


def _daemon_pids(run_dir: Path) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
                if b"cilia.lab.workloadd" in cmd and str(run_dir).encode() in cmd:
                    pids.append(int(d))
    return pids


class LabFixture:
    """A lab in a temporary state dir that remembers every pod name it was asked for."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = open_store(tmp / "state")
        self.lab = Lab(self.store, node_index=NODE, run_dir=tmp / "run", log_dir=tmp / "logs")
        self.names: set[tuple[str, str]] = set()

    def pod(self, name: str, ports: tuple[ContainerPort, ...] = (ContainerPort(80),),
            command: tuple[str, ...] = (), hook=None) -> Pod:  # type: ignore[no-untyped-def]
        self.names.add((TEST_NS, name))
        spec = PodSpec(TEST_NS, name, {"app": name}, (Container("c", ports, command),))
        return self.lab.create_pod(spec, hook)

    def leftovers(self) -> dict[str, object]:
        mine_ns = {n for ns, p in self.names for n in (netns_name(ns, p), netns_name(ns, p, hashed=True))}
        mine_links = {host_ifname(ns, p) for ns, p in self.names}
        return {"netns": sorted(mine_ns & _netns_list()), "links": sorted(mine_links & _links()),
                "routes": _routes(), "daemons": _daemon_pids(self.lab.run_dir)}

    def force_clean(self) -> None:
        """Last resort after a failed teardown: remove by exact name what this fixture asked for."""
        left = self.leftovers()
        for link in left["links"]:  # type: ignore[union-attr]
            subprocess.run(["ip", "link", "del", link], check=False)
        for ns in left["netns"]:  # type: ignore[union-attr]
            netns.remove(ns)
        for pid in left["daemons"]:  # type: ignore[union-attr]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


@pytest.fixture
def labfx(tmp_path: Path) -> Iterator[LabFixture]:
    forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    fx = LabFixture(tmp_path)
    try:
        yield fx
    finally:
        try:
            fx.lab.teardown()
        finally:
            fx.force_clean()
            fx.store.close()
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward_before


def _curl(lab: Lab, src: Pod, dst: Pod, path: str = "/") -> subprocess.CompletedProcess[str]:
    return lab.run_in_pod(src.namespace, src.name,
                          ["curl", "-sS", "--max-time", "5", f"http://{dst.ip}{path}"], timeout=15)


UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(b"ping-cilia", (sys.argv[1], 53))
print(s.recvfrom(100)[0].decode())
"""


@pytest.mark.root
def test_two_pods_talk_http_udp_icmp(labfx: LabFixture) -> None:
    lab = labfx.lab
    ipv6_before = Path("/proc/sys/net/ipv6/conf/all/disable_ipv6").read_text()
    hooked: list[tuple[Pod, str]] = []

    def before_address(pod: Pod) -> None:
        # The datapath attaches here: the veth exists, the pod has no address yet.
        addrs = lab.run_in_pod(pod.namespace, pod.name, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        hooked.append((pod, addrs.stdout))
        assert pod.host_ifindex > 0 and pod.host_ifname in _links()

    a = labfx.pod("a", (ContainerPort(80), ContainerPort(53, "UDP")), hook=before_address)
    b = labfx.pod("b", (ContainerPort(80), ContainerPort(53, "UDP")))
    assert hooked == [(a, "")]
    assert (a.ip, a.gateway, a.netns) == ("198.18.176.2", "198.18.176.1", "cilia-cilia-h4-a")
    assert lab.list_pods() == [a, b]
    # BIG TCP on both sides of the pod's veth (IPv4 where the kernel has it), as Cilium sets it
    big = {"gso_max_size": 196608, "gro_max_size": 196608}
    if bigtcp.ipv4_supported():
        big |= {"gso_ipv4_max_size": 196608, "gro_ipv4_max_size": 196608}
    assert bigtcp.max_sizes("eth0", a.netns) == big
    assert bigtcp.max_sizes(a.host_ifname) == big

    r = _curl(lab, a, b, "/hello?x=1")
    assert r.returncode == 0, r.stderr
    m = HELLO.fullmatch(r.stdout)
    assert m and m.group("addr", "name", "uri") == (b.ip, "b", "/hello?x=1")

    udp = lab.run_in_pod("cilia-h4", "b", [sys.executable, "-c", UDP_CLIENT, a.ip], timeout=15)
    assert (udp.returncode, udp.stdout) == (0, "ping-cilia\n"), udp.stderr
    assert lab.exec_in_pod("cilia-h4", "a", ["ping", "-q", "-c", "1", "-W", "3", b.ip], timeout=15) == 0
    assert lab.exec_in_pod("cilia-h4", "a", ["sh", "-c", "exit 7"]) == 7

    log_b = Path(b.log_path).read_text().splitlines()
    assert re.fullmatch(
        rf'{re.escape(a.ip)} - - \[[^]]+\] "GET /hello\?x=1 HTTP/1.1" 200 \d+ "-" "curl/[\d.]+"', log_b[0])
    log_a = Path(a.log_path).read_text().strip()
    assert re.fullmatch(rf'{re.escape(b.ip)} - - \[[^]]+\] "UDP 53" echo 10', log_a)

    # dual stack: the IPv4 address's IPv6 twin (cilia.datapath.dualstack), and the lab's IPv6 range
    # only (no default route); IPv4 only where the kernel cannot forward IPv6 per device
    six = lab.run_in_pod("cilia-h4", "a", ["ip", "-6", "-o", "addr", "show", "scope", "global"]).stdout
    routes6 = lab.run_in_pod("cilia-h4", "a", ["ip", "-6", "route"]).stdout.splitlines()
    if a.ip6:
        assert a.ip6 == ipv6_of(a.ip) and [line.split()[3] for line in six.splitlines()] == [f"{a.ip6}/128"]
        gw6 = ipv6_of(a.gateway)
        assert sorted(r for r in routes6 if not r.startswith(("fe80::/64", a.ip6))) == sorted([
            f"2001:2::/48 via {gw6} dev eth0 proto static metric 1024 pref medium",
            f"{gw6} dev eth0 proto static metric 1024 pref medium"])
    else:
        assert six == "" and routes6 == []
    assert Path("/proc/sys/net/ipv6/conf/all/disable_ipv6").read_text() == ipv6_before  # node untouched
    routes = lab.run_in_pod("cilia-h4", "a", ["ip", "-4", "route"]).stdout.splitlines()
    assert sorted(routes) == sorted([  # the lab's ranges only: no default route
        "198.18.0.0/15 via 198.18.176.1 dev eth0 proto static ",
        "198.18.176.1 dev eth0 proto static scope link ",
    ])
    assert _routes().splitlines() == [f"{a.ip} dev {a.host_ifname} proto static scope link ",
                                      f"{b.ip} dev {b.host_ifname} proto static scope link "]
    with pytest.raises(PodExistsError):
        labfx.pod("a")
    lab.delete_pod("cilia-h4", "a")
    assert lab.list_pods() == [b]
    assert list(lab.workloads.list()["pods"]) == ["cilia-h4/b"]
    assert "cilia-cilia-h4-a" not in _netns_list() and a.host_ifname not in _links()
    with pytest.raises(PodNotFoundError):
        lab.delete_pod("cilia-h4", "a")


@pytest.mark.root
def test_big_tcp_off_keeps_the_kernels_limits(labfx: LabFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(bigtcp.ENV, "0")
    p = labfx.pod("small")
    assert set(bigtcp.max_sizes("eth0", p.netns).values()) == {65536}
    assert set(bigtcp.max_sizes(p.host_ifname).values()) == {65536}


@pytest.mark.parametrize(("value", "on"), [(None, True), ("1", True), ("0", False), ("off", False)])
def test_big_tcp_setting(monkeypatch: pytest.MonkeyPatch, value: str | None, on: bool) -> None:
    if value is None:
        monkeypatch.delenv(bigtcp.ENV, raising=False)
    else:
        monkeypatch.setenv(bigtcp.ENV, value)
    assert bigtcp.wanted() is on


@pytest.mark.root
def test_command_containers_run_in_the_pod_and_die_with_it(labfx: LabFixture) -> None:
    lab = labfx.lab
    script = "ip -o -4 addr show dev eth0 | awk '{print \"addr=\" $4}'; exec sleep 300"
    p = labfx.pod("cmd", (ContainerPort(8080),), command=("sh", "-c", script))
    deadline = time.monotonic() + 10
    while "\naddr=" not in Path(p.log_path).read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"\naddr={p.ip}/32\n" in Path(p.log_path).read_text()
    pids = lab.workloads.list()["pods"]["cilia-h4/cmd"]["pids"]
    assert len(pids) == 1 and Path(f"/proc/{pids[0]}/cmdline").read_bytes().startswith(b"sleep\x00300")
    # No built-in server on a container that runs a command.
    assert lab.workloads.list()["pods"]["cilia-h4/cmd"]["tcp"] == []
    lab.delete_pod("cilia-h4", "cmd")
    assert not Path(f"/proc/{pids[0]}").exists()


@pytest.mark.root
def test_commands_die_with_a_killed_daemon_and_come_back(labfx: LabFixture) -> None:
    lab = labfx.lab
    labfx.pod("cmd", (), command=("sleep", "300"))
    daemon = lab.workloads.pid()
    assert daemon is not None
    [pid] = lab.workloads.list()["pods"]["cilia-h4/cmd"]["pids"]
    os.kill(daemon, 9)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)
    assert lab.restore_workloads() == 1
    [again] = lab.workloads.list()["pods"]["cilia-h4/cmd"]["pids"]
    assert again != pid and _alive(again)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.root
def test_failed_hook_leaves_nothing_behind(labfx: LabFixture) -> None:
    def boom(pod: Pod) -> None:
        raise RuntimeError("datapath attach failed")

    with pytest.raises(LabError, match="create pod cilia-h4/x: datapath attach failed"):
        labfx.pod("x", hook=boom)
    assert labfx.leftovers() == {"netns": [], "links": [], "routes": "", "daemons": []}
    assert labfx.lab.ipam.allocations() == {}
    assert labfx.lab.list_pods() == []


@pytest.mark.root
def test_restart_keeps_addresses_and_workloads_come_back(labfx: LabFixture) -> None:
    a, b = labfx.pod("a"), labfx.pod("b")
    labfx.lab.workloads.stop()  # the daemon dies; the pods stay
    again = Lab(labfx.store, node_index=NODE, run_dir=labfx.lab.run_dir, log_dir=labfx.lab.log_dir)
    assert again.list_pods() == [a, b]
    assert again.restore_workloads() == 2
    r = _curl(again, a, b)
    assert r.returncode == 0 and HELLO.fullmatch(r.stdout), r.stderr


@pytest.mark.root
def test_teardown_leaves_no_namespace_link_route_or_process(labfx: LabFixture) -> None:
    pods = [labfx.pod(n, command=("sleep", "300") if n == "c" else ()) for n in ("a", "b", "c")]
    daemon = labfx.lab.workloads.pid()
    cmd_pid = labfx.lab.workloads.list()["pods"]["cilia-h4/c"]["pids"][0]
    assert daemon and labfx.leftovers()["daemons"] == [daemon]
    labfx.lab.teardown()
    assert labfx.leftovers() == {"netns": [], "links": [], "routes": "", "daemons": []}
    assert not Path(f"/proc/{daemon}").exists() and not Path(f"/proc/{cmd_pid}").exists()
    assert not [p for p in pods if Path(p.log_path).exists()]
    assert labfx.lab.ipam.allocations() == {}
    assert not labfx.lab.run_dir.exists()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.root
def test_200_pods_served_by_one_process(labfx: LabFixture) -> None:
    n = 200
    t0 = time.monotonic()
    pods = [labfx.pod(f"p{i}", (ContainerPort(80), ContainerPort(53, "UDP"))) for i in range(n)]
    created = time.monotonic() - t0
    daemon = labfx.lab.workloads.pid()
    assert daemon is not None
    assert _daemon_pids(labfx.lab.run_dir) == [daemon]
    children = Path(f"/proc/{daemon}/task/{daemon}/children").read_text().split()
    assert children == []  # built-in workloads are sockets in the daemon, not processes
    assert len(labfx.lab.workloads.list()["pods"]) == n
    assert len({p.ip for p in pods}) == n
    for src, dst in ((pods[0], pods[-1]), (pods[-1], pods[n // 2]), (pods[7], pods[0])):
        r = _curl(labfx.lab, src, dst)
        assert r.returncode == 0 and HELLO.fullmatch(r.stdout) and f"Server name: {dst.name}\n" in r.stdout
    rss = _rss_kb(daemon)
    print(f"{n} pods created in {created:.1f} s; one workload process, RSS {rss / 1024:.1f} MiB")
    assert rss < 200 * 1024


HTTP_CLIENT = r"""
import socket, sys
def exchange(payload):
    s = socket.create_connection((sys.argv[1], 80), timeout=5)
    s.sendall(payload)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data.decode()
two = exchange(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
               b"HEAD /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
print(two.count("HTTP/1.1 200 OK"), "URI: /one" in two, "URI: /two" not in two, "Connection: close" in two)
print(exchange(b"NONSENSE\r\n\r\n").split("\r\n")[0])
print(exchange(b"POST /p HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc").split("\r\n")[0])
"""


@pytest.mark.root
def test_http_keepalive_head_and_bad_requests(labfx: LabFixture) -> None:
    a, b = labfx.pod("a", ()), labfx.pod("b")
    r = labfx.lab.run_in_pod(a.namespace, a.name, [sys.executable, "-c", HTTP_CLIENT, b.ip], timeout=20)
    expected_out = "2 True True True\nHTTP/1.1 400 Bad Request\nHTTP/1.1 200 OK\n"
    assert (r.returncode, r.stdout) == (0, expected_out), r.stderr
    log = [(ln.split('"')[1], *ln.split('"')[2].split()) for ln in Path(b.log_path).read_text().splitlines()]
    assert [(req, status, size != "0") for req, status, size in log] == [
        ("GET /one HTTP/1.1", "200", True), ("HEAD /two HTTP/1.1", "200", False),
        ("NONSENSE", "400", False), ("POST /p HTTP/1.0", "200", True)]


@pytest.mark.root
def test_a_taken_netns_name_gets_the_hashed_form(labfx: LabFixture) -> None:
    plain = netns_name(TEST_NS, "clash")
    netns.create(plain)  # someone else's namespace with our pod's plain name
    try:
        pod = labfx.pod("clash")
        assert pod.netns == netns_name(TEST_NS, "clash", hashed=True) != plain
        r = labfx.lab.run_in_pod(pod.namespace, pod.name, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        assert f"inet {pod.ip}/32" in r.stdout
        labfx.lab.delete_pod(TEST_NS, "clash")
        assert netns.exists(plain)  # not ours: left alone
    finally:
        netns.remove(plain)


@pytest.mark.root
def test_a_foreign_link_with_the_pods_name_is_left_alone(labfx: LabFixture) -> None:
    busy = host_ifname(TEST_NS, "busy")
    subprocess.run(["ip", "link", "add", busy, "type", "veth", "peer", "name", "cilia-h4peer"], check=True)
    try:
        with pytest.raises(LabError, match="exists already"):
            labfx.pod("busy")
        assert busy in _links()
        assert labfx.leftovers()["netns"] == [] and labfx.lab.ipam.allocations() == {}
    finally:
        subprocess.run(["ip", "link", "del", busy], check=False)
