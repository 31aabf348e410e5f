"""Datapath benchmark: pod→pod throughput (iperf3) and request/response latency (sockperf TCP
ping-pong, p50 half round trip) for eight configurations, interleaved round by round (the order
rotates each round), medians:

* ``floor``    two namespaces joined by one veth pair, no host hop and no program: the physical
  floor for two namespaces on this machine;
* ``none``     routed pods (host veths, the host's IP stack in between), no program on the veths;
* ``noop``     a program that only returns "ok", attached as cilia's are (tcx, or clsact where the
  kernel has no tcx): what the hook itself costs on this machine, apart from any policy work;
* ``cilia``    cilia's programs with an allow policy (frontend egress all, backend ingress from
  frontend on the two benchmark ports), eBPF host routing on (the default: both verdicts in the
  sender's program, then bpf_redirect_peer into the receiver's namespace), and the pods' devices
  as the lab makes them: BIG TCP on (192 KiB GSO/GRO, :mod:`cilia.lab.bigtcp`, as Cilium's
  ``enable-ipv4-big-tcp`` with eBPF host routing);
* ``bigtcp``   no program, the devices with BIG TCP as in ``cilia``: how much of cilia's throughput
  is BIG TCP's, apart from the datapath (a reference, not a target);
* ``stack``    the same with host routing off (and, as in Cilium, without BIG TCP, which needs it):
  each packet crosses the host's IP stack and both programs, as before host routing;
* ``scale``    the same plus 100,000 unrelated policy entries (other endpoints) and 100,000 ipcache
  entries (a second pinned datapath, swapped in with an atomic program replace);
* ``iptables`` no program; a FORWARD-chain jump (only for the bench's veths) into a chain of 10,000
  rules expressing the same policy: conntrack replies first (as cilia's CT), then 9,997 rules for
  unrelated peers, then the 2 real allows, then drop — every forward packet walks the list, as every
  forward packet does a policy lookup in cilia.

Last line: ``summary: throughput_ratio=cilia/none latency_ratio=cilia/none scale_ratio=scale/cilia
(latency) iptables_latency_ratio=iptables/cilia hook_latency_ratio=noop/none
policy_latency_ratio=cilia/noop floor_latency_ratio=cilia/floor stack_latency_ratio=stack/none
stack_throughput_ratio=stack/none bigtcp_throughput_ratio=cilia/bigtcp``.
Needs root, iperf3, sockperf, iptables.

``--out`` measures instead traffic that leaves the pods, to a lab device that is not a pod (the
receiver registered as a guard-only device, as a world host's veth or a node's underlay is):
``none`` (no program), ``neigh`` (cilia, host routing with ``route_out``: bpf_redirect_neigh out of
the device, the guard's egress program still runs) and ``stack`` (cilia, the host's forwarding
path); ``summary: out_throughput_ratio=neigh/stack out_latency_ratio=neigh/stack
neigh_none_latency_ratio=neigh/none``.

CPU idle: by default the run holds ``/dev/cpu_dma_latency`` at 0 (as tuned's latency-performance
profile does), so an idle vCPU polls instead of halting. On this VM (cpuidle haltpoll with
``guest_halt_poll_ns=0``) a halted vCPU's wake-up is a hypervisor round trip: on a quiet machine it
made the p50 of every configuration ~40 us (the floor 40.2 us, against ~4 us when the machine is
busy), so the ratios measured the wake-up, not the datapath. ``--cpu-idle halt`` measures that way.
Latency CPU: by default sockperf's client and server are pinned to one CPU (the last), as TCP_RR
runs are usually pinned. Left to the scheduler (``--latency-cpu free``) the p50 of one configuration
ranged 5.2–10.4 us between rounds of one run (2 vCPUs, another job's load): a round measured mostly
whether the two ended up on different vCPUs (a cross-CPU wake-up per message: client on CPU 0 and
server on CPU 1 gave ~13 us for both none and cilia, the same CPU ~5 us). Pinned, the datapath's
own cost is what differs between configurations. ``--configs`` and ``--latency-only`` run a subset
quickly (no summary line then).
Each round line also gives ``tx`` = packets the two host veths transmitted in the round (eBPF host
routing bypasses them: ``cilia`` should show ~0, ``stack`` and ``none`` one per packet).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers_netns import GATEWAY, Pod, routed_pods

from cilia.datapath.bpf import libbpf, loader, tcx
from cilia.datapath.bpf.build import CFLAGS
from cilia.datapath.bpf.libbpf import test_run
from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.maps.config import DatapathConfig
from cilia.lab import bigtcp
from cilia.policy.types import Entry, Key, RuleRef

FRONT, BACK = 1001, 1002
EP_FRONT, EP_BACK = 11, 12
IPERF_PORT, SOCKPERF_PORT = 5201, 11111
TCP, ING, EG = 6, 0, 1
CHAIN = "CILIA-BENCH"
FILLER = 100_000
IPT_RULES = 10_000
CONFIGS = ("floor", "none", "noop", "cilia", "bigtcp", "stack", "scale", "iptables")
# sockperf's client and server: pinned to one CPU (``--latency-cpu same``) or left to the scheduler
PIN: list[str] = []


NOOP_C = """#include <linux/bpf.h>
#include <linux/pkt_cls.h>
__attribute__((section("tc"), used)) int noop(struct __sk_buff *skb) { return TC_ACT_OK; }
char _license[] __attribute__((section("license"), used)) = "GPL";
"""


def load_noop(tmp: Path) -> libbpf.BpfObject:
    """The do-nothing tc program, compiled with the datapath's flags and loaded (no maps, no pins)."""
    src, obj = tmp / "noop.c", tmp / "noop.o"
    src.write_text(NOOP_C)
    subprocess.run(["clang", *CFLAGS, "-c", str(src), "-o", str(obj)], check=True)
    prog = libbpf.BpfObject(str(obj))
    prog.load()
    return prog


