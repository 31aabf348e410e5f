"""The datapath program's per-packet cost against a baseline revision, in the kernel
(BPF_PROG_TEST_RUN, as tests/helpers_bpf.py runs it): the object built from the working tree and
the one built from ``--baseline`` (a git revision's ``cilia/datapath/bpf`` sources), each on its own
private pins, the same endpoint, ipcache and policy; packets: IPv4 UDP allowed (the full policy
path, then conntrack), IPv4 TCP denied (a drop with its event), and the same two over IPv6.
Rounds interleave the two objects (the order alternates); medians of ns per packet.

Last line: ``summary: v4_allow_ratio=X v4_deny_ratio=X v6_allow_ratio=X v6_deny_ratio=X`` (working
tree / baseline; a packet kind the baseline drops before policy counts all the same). Needs root.
Usage: ``python3 -m bench.prog_cost_bench --baseline HEAD~5 [--rounds 7] [--repeat 200000]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cilia.datapath.bpf import build, libbpf
from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.policy.types import Direction, Entry, Key, RuleRef
from tests.helpers_packets import TCP, UDP, frame

REPO = Path(__file__).resolve().parent.parent
BPF_DIR = "cilia/datapath/bpf"
LO, EP, EP_ID, PEER_ID = 1, 7, 1001, 1002
PEER4, LOCAL4 = "198.18.1.10", "198.18.1.20"
PEER6, LOCAL6 = "2001:2::c612:10a", "2001:2::c612:114"
RULES = frozenset({RuleRef("CiliumNetworkPolicy", "default", "bench", "ingress", 0)})
PACKETS = {
    "v4_allow": frame(PEER4, LOCAL4, UDP, dport=53),
    "v4_deny": frame(PEER4, LOCAL4, TCP, dport=81),
    "v6_allow": frame(PEER6, LOCAL6, UDP, dport=53),
    "v6_deny": frame(PEER6, LOCAL6, TCP, dport=81),
}


def baseline_sources(rev: str, out: Path) -> Path:
    """The revision's datapath sources (every .c/.h of the directory) in ``out``."""
    names = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", rev, f"{BPF_DIR}/"],
                           capture_output=True, text=True, check=True).stdout.split()
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name.endswith((".c", ".h")):
            text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{name}"], capture_output=True,
                                  check=True).stdout
            (out / Path(name).name).write_bytes(text)
    return out


def build_from(src: Path, out: Path) -> Path:
    """Compile ``src`` (the sources build.py lists that it has) into ``out``."""
    saved = build.SOURCES
    build.SOURCES = tuple(n for n in saved if (src / n).exists())
    try:
        return build.build(src, out)
    finally:
        build.SOURCES = saved


def open_datapath(obj: Path, state: Path) -> Datapath:
    d = Datapath(pin_root=f"/sys/fs/bpf/cilia/bench-cost-{uuid.uuid4().hex[:8]}/v1", state_dir=state,
                 object_path=str(obj))
    d.open()
    d.endpoints.set(EndpointInfo(LO, EP, EP_ID, EndpointFlags.enforcing()))
    for peer in (PEER4, PEER6):
        d.upsert_ipcache(peer, PEER_ID)
    d.set_policy(EP, {Key(PEER_ID, int(Direction.INGRESS), UDP, 53, 16): Entry(False, RULES)})
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="git revision whose datapath is the baseline")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cilia-cost-") as tmp:
        t = Path(tmp)
        objs = {"baseline": build_from(baseline_sources(args.baseline, t / "src"), t / "obj-base"),
                "tree": build_from(build.SRC_DIR, t / "obj-tree")}
        dps: dict[str, Datapath] = {}
        try:
            for name, obj in objs.items():
                dps[name] = open_datapath(obj, t / f"state-{name}")
            ns: dict[tuple[str, str], list[int]] = {(n, p): [] for n in dps for p in PACKETS}
            order = list(dps)
            for r in range(args.rounds):
                for name in order if r % 2 == 0 else order[::-1]:
                    d = dps[name]
                    assert d.coll is not None
                    for kind, pkt in PACKETS.items():
                        _, per = libbpf.test_run(d.coll.programs["to_container"], pkt, ifindex=LO,
                                                 repeat=args.repeat)
                        ns[(name, kind)].append(per)
                        while d.read_events(lambda _e: None, timeout_ms=0):
                            pass
        finally:
            for d in dps.values():
                d.teardown()
    ratios = {}
    for kind in PACKETS:
        base, tree = statistics.median(ns[("baseline", kind)]), statistics.median(ns[("tree", kind)])
        ratios[kind] = tree / base
        print(f"{kind:9} baseline {base:6.0f} ns  tree {tree:6.0f} ns  ratio {tree / base:.3f}")
    print("summary: " + " ".join(f"{k}_ratio={v:.3f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
