"""eBPF host routing on real packets: pod to pod on one node goes from the source's program straight
into the destination's namespace (the destination's host veth transmits nothing), the destination's
ingress policy still decides (drops with its endpoint, device and rule), replies pass through
conntrack; with host routing off the same traffic takes the host's stack. The same for IPv6 (the
pods' 2001:2:: twins), with a real-packet differential against cilia.datapath.sim on that path."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from helpers_bpf import private_datapath
from helpers_netns import GATEWAY, Pod, probe_cmd, routed_pods
from test_bpf_netns import PORTS, random_ingress

from cilia.datapath import sim
from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.dualstack import ipv6_of
from cilia.datapath.maps.config import DatapathConfig
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.datapath.maps.events import PolicyEvent
from cilia.policy.types import Direction, Entry, Key, RuleRef

pytestmark = pytest.mark.root

ING, EG = int(Direction.INGRESS), int(Direction.EGRESS)
TCP = 6
FRONT, BACK, OTHER = 1001, 1002, 1003
EPS = {FRONT: 21, BACK: 22, OTHER: 23}
PORT = 7070


def ref(name: str) -> frozenset[RuleRef]:
    return frozenset({RuleRef("CiliumNetworkPolicy", "default", name, "ingress", 0)})


EGRESS_ALL = {Key(0, EG, 0, 0, 0): Entry(False, ref("egress-all"))}
BACKEND = {Key(FRONT, ING, TCP, PORT, 16): Entry(False, ref("hr-front")),
           Key(OTHER, ING, TCP, PORT, 16): Entry(True, ref("hr-deny-other")), **EGRESS_ALL}

SERVER = ("import socket,sys\n"
          "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
          "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind((sys.argv[1],7070))\n"
          "s.listen()\n"
          "while True:\n c,_=s.accept()\n while (d:=c.recv(65536)):\n  c.sendall(d)\n c.close()\n")
# 200 request/response round trips on one connection: "ok" or the error
CLIENT = ("import socket,sys\n"
          "try:\n"
          " c=socket.create_connection((sys.argv[1],7070),1);c.settimeout(1)\n"
          " for _ in range(200):\n  c.sendall(b'x');assert c.recv(1)==b'x'\n"
          " print('ok')\n"
          "except OSError as e:\n print(type(e).__name__)\n")


def tx_packets(dev: str) -> int:
    return int(Path(f"/sys/class/net/{dev}/statistics/tx_packets").read_text())


def drain(dp: Datapath) -> list[PolicyEvent]:
    out: list[PolicyEvent] = []
    while dp.read_events(out.append, timeout_ms=0):
        pass
    return out


def talk(client: Pod, server: Pod, v6: bool = False) -> tuple[str, int]:
    """(the client's outcome, packets the server's host veth transmitted meanwhile)."""
    before = tx_packets(server.host_if)
    out = client.run("python3", "-c", CLIENT, ipv6_of(server.ip) if v6 else server.ip).stdout.strip()
    return out, tx_packets(server.host_if) - before


def guard_forwarded(dp: Datapath) -> int:
    """Packets to_container programs forwarded without enforcing (a guard-only device's egress)."""
    rows = dp.metrics()
    return sum(r.packets for r in rows if (r.direction, r.verdict, r.reason) == ("ingress", "forwarded", ""))


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def add_ipv6(pods: list[Pod]) -> None:
    """The pods' IPv6 twins, routed as the lab routes them (cilia.lab.veth): the gateway's /128 on each
    host veth (forwarding on that device only), the pod's /128 and 2001:2::/48 via the gateway."""
    gw6 = ipv6_of(GATEWAY)
    for pod in pods:
        ip6 = ipv6_of(pod.ip)
        for key in ("accept_dad", "accept_ra"):
            sh("ip", "netns", "exec", pod.netns, "sysctl", "-qw", f"net.ipv6.conf.eth0.{key}=0")
        for key in ("force_forwarding", "forwarding"):  # forwarding: router behaviour, the fib helper's check
            Path(f"/proc/sys/net/ipv6/conf/{pod.host_if}/{key}").write_text("1\n")
        sh("ip", "addr", "add", f"{gw6}/128", "dev", pod.host_if, "nodad")
        sh("ip", "-6", "route", "add", f"{ip6}/128", "dev", pod.host_if)
        sh("ip", "-n", pod.netns, "addr", "add", f"{ip6}/128", "dev", "eth0", "nodad")
        sh("ip", "-n", pod.netns, "-6", "route", "add", f"{gw6}/128", "dev", "eth0")
        sh("ip", "-n", pod.netns, "-6", "route", "add", "2001:2::/48", "via", gw6, "dev", "eth0")


def test_pod_to_pod_bypasses_the_host_and_keeps_policy(tmp_path: Path) -> None:
    with routed_pods(3, first_host=160) as pods, private_datapath(tmp_path) as dp:
        front, back, other = pods
        add_ipv6(pods)
        dp.upsert_ipcache(f"{GATEWAY}/32", 1)
        dp.upsert_ipcache(f"{ipv6_of(GATEWAY)}/128", 1)
        for pod, ident in zip(pods, (FRONT, BACK, OTHER), strict=True):
            dp.upsert_ipcache(f"{pod.ip}/32", ident)
            dp.upsert_ipcache(f"{ipv6_of(pod.ip)}/128", ident)
            dp.attach(pod.ifindex, EPS[ident], ident)
            dp.set_policy(EPS[ident], BACKEND if ident == BACK else EGRESS_ALL)
        back.spawn("python3", "-c", SERVER, back.ip)
        back.spawn("python3", "-c", SERVER, ipv6_of(back.ip))
        for v6 in (False, True):
            for _ in range(100):
                if talk(front, back, v6)[0] == "ok":
                    break
                time.sleep(0.05)
        drain(dp)

        # allowed: 200 round trips, and the backend's host veth transmitted (almost) none of them:
        # the requests went from front's program into back's namespace (the first packets of a
        # connection may precede the neighbour entry and take the stack)
        out, tx = talk(front, back)
        assert out == "ok" and tx < 20, tx
        # replies are host-routed too: front's host veth transmits none of the 200 answers
        before = tx_packets(front.host_if)
        assert talk(front, back)[0] == "ok" and tx_packets(front.host_if) - before < 20

        # denied by back's ingress policy, decided in other's program: the event names back's
        # endpoint, back's device and the deny rule
        assert talk(other, back)[0] in ("TimeoutError", "timeout")
        drops = [e for e in drain(dp) if not e.allowed]
        assert drops and {(e.endpoint_id, e.ifindex, e.direction, dp.rules_for(e.cookie)) for e in drops} == {
            (EPS[BACK], back.ifindex, Direction.INGRESS, ref("hr-deny-other"))}

        # IPv6 likewise: requests and replies host-routed, other's drop decided for back's ingress
        out, tx = talk(front, back, v6=True)
        assert out == "ok" and tx < 20, tx
        before = tx_packets(front.host_if)
        assert talk(front, back, v6=True)[0] == "ok" and tx_packets(front.host_if) - before < 20
        assert talk(other, back, v6=True)[0] in ("TimeoutError", "timeout")
        drops = [e for e in drain(dp) if not e.allowed]
        assert drops and {(e.dst, e.endpoint_id, e.ifindex, e.direction, dp.rules_for(e.cookie))
                          for e in drops} == {
            (ipv6_of(back.ip), EPS[BACK], back.ifindex, Direction.INGRESS, ref("hr-deny-other"))}

        # the local endpoint map (cilia_lxc, as the agent fills it): host routing finds the pods
        # without the fib lookup. With forwarding off on front's host veth the fib helper refuses
        # (and so would the stack), so front reaches back only through the map's entries; a stale
        # entry (back's address on a device that is another endpoint's) is never used
        for pod in pods:
            for ip in (pod.ip, ipv6_of(pod.ip)):
                dp.set_local_endpoint(ip, pod.ifindex)
        assert {(e.ip, e.ifindex, e.endpoint_id) for e in dp.local_endpoints()} == {
            (ip, pod.ifindex, EPS[ident]) for pod, ident in zip(pods, (FRONT, BACK, OTHER), strict=True)
            for ip in (pod.ip, ipv6_of(pod.ip))}
        forwarding = [Path(f"/proc/sys/net/ipv4/conf/{front.host_if}/forwarding"),
                      *(Path(f"/proc/sys/net/ipv6/conf/{front.host_if}/{k}") for k in ("force_forwarding",
                                                                                      "forwarding"))]
        right = dp.lxc.get(back.ip)
        assert right is not None
        try:
            for f in forwarding:
                f.write_text("0\n")
            for v6 in (False, True):
                out, tx = talk(front, back, v6)
                assert out == "ok" and tx < 5, (v6, tx)
            dp.lxc.set(right._replace(ifindex=other.ifindex))  # other's device, back's endpoint id
            drain(dp)
            assert talk(front, back)[0] in ("TimeoutError", "timeout")
            assert not [e for e in drain(dp) if e.endpoint_id == EPS[OTHER]]  # nothing went to other
            dp.lxc.set(right)
            assert talk(front, back)[0] == "ok"
        finally:
            for f in forwarding:
                f.write_text("1\n")

        # the real-packet differential on the host-routed IPv6 path: back's ingress from random
        # policies, decided in the clients' programs, equals the sim's verdict on every port
        rnd, checked, tx = random.Random(17), 0, tx_packets(back.host_if)
        try:
            for _ in range(6):
                ms = random_ingress(rnd)
                dp.set_policy(EPS[BACK], ms)
                targets = [(ipv6_of(back.ip), port) for port in PORTS]
                probers = [(ident, pod.spawn(*probe_cmd(targets, wait_s=0.3)))  # both clients at once
                           for pod, ident in ((front, FRONT), (other, OTHER))]
                for ident, proc in probers:
                    got = json.loads(proc.communicate(timeout=30)[0])[0]
                    assert got == [sim.policy_lookup(ms, ident, ING, TCP, port).allowed for port in PORTS], (
                        ms, ident)
                    checked += len(PORTS)
        finally:
            dp.set_policy(EPS[BACK], BACKEND)
        assert checked == 72 and tx_packets(back.host_if) - tx < 20

        # host routing off: the same traffic goes through the host's stack (and back's to_container)
        dp.config_map.set(DatapathConfig(events_per_sec=1_000_000, host_routing=False))
        out, tx = talk(front, back)
        assert out == "ok" and tx >= 200, tx
        out, tx = talk(front, back, v6=True)
        assert out == "ok" and tx >= 200, tx

        # out of the pods (route_out): other becomes a guard-only device (as a world host's veth is);
        # the host's forward hook drops front -> other, which bpf_redirect_neigh does not cross;
        # the guard's egress program on other's device still sees every packet
        other.spawn("python3", "-c", SERVER, other.ip)
        dp.set_policy(0xFF01, {})
        dp.endpoints.set(EndpointInfo(other.ifindex, 0xFF01, 2, EndpointFlags.POLICY_READY))
        dp.config_map.set(DatapathConfig(events_per_sec=1_000_000, route_out=True))
        table = f"cilia_hrtest_{os.getpid()}"
        nft = (f"table inet {table} {{\n chain forward {{\n"
               "  type filter hook forward priority filter; policy accept;\n"
               f'  iifname "{front.host_if}" oifname "{other.host_if}" drop\n }}\n}}\n')
        subprocess.run(["nft", "-f", "-"], input=nft, text=True, check=True, capture_output=True)
        try:
            for _ in range(50):  # other's server starting
                if talk(front, other)[0] == "ok":
                    break
                time.sleep(0.05)
            guard = guard_forwarded(dp)
            assert talk(front, other)[0] == "ok"
            assert guard_forwarded(dp) - guard >= 200
            dp.config_map.set(DatapathConfig(events_per_sec=1_000_000, route_out=False))
            assert talk(front, other)[0] in ("TimeoutError", "timeout")
        finally:
            subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, check=False)

        # a detached device takes its addresses out of the local endpoint map
        dp.detach(back.ifindex)
        assert {e.ip for e in dp.local_endpoints()} == {ip for pod in (front, other)
                                                        for ip in (pod.ip, ipv6_of(pod.ip))}