def attach_noop(prog: libbpf.BpfObject, ifindex: int, links: list[int]) -> None:
    """On both hooks as cilia's programs are: tcx links (their fds kept in ``links``; closing them
    detaches), or clsact filters under cilia's handle and priority (``loader.detach`` removes them)."""
    if loader.attach_mode() == "tcx":
        for point in loader.TCX_POINTS.values():
            links.append(tcx.link_create(prog.program_fd("noop"), ifindex, point))
        return
    for point in loader.PROGRAMS.values():
        libbpf.tc_hook_create(ifindex, point)
        libbpf.tc_attach(ifindex, point, prog.program_fd("noop"), loader.TC_HANDLE, loader.TC_PRIORITY,
                         replace=True)


def detach_all(pods: list[Pod], links: list[int], pin_root: str) -> None:
    for fd in links:
        os.close(fd)
    links.clear()
    for pod in pods:
        loader.detach(pod.ifindex, destroy_qdisc=True, pin_root=pin_root)


FLOOR_NS = ("cilia-bfloor-a", "cilia-bfloor-b")
FLOOR_IPS = ("198.18.203.10", "198.18.203.20")


@contextlib.contextmanager
def floor_pods() -> Iterator[tuple[Pod, Pod]]:
    """Two namespaces joined by one veth pair (no host side, no routing): removed afterwards."""
    def ip(*argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)

    pods = []
    try:
        for ns in FLOOR_NS:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)  # a crashed run's
            ip("netns", "add", ns)
        ip("link", "add", "ciliafl0", "netns", FLOOR_NS[0], "type", "veth", "peer", "name", "ciliafl1",
           "netns", FLOOR_NS[1])
        for i, (ns, addr) in enumerate(zip(FLOOR_NS, FLOOR_IPS, strict=True)):
            dev = f"ciliafl{i}"
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            pods.append(Pod(ns, addr, dev, 0))
        yield pods[0], pods[1]
    finally:
        for pod in pods:
            for p in pod.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for ns in FLOOR_NS:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@contextlib.contextmanager
def cpu_idle(mode: str) -> Iterator[None]:
    """``poll``: a PM QoS request of 0 us wake-up latency (kept while the file is open); ``halt``:
    the machine's default idle."""
    if mode == "halt":
        yield
        return
    fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
    try:
        os.write(fd, struct.pack("i", 0))
        yield
    finally:
        os.close(fd)


def tx_packets(pods: tuple[Pod, Pod]) -> int:
    return sum(int(Path(f"/sys/class/net/{p.host_if}/statistics/tx_packets").read_text()) for p in pods)


