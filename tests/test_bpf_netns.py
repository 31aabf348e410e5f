"""The kernel datapath on real packets between routed pod namespaces: TCP (HTTP + curl), UDP and
ICMP allowed and denied as the MapState says, decoded drop events, counters, a real-packet
differential against cilia.datapath.sim, and policy churn while traffic flows."""

from __future__ import annotations

import random
import time

import pytest
from helpers_bpf import private_datapath
from helpers_netns import GATEWAY, Pod, probe, routed_pods

from cilia.datapath import sim
from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.maps.events import PolicyEvent
from cilia.policy.mapstate import MapState
from cilia.policy.types import Direction, DropReason, Entry, Key, MatchType, RuleRef

pytestmark = pytest.mark.root

ING, EG = int(Direction.INGRESS), int(Direction.EGRESS)
TCP, UDP, ICMP = 6, 17, 1
FRONT, BACK, OTHER = 1001, 1002, 1003
EPS = {FRONT: 11, BACK: 12, OTHER: 13}
HOST = 1


def ref(name: str, section: str = "ingress") -> frozenset[RuleRef]:
    return frozenset({RuleRef("CiliumNetworkPolicy", "default", name, section, 0)})


ALLOW_ALL_EGRESS = {Key(0, EG, 0, 0, 0): Entry(False, ref("allow-any-egress", "egress"))}
BACKEND = {
    Key(FRONT, ING, TCP, 8080, 16): Entry(False, ref("frontend-http")),
    Key(FRONT, ING, UDP, 5353, 16): Entry(False, ref("frontend-udp")),
    Key(FRONT, ING, ICMP, 8, 16): Entry(False, ref("frontend-ping")),
    Key(OTHER, ING, TCP, 8080, 16): Entry(True, ref("deny-other", "ingressDeny")),
    **ALLOW_ALL_EGRESS,
}

UDP_ECHO = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind((sys.argv[1],5353))\n"
    "while True:\n d,a=s.recvfrom(2048);s.sendto(d,a)\n"
)
UDP_CLIENT = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(1)\n"
    "s.sendto(b'hi',(sys.argv[1],5353))\n"
    "try:\n print(s.recv(100).decode())\nexcept OSError:\n print('timeout')\n"
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    with routed_pods(3) as pods, private_datapath(tmp_path_factory.mktemp("netns")) as dp:
        front, back, other = pods
        dp.upsert_ipcache(f"{GATEWAY}/32", HOST)
        for pod, ident in zip(pods, (FRONT, BACK, OTHER), strict=True):
            dp.upsert_ipcache(f"{pod.ip}/32", ident)
            dp.attach(pod.ifindex, EPS[ident], ident)
        dp.set_policy(EPS[FRONT], ALLOW_ALL_EGRESS)
        dp.set_policy(EPS[OTHER], ALLOW_ALL_EGRESS)
        dp.set_policy(EPS[BACK], BACKEND)
        back.spawn("python3", "-m", "http.server", "8080", "--bind", back.ip)
        back.spawn("python3", "-c", UDP_ECHO, back.ip)
        for _ in range(100):
            if back.run("python3", "-c", f"import socket;socket.create_connection(('{back.ip}',8080),1)"
                        ).returncode == 0:
                break
            time.sleep(0.05)
        yield dp, front, back, other


def drain(dp: Datapath) -> list[PolicyEvent]:
    out: list[PolicyEvent] = []
    while dp.read_events(out.append, timeout_ms=0):
        pass
    return out


def curl(pod: Pod, url: str) -> str:
    return pod.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1.5", url).stdout


