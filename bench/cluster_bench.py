"""Cluster benchmark: identity allocation and ipcache propagation on a local 3-member etcd.

Starts its own etcd cluster (``cilia.lab.etcd_cluster``, temporary data dir, removed at the end)
and measures, each once:

* new identities per second from one allocator (one get + one create-if-absent txn each);
* existing identities per second from a second node (one get + one reference txn each);
* three allocators, each with its own client, on the same label sets at once (agreement checked);
* the time from an allocation on one node to the ADDED event on another (p50/p99);
* the time from publishing an endpoint on one node to another node's merged ipcache (p50/p99).

The last line is ``summary: new_per_s=X existing_per_s=X concurrent_per_s=X
identity_event_p50_ms=X identity_event_p99_ms=X ipcache_p50_ms=X ipcache_p99_ms=X``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cilia.identity.allocator import EventKind, IdentityEvent  # noqa: E402
from cilia.identity.cluster_allocator import ClusterAllocator  # noqa: E402
from cilia.identity.labels import Labels  # noqa: E402
from cilia.lab.etcd_cluster import EtcdCluster  # noqa: E402
from cilia.store.etcd import open_etcd_store  # noqa: E402
from cilia.store.nodes import ClusterView, NodeInfo, join  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=1000, help="label sets per phase")
    ap.add_argument("--samples", type=int, default=100, help="latency samples")
    args = ap.parse_args()
    n = args.labels
    with tempfile.TemporaryDirectory(prefix="cilia-cluster-bench-") as tmp, \
            EtcdCluster(Path(tmp) / "etcd", 3) as cluster:
        stores = [open_etcd_store(cluster.endpoints) for _ in range(3)]
        regs = [join(s.backend, NodeInfo.lab(f"n{i}", i), ttl=10) for i, s in enumerate(stores)]
        allocs = [ClusterAllocator(s, f"n{i}", r.lease)
                  for i, (s, r) in enumerate(zip(stores, regs, strict=True))]
        try:
            sets = [Labels.k8s({"app": f"a{i}"}) for i in range(n)]
            t = time.perf_counter()
            for lb in sets:
                allocs[0].allocate(lb)
            new_per_s = n / (time.perf_counter() - t)
            t = time.perf_counter()
            for lb in sets:
                allocs[1].allocate(lb)
            existing_per_s = n / (time.perf_counter() - t)
            print(f"new identities: {new_per_s:.0f}/s; existing (second node): {existing_per_s:.0f}/s")

            shared = [Labels.k8s({"app": f"s{i}"}) for i in range(n)]
            got: list[dict[Labels, int]] = [{}, {}, {}]
            orders = [shared, shared[::-1], shared[n // 2:] + shared[:n // 2]]  # meet in the middle

            def run(i: int) -> None:
                for lb in orders[i]:
                    got[i][lb] = allocs[i].allocate(lb)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            concurrent_per_s = 3 * n / (time.perf_counter() - t)
            assert got[0] == got[1] == got[2] and len(set(got[0].values())) == n
            print(f"3 allocators on {n} shared label sets: {concurrent_per_s:.0f} allocations/s, all agree")

            arrived: dict[int, float] = {}
            ev_done = threading.Event()

            def on_event(ev: IdentityEvent) -> None:
                if ev.kind is EventKind.ADDED:
                    arrived[ev.identity] = time.perf_counter()
                    ev_done.set()

            allocs[2].subscribe(on_event, replay=False)
            lat: list[float] = []
            for i in range(args.samples):
                ev_done.clear()
                t = time.perf_counter()
                num = allocs[0].allocate(Labels.k8s({"app": f"lat{i}"}))
                while num not in arrived:
                    ev_done.wait(5)
                lat.append((arrived[num] - t) * 1000)
            print(f"identity event on another node: p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms")

            view = ClusterView(stores[2].backend, "n2")
            ip_lat: list[float] = []
            for i in range(args.samples):
                ip = f"198.18.16.{10 + i % 200}"
                t = time.perf_counter()
                regs[0].publish(ip, 1000 + i, f"default/p{i}")
                while view.ipcache().get(ip, None) is None or view.ipcache()[ip].identity != 1000 + i:
                    view.poll(1.0)
                ip_lat.append((time.perf_counter() - t) * 1000)
            print(f"ipcache entry on another node: p50 {pct(ip_lat, 0.5):.1f} ms, "
                  f"p99 {pct(ip_lat, 0.99):.1f} ms")
            print(f"summary: new_per_s={new_per_s:.0f} existing_per_s={existing_per_s:.0f} "
                  f"concurrent_per_s={concurrent_per_s:.0f} identity_event_p50_ms={pct(lat, 0.5):.1f} "
                  f"identity_event_p99_ms={pct(lat, 0.99):.1f} ipcache_p50_ms={pct(ip_lat, 0.5):.1f} "
                  f"ipcache_p99_ms={pct(ip_lat, 0.99):.1f}")
        finally:
            for a in allocs:
                a.close()
            for r in regs:
                r.leave()
            for s in stores:
                s.close()


if __name__ == "__main__":
    main()