BIG_TCP_CONFIGS = ("cilia", "scale", "bigtcp")  # the devices as the lab makes them (host routing on)


def device_sizes(pods: tuple[Pod, Pod], size: int) -> None:
    """GSO/GRO limits of both pods' devices, each side of each veth (BIG TCP on or off)."""
    for pod in pods:
        bigtcp.set_max_sizes("eth0", size, pod.netns)
        bigtcp.set_max_sizes(pod.host_if, size)


def start_servers(back: Pod) -> None:
    for argv in (["iperf3", "-s", "-B", back.ip, "-p", str(IPERF_PORT)],
                 [*PIN, "sockperf", "server", "--tcp", "-i", back.ip, "-p", str(SOCKPERF_PORT)]):
        # servers write nothing we read: no pipes that could fill up and stall them
        back.procs.append(subprocess.Popen(back.cmd(*argv), stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))


def rule(name: str) -> frozenset[RuleRef]:
    return frozenset({RuleRef("CiliumNetworkPolicy", "bench", name, "ingress", 0)})


POLICY_FRONT = {Key(0, EG, 0, 0, 0): Entry(False, rule("front-egress"))}
POLICY_BACK = {Key(FRONT, ING, TCP, IPERF_PORT, 16): Entry(False, rule("iperf")),
               Key(FRONT, ING, TCP, SOCKPERF_PORT, 16): Entry(False, rule("sockperf")),
               Key(0, EG, 0, 0, 0): Entry(False, rule("back-egress"))}