def test_tcp_udp_icmp_allowed_and_denied(lab: tuple[Datapath, Pod, Pod, Pod]) -> None:
    dp, front, back, other = lab
    drain(dp)
    before = {(r.direction, r.verdict, r.reason): r.packets for r in dp.metrics()}
    url = f"http://{back.ip}:8080/"
    results = {
        "front http": curl(front, url),
        "other http": curl(other, url),
        "front udp": front.run("python3", "-c", UDP_CLIENT, back.ip).stdout.strip(),
        "other udp": other.run("python3", "-c", UDP_CLIENT, back.ip).stdout.strip(),
        "front ping": front.run("ping", "-c", "1", "-W", "1", back.ip).returncode,
        "other ping": other.run("ping", "-c", "1", "-W", "1", back.ip).returncode,
    }
    assert results == {"front http": "200", "other http": "000", "front udp": "hi", "other udp": "timeout",
                       "front ping": 0, "other ping": 1}
    drops = {(e.src, e.dst, e.proto, e.dport, e.direction, e.reason, e.match_type, e.endpoint_id,
              e.ifindex, e.src_identity, e.dst_identity, dp.rules_for(e.cookie))
             for e in drain(dp) if not e.allowed}
    assert drops == {
        (other.ip, back.ip, TCP, 8080, Direction.INGRESS, DropReason.POLICY_DENY, MatchType.L3_L4, EPS[BACK],
         back.ifindex, OTHER, BACK, ref("deny-other", "ingressDeny")),
        (other.ip, back.ip, UDP, 5353, Direction.INGRESS, DropReason.POLICY_DENIED, MatchType.NONE, EPS[BACK],
         back.ifindex, OTHER, BACK, frozenset()),
        (other.ip, back.ip, ICMP, 8, Direction.INGRESS, DropReason.POLICY_DENIED, MatchType.NONE, EPS[BACK],
         back.ifindex, OTHER, BACK, frozenset()),
    }
    after = {(r.direction, r.verdict, r.reason): r.packets for r in dp.metrics()}
    moved = {k for k in after if after[k] > before.get(k, 0)}
    assert {("ingress", "dropped", "Policy denied by denylist"), ("ingress", "dropped", "Policy denied"),
            ("ingress", "forwarded", ""), ("egress", "forwarded", ""),
            ("egress", "forwarded", "reply")} <= moved


def test_revoke_cuts_established_forward_traffic(lab: tuple[Datapath, Pod, Pod, Pod]) -> None:
    dp, front, back, _ = lab
    assert curl(front, f"http://{back.ip}:8080/") == "200"
    without = {k: v for k, v in BACKEND.items() if k != Key(FRONT, ING, TCP, 8080, 16)}
    dp.apply_diff(EPS[BACK], BACKEND, without)
    try:
        assert curl(front, f"http://{back.ip}:8080/") == "000"
    finally:
        dp.apply_diff(EPS[BACK], without, BACKEND)
    assert curl(front, f"http://{back.ip}:8080/") == "200"


PORTS = (80, 81, 443, 8080, 8081, 9000)


def random_ingress(rnd: random.Random) -> dict[Key, Entry]:
    ms = MapState()
    for _ in range(rnd.randint(1, 6)):
        ident = rnd.choice((0, FRONT, OTHER))
        r = rnd.random()
        if r < 0.15:
            key = Key(ident, ING, 0, 0, 0)
        elif r < 0.3:
            key = Key(ident, ING, TCP, 0, 0)
        else:
            plen = rnd.choice((16, 16, 15, 10))
            key = Key(ident, ING, TCP, rnd.choice(PORTS) & ((0xFFFF << (16 - plen)) & 0xFFFF), plen)
        ms.insert(key, Entry(rnd.random() < 0.3, ref(f"r{rnd.randint(0, 3)}")))
    return {**dict(ms.items()), **ALLOW_ALL_EGRESS}


def test_real_packets_differential_against_sim(lab: tuple[Datapath, Pod, Pod, Pod]) -> None:
    dp, front, back, other = lab
    rnd = random.Random(7)
    checked = 0
    try:
        for _ in range(12):
            ms = random_ingress(rnd)
            dp.set_policy(EPS[BACK], ms)
            for pod, ident in ((front, FRONT), (other, OTHER)):
                got = probe(pod, [(back.ip, p) for p in PORTS], wait_s=0.4)[0]
                want = [sim.policy_lookup(ms, ident, ING, TCP, p).allowed for p in PORTS]
                assert got == want, (ms, ident)
                checked += len(PORTS)
    finally:
        dp.set_policy(EPS[BACK], BACKEND)
    assert checked == 144


