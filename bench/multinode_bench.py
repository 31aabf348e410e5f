"""Several-node benchmark (root): ``cilia up --nodes N`` on the lab's etcd, cross-node propagation.

Measures, once each run:

* ``cilia up --nodes N`` (namespaces, etcd, N agents ready) and ``cilia down`` wall time;
* ``cilia apply`` of the seed's two Deployments (4 pods over the nodes) until every agent caught up;
* label-change propagation across nodes, ``--samples`` times: app-b admits only ``access=frontend``
  (ingress, enforced on app-b's node); an app-a pod on another node gets the label by one store
  write, and the time until its curl to app-b succeeds is taken (curl with a 50 ms timeout in a
  loop, so the figure is up to ~50 ms + one nsenter+curl late). Between samples the label is
  removed and the drop awaited.

Private state/run directories and a private bpffs directory; everything is removed at the end.
The last line is ``summary: nodes=N up_s=X apply_s=X down_s=X propagation_p50_ms=X
propagation_p95_ms=X propagation_p99_ms=X propagation_max_ms=X``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cilia.agent.client import AgentClient  # noqa: E402
from cilia.lab import etcd_keeper, netns, nodes_lab  # noqa: E402
from cilia.lab.etcd_pki import EtcdPki  # noqa: E402
from cilia.store import Kind  # noqa: E402
from cilia.store.etcd import open_etcd_store  # noqa: E402

SEED = REPO / "examples" / "seed"
POLICY = (
    "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: b-from-frontend}\n"
    "spec:\n  endpointSelector: {matchLabels: {app: app-b}}\n  ingress:\n"
    "  - fromEndpoints: [{matchLabels: {access: frontend}}]\n"
    "    toPorts: [{ports: [{port: '80', protocol: TCP}]}]\n"
)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cilia-multinode-bench-") as tmp:
        base = Path(tmp)
        env = {**os.environ, "CILIA_STATE_DIR": str(base / "state"), "CILIA_RUN_DIR": str(base / "run"),
               "CILIA_PIN_ROOT": f"/sys/fs/bpf/cilia/bench-{uuid.uuid4().hex[:8]}"}

        def cilia(*argv: str) -> str:
            proc = subprocess.run([sys.executable, "-m", "cilia.cli.main", *argv], env=env,
                                  capture_output=True, text=True, check=False, timeout=300)
            if proc.returncode != 0:
                raise SystemExit(f"cilia {' '.join(argv)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
            return proc.stdout

        def curl(src: dict[str, Any], ip: str, max_time: str) -> bool:
            argv = ["nsenter", f"--net={netns.path_of(src['netns'])}", "--",
                    "curl", "-s", "-o", "/dev/null", "--max-time", max_time, f"http://{ip}/"]
            return subprocess.run(argv, capture_output=True, check=False).returncode == 0

        def until(cond: Any, timeout: float = 10.0) -> float:
            t0 = time.perf_counter()
            while not cond():
                if time.perf_counter() - t0 > timeout:
                    raise SystemExit(f"not within {timeout}s")
            return time.perf_counter() - t0

        try:
            t = time.perf_counter()
            up = json.loads(cilia("up", "--nodes", str(args.nodes), "-o", "json"))
            up_s = time.perf_counter() - t
            print(f"up --nodes {args.nodes}: {up_s:.1f} s (etcd {','.join(up['etcd'])})")
            t = time.perf_counter()
            cilia("apply", "-f", str(SEED / "app-a.yaml"), "-f", str(SEED / "app-b.yaml"))
            policy = base / "b-from-frontend.yaml"
            policy.write_text(POLICY)
            cilia("apply", "-f", str(policy))
            apply_s = time.perf_counter() - t
            eps = []
            for i in range(args.nodes):
                sock = base / "run" / "nodes" / f"node-{i}" / "cilia.sock"
                eps += [{**e, "node": i} for e in AgentClient(sock).endpoints()]
            a_pods = [e for e in eps if "/app-a-" in e["pod"]]
            b_pods = [e for e in eps if "/app-b-" in e["pod"]]
            a, b = next((x, y) for x in a_pods for y in b_pods if x["node"] != y["node"])
            print(f"apply (2 Deployments, 4 pods, 1 policy): {apply_s:.1f} s; "
                  f"{a['pod']} on node-{a['node']} -> {b['pod']} on node-{b['node']}")
            settings = json.loads((base / "state" / "node.json").read_text())
            pki = EtcdPki(base / "state" / "etcd" / "pki")  # the lab's etcd speaks mutual TLS only
            store = open_etcd_store(settings["etcd_endpoints"].split(","), tls=pki.client_tls())
            key = Kind.PODS.key("default", a["pod"].split("/", 1)[1])

            def set_label(on: bool) -> None:
                def change(obj: dict[str, Any]) -> dict[str, Any]:
                    labels = obj["metadata"].setdefault("labels", {})
                    if on:
                        labels["access"] = "frontend"
                    else:
                        labels.pop("access", None)
                    return obj

                store.update(key, change)

            samples: list[float] = []
            try:
                until(lambda: not curl(a, b["ip"], "0.3"))
                for _ in range(args.samples):
                    set_label(True)
                    samples.append(until(lambda: curl(a, b["ip"], "0.05")) * 1000)
                    set_label(False)
                    until(lambda: not curl(a, b["ip"], "0.3"))
            finally:
                store.close()
            print(f"label change -> enforced on the other node: p50 {pct(samples, 0.5):.0f} ms, "
                  f"p95 {pct(samples, 0.95):.0f} ms, p99 {pct(samples, 0.99):.0f} ms, "
                  f"max {max(samples):.0f} ms ({len(samples)} samples)")
        finally:
            t = time.perf_counter()
            cilia("down", "--purge")
            down_s = time.perf_counter() - t
            etcd_keeper.stop(base / "state" / "etcd")
            if nodes_lab.leftovers():
                nodes_lab.remove_nodes()
        print(f"down: {down_s:.1f} s")
        print(f"summary: nodes={args.nodes} up_s={up_s:.1f} apply_s={apply_s:.1f} down_s={down_s:.1f} "
              f"propagation_p50_ms={pct(samples, 0.5):.0f} propagation_p95_ms={pct(samples, 0.95):.0f} "
              f"propagation_p99_ms={pct(samples, 0.99):.0f} propagation_max_ms={max(samples):.0f}")


if __name__ == "__main__":
    main()