def setup_datapath(pin_root: str, state: Path, front: Pod, back: Pod, filler: bool,
                   host_routing: bool = True) -> Datapath:
    dp = Datapath(pin_root=pin_root, state_dir=state, max_entries_per_endpoint=16384,
                  config=DatapathConfig(host_routing=host_routing)).open()
    dp.upsert_ipcache(f"{GATEWAY}/32", 1)
    dp.upsert_ipcache(f"{front.ip}/32", FRONT)
    dp.upsert_ipcache(f"{back.ip}/32", BACK)
    if filler:
        t = time.perf_counter()
        prefixes: list[tuple[str, int]] = []
        for plen in range(32, 16, -1):  # distinct prefixes inside 198.19.0.0/16 (never routed here)
            for net in ipaddress.ip_network("198.19.0.0/16").subnets(new_prefix=plen):
                prefixes.append((str(net), 16777217 + len(prefixes)))
                if len(prefixes) == FILLER:
                    break
            if len(prefixes) == FILLER:
                break
        dp.ipcache.upsert_many(prefixes)
        per_ep = 16000
        for i in range(FILLER // per_ep + 1):
            n = min(per_ep, FILLER - i * per_ep)
            ms = {Key(2000 + j, ING, TCP, 1 + (j % 60000), 16): Entry(False, rule(f"f{i}")) for j in range(n)}
            dp.set_policy(100 + i, ms)
        took = time.perf_counter() - t
        print(f"scale datapath: {FILLER} ipcache + {FILLER} policy entries in {took:.1f} s", flush=True)
    for pod, ident, ep, pol in ((front, FRONT, EP_FRONT, POLICY_FRONT), (back, BACK, EP_BACK, POLICY_BACK)):
        dp.endpoints.set(dp.endpoints.get(pod.ifindex) or _info(pod.ifindex, ep, ident))
        dp.set_policy(ep, pol)
        if dp.lxc is not None:  # the local endpoint map, as the agent fills it for its pods
            dp.set_local_endpoint(pod.ip, pod.ifindex)
    return dp


GUARD_EP, WORLD = 0xFF01, 2


def setup_out_datapath(pin_root: str, state: Path, front: Pod, back: Pod, route_out: bool) -> Datapath:
    """front a pod (egress: all), back a guard-only device (no enforcement, the guard only)."""
    from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo

    dp = Datapath(pin_root=pin_root, state_dir=state,
                  config=DatapathConfig(host_routing=True, route_out=route_out)).open()
    dp.upsert_ipcache(f"{GATEWAY}/32", 1)
    dp.upsert_ipcache(f"{front.ip}/32", FRONT)
    dp.endpoints.set(_info(front.ifindex, EP_FRONT, FRONT))
    dp.set_policy(EP_FRONT, POLICY_FRONT)
    dp.set_policy(GUARD_EP, {})
    dp.endpoints.set(EndpointInfo(back.ifindex, GUARD_EP, WORLD, EndpointFlags.POLICY_READY))
    return dp


def guard_seen(dp: Datapath) -> int:
    """Packets the datapath's to_container programs forwarded unenforced (the guard-only device's)."""
    rows = dp.metrics()
    return sum(r.packets for r in rows if (r.direction, r.verdict, r.reason) == ("ingress", "forwarded", ""))


def main_out(args: argparse.Namespace) -> None:
    configs = ("none", "neigh", "stack")
    results: dict[str, dict[str, list[float]]] = {c: {"gbps": [], "lat_us": []} for c in configs}
    roots = {"neigh": "/sys/fs/bpf/cilia/bench-neigh/v1", "stack": "/sys/fs/bpf/cilia/bench-ostack/v1"}
    with (tempfile.TemporaryDirectory() as tmp, routed_pods(2, first_host=110) as (front, back),
          cpu_idle(args.cpu_idle)):
        dps: dict[str, Datapath] = {}
        try:
            start_servers(back)
            time.sleep(1.0)
            for name, root in roots.items():
                dps[name] = setup_out_datapath(root, Path(tmp) / name, front, back, name == "neigh")
            print(f"attach mode: {loader.attach_mode()}; cpu idle: {args.cpu_idle}; out of the pods",
                  flush=True)
            for rnd in range(args.rounds):
                for config in configs[rnd % len(configs):] + configs[:rnd % len(configs)]:
                    for root in roots.values():
                        detach_all([front, back], [], root)
                    if config in dps:
                        coll = dps[config].coll
                        assert coll is not None
                        for pod in (front, back):
                            loader.attach(coll, pod.ifindex)
                    before = guard_seen(dps["neigh"])
                    tx = tx_packets((front, back))
                    g, lat = iperf(front, back, args.seconds), sockperf(front, back, args.seconds)
                    tx = tx_packets((front, back)) - tx
                    results[config]["gbps"].append(g)
                    results[config]["lat_us"].append(lat)
                    # neigh: the guard's egress program saw the redirected packets
                    guard = f"  guard egress {guard_seen(dps['neigh']) - before}" if config == "neigh" else ""
                    print(f"round {rnd + 1} {config:6s} {g:6.2f} Gbit/s  p50 {lat:6.2f} us  tx {tx}{guard}",
                          flush=True)
        finally:
            for root in roots.values():
                detach_all([front, back], [], root)
            for dp in dps.values():
                dp.teardown()
    med = {c: (statistics.median(r["gbps"]), statistics.median(r["lat_us"])) for c, r in results.items()}
    for c, (g, lat) in med.items():
        print(f"median {c:6s} {g:6.2f} Gbit/s  p50 latency {lat:6.2f} us")
    print(f"summary: out_throughput_ratio={med['neigh'][0] / med['stack'][0]:.3f} "
          f"out_latency_ratio={med['neigh'][1] / med['stack'][1]:.3f} "
          f"neigh_none_latency_ratio={med['neigh'][1] / med['none'][1]:.3f}")


def _info(ifindex: int, ep: int, ident: int):
    from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo

    return EndpointInfo(ifindex, ep, ident, EndpointFlags.enforcing())


def iptables_rules(front: Pod, back: Pod) -> str:
    lines = ["*filter", f":{CHAIN} - [0:0]",
             f"-A {CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED --ctdir REPLY -j ACCEPT"]
    unrelated = IPT_RULES - 3
    for i in range(unrelated):
        src = ipaddress.ip_address("198.19.0.0") + i
        lines.append(f"-A {CHAIN} -s {src}/32 -d {back.ip}/32 -p tcp --dport {1 + i % 60000} -j ACCEPT")
    for port in (IPERF_PORT, SOCKPERF_PORT):
        lines.append(f"-A {CHAIN} -s {front.ip}/32 -d {back.ip}/32 -p tcp --dport {port} -j ACCEPT")
    lines.append(f"-A {CHAIN} -j DROP")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def iptables_on(front: Pod, back: Pod) -> None:
    for dev in (front.host_if, back.host_if):
        subprocess.run(["iptables", "-I", "FORWARD", "-i", dev, "-j", CHAIN], check=True)


def iptables_off(front: Pod, back: Pod) -> None:
    for dev in (front.host_if, back.host_if):
        subprocess.run(["iptables", "-D", "FORWARD", "-i", dev, "-j", CHAIN], capture_output=True,
                       check=False)


def iptables_remove() -> None:
    subprocess.run(["iptables", "-F", CHAIN], capture_output=True, check=False)
    subprocess.run(["iptables", "-X", CHAIN], capture_output=True, check=False)


def iperf(front: Pod, back: Pod, seconds: int) -> float:
    out = front.run("iperf3", "-c", back.ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-J",
                    timeout=seconds + 30)
    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9


def sockperf(front: Pod, back: Pod, seconds: int) -> float:
    out = front.run(*PIN, "sockperf", "ping-pong", "--tcp", "-i", back.ip, "-p", str(SOCKPERF_PORT),
                    "-t", str(seconds), timeout=seconds + 30)
    m = re.search(r"percentile 50\.000 =\s+([\d.]+)", out.stdout)
    if not m:
        raise RuntimeError(f"sockperf output not understood:\n{out.stdout}\n{out.stderr}")
    return float(m.group(1))


def prog_cost(allow: Datapath, scale: Datapath, front: Pod, back: Pod) -> dict[str, int]:
    """Median ns per packet of the programs on crafted frames (policy path: a forward packet of an
    established connection is looked up every time; reply: conntrack only)."""
    from helpers_packets import frame

    out = {}
    fwd = frame(front.ip, back.ip, TCP, sport=33333, dport=IPERF_PORT, tcp_flags=0x10)
    syn = frame(front.ip, back.ip, TCP, sport=33333, dport=IPERF_PORT)
    reply = frame(back.ip, front.ip, TCP, sport=IPERF_PORT, dport=33333, tcp_flags=0x10)
    for label, dp in (("0 extra entries", allow), ("100k extra entries", scale)):
        assert dp.coll is not None
        progs = dp.coll.programs
        test_run(progs["to_container"], syn, ifindex=back.ifindex)  # opens the connection
        for path, prog, pkt, ifx in (("forward, policy lookup", "to_container", fwd, back.ifindex),
                                     ("reply, conntrack", "from_container", reply, back.ifindex)):
            runs = [test_run(progs[prog], pkt, ifindex=ifx, repeat=200_000)[1] for _ in range(3)]
            out[f"{path}, {label}"] = int(statistics.median(runs))
    return out


def main() -> None:
    # a `kill` ends the run through its finally blocks: pods, servers and pins are removed as on success
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--cpu-idle", choices=("poll", "halt"), default="poll",
                    help="poll: hold /dev/cpu_dma_latency at 0 during the run (default); halt: the VM's idle")
    ap.add_argument("--out", action="store_true", help="traffic out of the pods: none, neigh, stack")
    ap.add_argument("--latency-cpu", choices=("same", "free"), default="same",
                    help="same: sockperf's client and server on the last CPU (default); free: scheduler's")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="comma-separated subset to run (a quick look; the summary needs all eight)")
    ap.add_argument("--latency-only", action="store_true", help="skip iperf3 (throughput printed as 0)")
    args = ap.parse_args()
    if args.latency_cpu == "same":
        PIN[:] = ["taskset", "-c", str((os.cpu_count() or 1) - 1)]
    if args.out:
        main_out(args)
        return
    configs = tuple(c for c in CONFIGS if c in args.configs.split(","))
    results: dict[str, dict[str, list[float]]] = {c: {"gbps": [], "lat_us": []} for c in configs}
    roots = {"cilia": "/sys/fs/bpf/cilia/bench-allow/v1", "stack": "/sys/fs/bpf/cilia/bench-stack/v1",
             "scale": "/sys/fs/bpf/cilia/bench-scale/v1"}
    with (tempfile.TemporaryDirectory() as tmp, routed_pods(2, first_host=110) as (front, back),
          floor_pods() as (floor_a, floor_b), cpu_idle(args.cpu_idle)):
        dps: dict[str, Datapath] = {}
        noop = None
        links: list[int] = []
        ns_per_packet: dict[str, int] = {}
        try:
            start_servers(back)
            start_servers(floor_b)
            time.sleep(1.0)  # let the servers listen before the first client
            dps["cilia"] = setup_datapath(roots["cilia"], Path(tmp) / "a", front, back, False)
            dps["stack"] = setup_datapath(roots["stack"], Path(tmp) / "b", front, back, False,
                                          host_routing=False)
            dps["scale"] = setup_datapath(roots["scale"], Path(tmp) / "s", front, back, True)
            with tempfile.NamedTemporaryFile("w", suffix=".rules") as f:
                f.write(iptables_rules(front, back))
                f.flush()
                subprocess.run(["iptables-restore", "--noflush", f.name], check=True)
            noop = load_noop(Path(tmp))
            time.sleep(0.5)
            ns_per_packet = prog_cost(dps["cilia"], dps["scale"], front, back)
            print(f"attach mode: {loader.attach_mode()}; cpu idle: {args.cpu_idle}; "
                  f"latency cpu: {args.latency_cpu}", flush=True)
            for rnd in range(args.rounds):
                # rotate the order each round so that no configuration always runs first after setup
                for config in configs[rnd % len(configs):] + configs[:rnd % len(configs)]:
                    for root in roots.values():
                        detach_all([front, back], links, root)
                    iptables_off(front, back)
                    if config in dps:
                        coll = dps[config].coll
                        assert coll is not None
                        for pod in (front, back):
                            loader.attach(coll, pod.ifindex)
                    elif config == "noop":
                        assert noop is not None
                        for pod in (front, back):
                            attach_noop(noop, pod.ifindex, links)
                    elif config == "iptables":
                        iptables_on(front, back)
                    device_sizes((front, back), bigtcp.BIG_TCP_MAX_SIZE if config in BIG_TCP_CONFIGS
                                 else bigtcp.DEFAULT_MAX_SIZE)
                    a, b = (floor_a, floor_b) if config == "floor" else (front, back)
                    tx = tx_packets((a, b)) if config != "floor" else 0
                    g = 0.0 if args.latency_only else iperf(a, b, args.seconds)
                    lat = sockperf(a, b, args.seconds)
                    tx = tx_packets((a, b)) - tx if config != "floor" else 0
                    results[config]["gbps"].append(g)
                    results[config]["lat_us"].append(lat)
                    print(f"round {rnd + 1} {config:9s} {g:6.2f} Gbit/s  p50 {lat:6.2f} us  tx {tx}",
                          flush=True)
        finally:
            for root in roots.values():
                detach_all([front, back], links, root)
            if noop is not None:
                noop.close()
            iptables_off(front, back)
            iptables_remove()
            for dp in dps.values():
                dp.teardown()
        if ns_per_packet:
            for name, ns in ns_per_packet.items():
                print(f"in-kernel cost (BPF_PROG_TEST_RUN, 200k runs): {name:38s} {ns:5d} ns/packet")
    med = {c: (statistics.median(r["gbps"]), statistics.median(r["lat_us"])) for c, r in results.items()}
    for c, (g, lat) in med.items():
        print(f"median {c:9s} {g:6.2f} Gbit/s  p50 latency {lat:6.2f} us")
    if len(configs) < len(CONFIGS):
        return
    print(f"summary: throughput_ratio={med['cilia'][0] / med['none'][0]:.3f} "
          f"latency_ratio={med['cilia'][1] / med['none'][1]:.3f} "
          f"scale_ratio={med['scale'][1] / med['cilia'][1]:.3f} "
          f"iptables_latency_ratio={med['iptables'][1] / med['cilia'][1]:.3f} "
          f"hook_latency_ratio={med['noop'][1] / med['none'][1]:.3f} "
          f"policy_latency_ratio={med['cilia'][1] / med['noop'][1]:.3f} "
          f"floor_latency_ratio={med['cilia'][1] / med['floor'][1]:.3f} "
          f"stack_latency_ratio={med['stack'][1] / med['none'][1]:.3f} "
          f"stack_throughput_ratio={med['stack'][0] / med['none'][0]:.3f} "
          f"bigtcp_throughput_ratio={med['cilia'][0] / med['bigtcp'][0]:.3f}")


if __name__ == "__main__":
    main()