def test_policy_churn_while_traffic_flows(lab: tuple[Datapath, Pod, Pod, Pod]) -> None:
    """Per transition old → new (applied with 15 ms between map operations while both clients
    probe every port): no flow denied by both gets through, no flow allowed by both fails."""
    dp, front, back, other = lab
    rnd = random.Random(11)
    m = dp.policy.m
    real_update, real_delete = m.update, m.delete

    def slow_update(*a: object, **kw: object) -> None:
        real_update(*a, **kw)  # type: ignore[arg-type]
        time.sleep(0.015)

    def slow_delete(*a: object, **kw: object) -> bool:
        r = real_delete(*a, **kw)  # type: ignore[arg-type]
        time.sleep(0.015)
        return r

    leaked = failed = probes_checked = 0
    cur = random_ingress(rnd)
    dp.set_policy(EPS[BACK], cur)
    m.update, m.delete = slow_update, slow_delete  # type: ignore[method-assign]
    try:
        for _ in range(8):
            new = random_ingress(rnd)
            ports = ",".join(map(str, PORTS))
            clients = [(pod, ident, pod.spawn("python3", "-c", _PROBE_LOOP, back.ip, ports))
                       for pod, ident in ((front, FRONT), (other, OTHER))]
            time.sleep(0.3)
            dp.apply_diff(EPS[BACK], cur, new)
            time.sleep(0.3)
            for pod, ident, proc in clients:
                proc.wait(timeout=30)
                rounds = [list(map(int, line.split(","))) for line in proc.stdout.read().split()]  # type: ignore[union-attr]
                pod.procs.remove(proc)
                for i, p in enumerate(PORTS):
                    old_ok = sim.policy_lookup(cur, ident, ING, TCP, p).allowed
                    new_ok = sim.policy_lookup(new, ident, ING, TCP, p).allowed
                    if old_ok != new_ok:
                        continue
                    for rd in rounds:
                        probes_checked += 1
                        leaked += (not old_ok) and rd[i] == 1
                        failed += old_ok and rd[i] == 0
            cur = new
    finally:
        m.update, m.delete = real_update, real_delete  # type: ignore[method-assign]
        dp.set_policy(EPS[BACK], BACKEND)
    print(f"churn: {probes_checked} probes of stable flows, {leaked} leaked, {failed} failed")
    assert probes_checked > 100
    assert (leaked, failed) == (0, 0)


# rounds of concurrent connects for ~1 s, one CSV line of 0/1 per round
_PROBE_LOOP = (
    "import socket,select,time,errno,sys\n"
    "host=sys.argv[1];ports=[int(p) for p in sys.argv[2].split(',')]\n"
    "end=time.monotonic()+1.0\n"
    "while time.monotonic()<end:\n"
    " ss=[]\n"
    " for p in ports:\n"
    "  s=socket.socket();s.setblocking(False);s.connect_ex((host,p));ss.append(s)\n"
    " ok=[0]*len(ss);pend={s.fileno():i for i,s in enumerate(ss)};dl=time.monotonic()+0.25\n"
    " while pend and time.monotonic()<dl:\n"
    "  _,w,_=select.select([],list(pend),[],max(0,dl-time.monotonic()))\n"
    "  for fd in w:\n"
    "   i=pend.pop(fd);e=ss[i].getsockopt(socket.SOL_SOCKET,socket.SO_ERROR)\n"
    "   ok[i]=int(e in (0,errno.ECONNREFUSED))\n"
    " [s.close() for s in ss]\n"
    " print(','.join(map(str,ok)),flush=True)\n"
)
