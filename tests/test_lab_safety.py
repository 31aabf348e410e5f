"""The lab stays inside its addresses and runs pods' programs as a container runtime would (issue 13):
pods route only the lab's ranges, an nftables guard drops forwarding out of the lab while no agent
runs, every pod has its own resolv.conf and hosts, container commands run unprivileged unless the
manifest asks, and the lab's DNS server answers Service names and survives any packet."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cilia.lab import dns, guard, netns, podfiles
from cilia.lab.errors import LabError
from cilia.lab.names import host_ifname, netns_name
from cilia.lab.node import Lab, Pod
from cilia.lab.security import NOBODY, RUNTIME_DEFAULT_CAPS, RunAs
from cilia.lab.spec import PodSpec
from cilia.proxy.dns.msg import TYPE_A, parse, query
from cilia.store import open_store

NODE = 13  # 198.18.208.0/20; no other test module uses it
TEST_NS = "cilia-ls"


def _pod_manifest(name: str, containers: list[dict[str, Any]], pod_ctx: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if pod_ctx is not None:
        spec["securityContext"] = pod_ctx
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": TEST_NS}, "spec": spec}


# ---------------------------------------------------------------------------------- no root


def test_security_context_defaults_to_nobody_without_capabilities() -> None:
    spec = PodSpec.from_manifest(_pod_manifest("p", [{"name": "c", "command": ["id"]}]))
    ra = spec.containers[0].security
    assert ra == RunAs(NOBODY, NOBODY, False, (), True)
    assert spec.command_privileges() == ((
        "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
        "--bounding-set=-all", "--no-new-privs", "--pdeathsig=KILL", "--"),)


def test_security_context_privileges_only_when_asked() -> None:
    m = _pod_manifest("p", [
        {"name": "priv", "command": ["x"], "securityContext": {"privileged": True}},
        {"name": "root", "command": ["x"], "securityContext": {"runAsUser": 0}},
        {"name": "caps", "command": ["x"], "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}},
        {"name": "pod-user", "command": ["x"]},
        {"name": "drop", "command": ["x"],
         "securityContext": {"runAsUser": 0, "capabilities": {"drop": ["ALL"], "add": ["CAP_NET_RAW"]},
                             "allowPrivilegeEscalation": True}},
    ], pod_ctx={"runAsUser": 1000, "runAsGroup": 3000})
    priv, root, caps, pod_user, drop = (c.security for c in PodSpec.from_manifest(m).containers)
    assert priv.privileged and priv.setpriv() == ()
    assert (root.uid, root.gid, root.caps, root.no_new_privs) == (0, 3000, RUNTIME_DEFAULT_CAPS, True)
    assert (caps.uid, caps.gid, caps.caps) == (1000, 3000, ("net_admin",))
    assert "--ambient-caps=+net_admin" in caps.setpriv() and "--inh-caps=-all,+net_admin" in caps.setpriv()
    assert (pod_user.uid, pod_user.gid, pod_user.caps) == (1000, 3000, ())
    assert (drop.uid, drop.caps, drop.no_new_privs) == (0, ("net_raw",), False)
    assert "--bounding-set=-all,+net_raw" in drop.setpriv() and "--no-new-privs" not in drop.setpriv()


@pytest.mark.parametrize(("ctx", "message"), [
    ({"capabilities": {"add": ["NET_WIZARD"]}}, "unknown capability 'NET_WIZARD'"),
    ({"runAsUser": -1}, "runAsUser: expected a user/group id"),
    ({"runAsUser": "0"}, "runAsUser: expected a user/group id"),
    ("root", "securityContext must be a mapping"),
])
def test_bad_security_context_is_a_clear_error(ctx: Any, message: str) -> None:
    with pytest.raises(LabError, match=message) as e:
        PodSpec.from_manifest(_pod_manifest("p", [{"name": "c", "command": ["x"], "securityContext": ctx}]))
    assert "spec.containers[0].securityContext" in str(e.value)


def test_pod_files_have_the_kubelets_shape() -> None:
    assert podfiles.resolv_conf("shop", "198.19.3.53") == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 198.19.3.53\noptions ndots:5\n")
    lines = podfiles.hosts("198.18.0.7", "web-1").splitlines()
    assert lines[1] == "127.0.0.1\tlocalhost" and lines[-1] == "198.18.0.7\tweb-1"
    # a dual-stack pod: both addresses, as the kubelet writes each podIP
    assert podfiles.hosts("198.18.0.7", "web-1", "2001:2::c612:7").splitlines()[-2:] == [
        "2001:2::c612:7\tweb-1", "198.18.0.7\tweb-1"]
    assert dns.server_address(3) == podfiles.dns_address(3) == "198.19.3.53"


def test_guard_ruleset_drops_everything_out_of_the_lab_from_lab_devices(tmp_path: Path) -> None:
    table = guard.table_name(tmp_path)
    assert table.startswith("cilia_guard_") and table != guard.table_name(tmp_path / "other")
    text = guard.ruleset(table)
    assert "hook forward" in text and "policy accept" in text
    for dev in ("lxc*", "cilia*"):
        assert f'iifname "{dev}" meta nfproto ipv4 ip daddr != 198.18.0.0/15 counter drop' in text
        assert f'iifname "{dev}" meta nfproto ipv6 ip6 daddr != 2001:2::/48 counter drop' in text


SERVICES = {"web.shop": "198.18.255.10"}


def _ask(name: str, qtype: int = TYPE_A,
         records: dict[str, list[str]] | None = None) -> tuple[int, list[str]]:
    out = dns.answer(query(0x1234, name, qtype), records or {}, {}, SERVICES)
    assert out is not None
    msg = parse(out)
    return msg.rcode, [a for _, a, _ in msg.answers]


def test_dns_answers_service_names_as_coredns_does() -> None:
    assert _ask("web.shop.svc.cluster.local") == (0, ["198.18.255.10"])
    assert _ask("WEB.shop.svc.cluster.local.") == (0, ["198.18.255.10"])
    assert _ask("web.other.svc.cluster.local") == (3, [])  # NXDOMAIN: no such Service
    assert _ask("nope.cluster.local") == (3, [])
    assert _ask("web.shop.svc.cluster.local", qtype=28) == (0, [])  # AAAA: the name exists, no record
    assert _ask("api.example.test") == (3, [])
    assert _ask("api.example.test", records={"api.example.test": ["198.19.0.9"]}) == (0, ["198.19.0.9"])
    # a record of `cilia dns add` wins over the Service
    assert _ask("web.shop.svc.cluster.local", records={"web.shop.svc.cluster.local": ["198.19.0.8"]}) == (
        0, ["198.19.0.8"])


ROOT_NS_QUERY = bytes.fromhex("abcd01000001000000000000" "00" "0002" "0001")  # `dig . NS`


@pytest.fixture
def loopback_server(tmp_path: Path) -> Iterator[tuple[dns.Server, threading.Thread]]:
    """The DNS server on 127.0.0.1 (loopback only), in this process."""
    records = tmp_path / "dns" / "records.json"
    dns.add_record(tmp_path, "api.example.test", "198.19.0.9")
    server = dns.Server(records, bind=("127.0.0.1", 0))
    stopped = threading.Event()
    t = threading.Thread(target=server.run, args=(stopped,), daemon=True)
    t.start()
    try:
        yield server, t
    finally:
        stopped.set()
        t.join(5)


def test_dns_server_survives_root_ns_queries_and_garbage(loopback_server: tuple[dns.Server, threading.Thread],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    server, thread = loopback_server
    host, port = server.address
    broken: list[bytes] = []
    real = dns.answer

    def answer_that_breaks(data: bytes, *args: Any) -> bytes | None:
        if data == b"\xff" * 20:  # whatever a bug does on one packet must not stop the server
            broken.append(data)
            raise IndexError("a bug")
        return real(data, *args)

    monkeypatch.setattr(dns, "answer", answer_that_breaks)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for packet in (ROOT_NS_QUERY, b"", b"\x00", os.urandom(300), b"\xff" * 20,
                       query(7, "a" * 63 + ".test")):
            s.sendto(packet, (host, port))
        s.sendto(query(9, "api.example.test"), (host, port))
        replies = []
        with contextlib.suppress(TimeoutError):
            while True:
                replies.append(parse(s.recvfrom(4096)[0]))
                if replies[-1].id == 9:
                    break
    assert broken and thread.is_alive()
    assert [(m.id, m.rcode) for m in replies if m.id in (0xABCD, 7, 9)] == [(0xABCD, 3), (7, 3), (9, 0)]
    assert dns.resolve(host, "api.example.test", port=port) == (0, ["198.19.0.9"])
    assert dns.resolve(host, "api.example.test", port=port, tcp=True) == (0, ["198.19.0.9"])


# ---------------------------------------------------------------------------------- root


def _forward_guard_cleanup(run_dir: Path) -> None:
    with contextlib.suppress(LabError):
        guard.remove(run_dir)


class SafetyLab:
    def __init__(self, tmp: Path, node: int = NODE) -> None:
        self.store = open_store(tmp / "state")
        self.lab = Lab(self.store, node_index=node, run_dir=tmp / "run", log_dir=tmp / "logs")
        self.names: set[str] = set()

    def pod(self, name: str, containers: list[dict[str, Any]] | None = None,
            pod_ctx: dict[str, Any] | None = None) -> Pod:
        self.names.add(name)
        return self.lab.create_pod(_pod_manifest(name, containers or [], pod_ctx))

    def run(self, p: Pod, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.lab.run_in_pod(p.namespace, p.name, argv, timeout=20)

    def close(self) -> None:
        try:
            self.lab.teardown()
        finally:
            for n in self.names:  # last resort, by the exact names asked for
                for ns in (netns_name(TEST_NS, n), netns_name(TEST_NS, n, hashed=True)):
                    netns.remove(ns)
                    podfiles.remove(ns)
                subprocess.run(["ip", "link", "del", host_ifname(TEST_NS, n)], capture_output=True,
                               check=False)
            _forward_guard_cleanup(self.lab.run_dir)
            self.store.close()


@pytest.fixture(scope="module")
def slab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SafetyLab]:
    fx = SafetyLab(tmp_path_factory.mktemp("lab-safety"))
    try:
        yield fx
    finally:
        fx.close()


@pytest.mark.root
def test_pods_route_only_the_lab_and_the_guard_is_installed(slab: SafetyLab) -> None:
    a = slab.pod("route-a")
    # nothing is sent: `ip route get` only asks the pod's routing table
    out = slab.run(a, "ip", "route", "get", "8.8.8.8")
    assert out.returncode != 0 and "unreachable" in out.stderr.lower(), out
    inside = slab.run(a, "ip", "route", "get", "198.19.13.5")
    assert inside.returncode == 0 and "via 198.18.208.1 dev eth0" in inside.stdout
    assert "default" not in slab.run(a, "ip", "-4", "route").stdout
    listing = guard.listing(slab.lab.run_dir)
    assert f"table inet {guard.table_name(slab.lab.run_dir)}" in listing
    assert 'iifname "lxc*" ip daddr != 198.18.0.0/15' in listing and "drop" in listing


@pytest.mark.root
def test_teardown_removes_the_guard(tmp_path: Path) -> None:
    fx = SafetyLab(tmp_path, node=8)  # beside the module's lab: its own addresses
    try:
        fx.pod("guard-a")
        assert guard.installed(fx.lab.run_dir)
        fx.lab.teardown()
        assert not guard.installed(fx.lab.run_dir)
        assert not podfiles.directory(netns_name(TEST_NS, "guard-a")).exists()
    finally:
        fx.close()


@pytest.mark.root
def test_a_cluster_nodes_guard_lives_in_its_namespace(tmp_path: Path) -> None:
    # A node of `cilia up --nodes N` runs its agent (and so its lab) inside cilia-node-<i>: the
    # guard is installed by a process in that namespace, in that namespace's forward hook.
    ns = "cilia-lsafe-guard"
    netns.create(ns)
    try:
        with netns.entered(ns):
            guard.install(tmp_path)
        inside = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet",
                                 guard.table_name(tmp_path)], capture_output=True, text=True, check=False)
        assert inside.returncode == 0 and "hook forward" in inside.stdout, inside.stderr
        assert not guard.installed(tmp_path)  # not in this (the root) namespace
    finally:
        netns.remove(ns)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _tx_packets(ns: str, dev: str) -> int:
    out = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", dev], capture_output=True, text=True,
                         check=True).stdout
    import json

    return int(json.loads(out)[0]["stats64"]["tx"]["packets"])


SEND = "import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', (sys.argv[1], 9))"


@pytest.mark.root
def test_the_guard_keeps_lab_addresses_without_a_lab_host_off_the_uplink(tmp_path: Path) -> None:
    """A scratch node namespace whose default route leads to an "uplink": a veth to a third
    namespace without any address, which takes what it is given and drops it (nothing leaves the
    machine; the uplink's counter shows what would have). A pod's datagram for a lab address that
    no lab host has follows that route until the guard is installed; then it is dropped in the
    forward hook, and the node's own in the output hook."""
    node, pod, out = "cilia-lsafe-gnode", "cilia-lsafe-gpod", "cilia-lsafe-gout"
    for ns in (node, pod, out):
        netns.create(ns)
    try:
        for ns in (node, out):  # IPv4 only: no router solicitations on the uplink's counter
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        _ip("-n", node, "link", "add", "uplink0", "type", "veth", "peer", "name", "eth0", "netns", out)
        _ip("-n", out, "link", "set", "eth0", "up")
        _ip("-n", node, "link", "set", "uplink0", "up")
        _ip("-n", node, "route", "add", "default", "dev", "uplink0")
        _ip("-n", node, "link", "add", "lxclsafe0", "type", "veth", "peer", "name", "eth0", "netns", pod)
        _ip("-n", node, "link", "set", "lxclsafe0", "up")
        _ip("-n", node, "addr", "add", "198.18.252.1/32", "dev", "lxclsafe0")
        _ip("-n", node, "route", "add", "198.18.252.2/32", "dev", "lxclsafe0")
        _ip("-n", pod, "link", "set", "eth0", "up")
        _ip("-n", pod, "addr", "add", "198.18.252.2/32", "dev", "eth0")
        _ip("-n", pod, "route", "add", "198.18.252.1/32", "dev", "eth0")
        _ip("-n", pod, "route", "add", "198.18.0.0/15", "via", "198.18.252.1", "dev", "eth0")
        subprocess.run(["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)

        def send(ns: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SEND, "198.19.250.9"],
                                  capture_output=True, text=True, check=False)

        assert send(pod).returncode == 0  # no guard: the node forwards it to its uplink
        assert _tx_packets(node, "uplink0") == 1
        with netns.entered(node):
            guard.install(tmp_path)
        assert send(pod).returncode == 0  # sent, and dropped where the node forwards it
        own = send(node)
        assert own.returncode != 0 and "Operation not permitted" in own.stderr  # dropped in output
        assert _tx_packets(node, "uplink0") == 1  # neither the pod's nor the node's own
        rules = subprocess.run(["ip", "netns", "exec", node, "nft", "list", "table", "inet",
                                guard.table_name(tmp_path)], capture_output=True, text=True,
                               check=True).stdout
        assert 'iifname "lxc*" oifname != "lxc*" oifname != "cilia*" counter packets 1 ' in rules, rules
        assert ('ip daddr 198.18.0.0/15 oifname != "lo" oifname != "lxc*" oifname != "cilia*" '
                'counter packets 1 ') in rules, rules
    finally:
        for ns in (pod, node, out):
            netns.remove(ns)


@pytest.mark.root
def test_exec_sees_the_pods_resolv_conf_and_hosts(slab: SafetyLab) -> None:
    p = slab.pod("files-a")
    resolv = slab.run(p, "cat", "/etc/resolv.conf")
    assert resolv.stdout == (f"search {TEST_NS}.svc.cluster.local svc.cluster.local cluster.local\n"
                             f"nameserver 198.19.{NODE}.53\noptions ndots:5\n"), resolv
    hosts = slab.run(p, "cat", "/etc/hosts").stdout.splitlines()
    assert hosts[-1] == f"{p.ip}\tfiles-a" and "127.0.0.1\tlocalhost" in hosts
    assert Path("/etc/resolv.conf").read_text() != resolv.stdout  # the node's own is untouched
    slab.lab.delete_pod(TEST_NS, "files-a")
    assert not podfiles.directory(p.netns).exists()


def _log_after(p: Pod, marker: str, timeout: float = 10.0) -> str:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = Path(p.log_path).read_text() if Path(p.log_path).exists() else ""
        if marker in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{marker!r} not in {p.log_path}: {text!r}")


REPORT = ("echo uid=$(id -u) gid=$(id -g); grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; "
          "echo resolv=$(grep nameserver /etc/resolv.conf); "
          "echo host=$(tail -n 1 /etc/hosts | tr '\\t' ' '); "
          "echo cwd=$(pwd); echo done")


@pytest.mark.root
def test_container_commands_run_unprivileged_with_the_pods_files(slab: SafetyLab) -> None:
    p = slab.pod("sec-a", [
        {"name": "plain", "command": ["sh", "-c"], "args": [REPORT]},
    ])
    log = _log_after(p, "\ndone\n")
    assert "uid=65534 gid=65534" in log
    assert "CapEff:\t0000000000000000" in log and "CapBnd:\t0000000000000000" in log
    assert "NoNewPrivs:\t1" in log
    assert f"resolv=nameserver 198.19.{NODE}.53" in log and f"host={p.ip} sec-a" in log
    assert "cwd=/\n" in log


@pytest.mark.root
def test_container_commands_get_what_the_security_context_asks(slab: SafetyLab) -> None:
    p = slab.pod("sec-b", [
        {"name": "priv", "command": ["sh", "-c", "echo P$(id -u) $(grep CapEff /proc/self/status)"],
         "securityContext": {"privileged": True}},
        {"name": "user", "command": ["sh", "-c", "echo U$(id -u):$(id -g) $(grep CapEff /proc/self/status)"],
         "securityContext": {"runAsUser": 1234, "runAsGroup": 4321, "capabilities": {"add": ["NET_RAW"]}}},
    ])
    log = _log_after(p, "\nU1234")
    log = _log_after(p, "\nP0")
    full = int(Path("/proc/self/status").read_text().split("CapBnd:\t")[1].split()[0], 16)
    assert f"P0 CapEff: {full:016x}" in log
    assert "U1234:4321 CapEff: 0000000000002000" in log  # CAP_NET_RAW only


# ---------------------------------------------------------------------------------- etcd: mutual TLS


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import shutil

    from cilia.lab import etcd_pki
    from cilia.lab.etcd_cluster import EtcdCluster

    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (scripts/install-system-deps.sh)")
    base = tmp_path_factory.mktemp("etcd-tls")
    pki = etcd_pki.ensure(base / "pki")
    with EtcdCluster(base / "data", members=1, tls=pki) as cluster:
        yield cluster, pki


def test_the_lab_pki_is_root_only(tls_etcd: Any) -> None:
    from cilia.lab import etcd_pki
    from cilia.store.etcd import TLS_SERVER_NAME

    _, pki = tls_etcd
    assert TLS_SERVER_NAME == etcd_pki.SERVER_NAME
    assert pki.directory.stat().st_mode & 0o777 == 0o700
    for key in (pki.directory / "ca.key", pki.server_key, pki.client_key):
        assert key.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in pki.directory.iterdir()) == [
        "ca.crt", "ca.key", "client.crt", "client.key", "server.crt", "server.key"]
    assert etcd_pki.ensure(pki.directory).ca.read_bytes() == pki.ca.read_bytes()  # kept, not remade


def test_etcd_refuses_a_client_without_the_labs_certificate(tls_etcd: Any) -> None:
    import ssl
    import urllib.request

    from cilia.lab import etcd_pki
    from cilia.store import StoreError
    from cilia.store.etcd import EtcdBackend

    cluster, pki = tls_etcd
    m = cluster.members[0]
    assert m.client_url.startswith("https://127.0.0.1:")
    with pytest.raises(OSError):  # plain HTTP to a TLS-only listener
        urllib.request.urlopen(f"http://127.0.0.1:{m.client_port}/health", timeout=3)
    no_cert = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises(OSError):  # TLS, trusting the CA, but without a client certificate
        urllib.request.urlopen(f"{m.client_url}/health", timeout=3, context=no_cert).read()
    with pytest.raises(StoreError, match="UNAVAILABLE"):  # the store's own client without TLS
        EtcdBackend([m.endpoint], connect_timeout=2, retry_for=2)
    wrong = etcd_pki.ensure(pki.directory.parent / "other-pki")  # a certificate of another CA
    with pytest.raises(StoreError, match="UNAVAILABLE"):
        EtcdBackend([m.endpoint], connect_timeout=2, retry_for=2, tls=(str(pki.ca), *wrong.client_tls()[1:]))
    backend = EtcdBackend([m.endpoint], tls=pki.client_tls())
    try:
        from cilia.store import Kind, Store

        store = Store(backend)
        key = Kind.SERVICES.key("default", "tls-check")
        store.put(key, {"spec": {"clusterIP": "198.18.255.99"}})
        rec = store.get(key)
        assert rec is not None and rec.value == {"spec": {"clusterIP": "198.18.255.99"}}
    finally:
        backend.close()


def test_agents_and_cli_dial_the_labs_etcd_with_its_client_certificate(tmp_path: Path) -> None:
    from dataclasses import replace

    from cilia.agent.cluster import LAB_ETCD_HOST, etcd_client_tls, member_config
    from cilia.agent.config import AgentConfig
    from cilia.lab import etcd_pki, nodes_lab

    assert LAB_ETCD_HOST == nodes_lab.BRIDGE_ADDRESS and LAB_ETCD_HOST in etcd_pki.SERVER_IPS
    base = replace(AgentConfig.resolve(tmp_path / "state", tmp_path / "run"), store="etcd",
                   etcd_endpoints=f"{LAB_ETCD_HOST}:2379", cluster_size=2)
    assert etcd_client_tls(base) is None  # no lab PKI: an etcd the user gave, dialled as it is
    pki = tmp_path / "state" / "etcd" / "pki"
    pki.mkdir(parents=True)
    (pki / "ca.crt").write_text("")
    want = (str(pki / "ca.crt"), str(pki / "client.crt"), str(pki / "client.key"))
    assert etcd_client_tls(base) == want
    assert etcd_client_tls(member_config(base, 1)) == want  # a node's agent: the cluster's PKI
    assert etcd_client_tls(replace(base, etcd_endpoints="10.0.0.1:2379")) is None
