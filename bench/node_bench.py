"""Node benchmark (``make bench-node``, root): 500 pods (Deployments) and 500 policies on one node.

Measures, on a node of its own (private state, pins and pod range):

* the time to bring all pods up (apply of the Deployments → every endpoint ready);
* the time to apply 500 policies (apply → reconciled);
* for 50 policy changes and 50 label changes, the time from the change being written to the
  kernel enforcing the new verdict, found by probing with TCP connects from the source pod's
  namespace every few milliseconds (p50/p99). Half the changes open the flow, half close it; a
  closed flow is detected by a connect timing out (20 ms), so closing latencies include up to
  20 ms of probe granularity;
* the same from ``cilia label --no-wait`` / ``cilia label`` (default: waits for the agent)
  returning, for a few label changes through the CLI;
* the agent's resident memory;
* recovery: the agent killed with SIGKILL (traffic stays enforced) and started again, the time
  until it is ready having adopted every endpoint (same ids, addresses, identities).

The last line is ``summary: pods=N pods_up_s=X policies=N policies_s=X policy_p50_ms=X
policy_p99_ms=X label_p50_ms=X label_p99_ms=X cli_label_nowait_ms=X agent_rss_mib=X recover_s=X``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cilia.agent import manifests, process  # noqa: E402
from cilia.agent.client import AgentClient  # noqa: E402
from cilia.agent.config import AgentConfig  # noqa: E402
from cilia.lab import netns  # noqa: E402
from cilia.store import Kind, open_store  # noqa: E402

NS = "bench"
PROBE_TIMEOUT = 0.02


def deployment(name: str, replicas: int, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": "nginxdemos/hello:plain-text",
                                                       "ports": [{"containerPort": 80}]}]}}},
    }  # fmt: skip


def cnp(name: str, subject: dict[str, str], peer: dict[str, str], port: int = 80) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"endpointSelector": {"matchLabels": subject},
                 "ingress": [{"fromEndpoints": [{"matchLabels": peer}],
                              "toPorts": [{"ports": [{"port": str(port), "protocol": "TCP"}]}]}]},
    }  # fmt: skip


def write_yaml(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text("---\n".join(json.dumps(d) + "\n" for d in docs))  # JSON is YAML
    return path


def probe(src_netns: str, ip: str, want_open: bool, limit: float = 10.0) -> float:
    """Seconds until a connect from ``src_netns`` to ip:80 gives ``want_open``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        with netns.entered(src_netns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(PROBE_TIMEOUT)
        try:
            s.connect((ip, 80))
            opened = True
        except OSError:
            opened = False
        finally:
            s.close()
        if opened == want_open:
            return time.monotonic() - t0
        time.sleep(0.001)
    raise RuntimeError(f"verdict {'open' if want_open else 'closed'} not enforced within {limit}s")


def pct(values: list[float], q: float) -> float:
    vals = sorted(values)
    return vals[min(len(vals) - 1, round(q * (len(vals) - 1)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cilia(env: dict[str, str], *args: str) -> float:
    """Run the CLI; returns the wall time of the command."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "cilia.cli.main", *args], env=env, check=True, capture_output=True)
    return time.monotonic() - t0


def start_profile(pid: int, path: Path) -> subprocess.Popen | None:
    """py-spy sampling the agent (raw collapsed stacks, every thread, idle ones too) until stopped."""
    try:
        return subprocess.Popen(["py-spy", "record", "-p", str(pid), "-f", "raw", "-r", "250", "--idle",
                                 "--threads", "--nonblocking", "-o", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        print("--profile: py-spy not installed (pip install py-spy)", flush=True)
        return None


def stop_profile(proc: subprocess.Popen | None, path: Path) -> None:
    if proc is None:
        return
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    print(f"agent profile (py-spy raw stacks) during the label changes: {path}", flush=True)


def run(pods: int, policies: int, changes: int, node_index: int,
        profile: Path | None = None) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="cilia-nodebench-"))
    pin_root = f"/sys/fs/bpf/cilia/bench-{os.getpid()}"
    env = {
        **os.environ,
        "CILIA_STATE_DIR": str(base / "state"),
        "CILIA_RUN_DIR": str(base / "run"),
        "CILIA_PIN_ROOT": pin_root,
    }
    cfg = AgentConfig(
        state_dir=base / "state", run_dir=base / "run", node_index=node_index, pin_root=pin_root
    )
    out: dict[str, float] = {}
    try:
        pid = process.start_background(cfg)
        client = AgentClient(cfg.socket_path, timeout=120)
        store = open_store(cfg.state_dir)
        apps = pods // 2
        docs = [deployment(f"app-{i}", 2, {"app": f"app-{i}"}) for i in range(apps)]
        docs += [
            deployment("probe-src", 1, {"role": "probe-src"}),
            deployment("probe-dst", 1, {"role": "probe-dst"}),
        ]
        t0 = time.monotonic()
        rev = manifests.apply(store, [str(write_yaml(base / "deploy.yaml", docs))]).revision
        total = apps * 2 + 2
        while client.status()["endpoints"] < total:
            time.sleep(0.2)
        client.wait_revision(rev, 120)
        out["pods"] = total
        out["pods_up_s"] = time.monotonic() - t0
        print(f"{total} pods up in {out['pods_up_s']:.1f} s", flush=True)

        pols = [
            cnp(f"pol-{i}", {"app": f"app-{i % apps}"}, {"app": f"app-{(i + 1) % apps}"})
            for i in range(policies - 1)
        ]
        # The probed pod's base policy: ingress default deny, open only to access=granted.
        pols.append(cnp("probe-base", {"role": "probe-dst"}, {"access": "granted"}))
        t0 = time.monotonic()
        rev = manifests.apply(store, [str(write_yaml(base / "policies.yaml", pols))]).revision
        client.wait_revision(rev, 300)
        out["policies"] = len(pols)
        out["policies_s"] = time.monotonic() - t0
        print(f"{len(pols)} policies applied in {out['policies_s']:.1f} s", flush=True)

        eps = {
            e["pod"].split("/")[1].rsplit("-", 2)[0]: e for e in client.endpoints() if e["pod"].startswith(NS)
        }
        src, dst = eps["probe-src"], eps["probe-dst"]
        probe(src["netns"], dst["ip"], want_open=False)

        allow = write_yaml(
            base / "probe-allow.yaml", [cnp("probe-allow", {"role": "probe-dst"}, {"role": "probe-src"})]
        )
        policy_ms: list[float] = []
        for i in range(changes):
            if i % 2 == 0:
                manifests.apply(store, [str(allow)])
            else:
                store.delete(Kind.CNP.key(NS, "probe-allow"))
            policy_ms.append(probe(src["netns"], dst["ip"], want_open=i % 2 == 0) * 1000)
        out["policy_p50_ms"], out["policy_p99_ms"] = pct(policy_ms, 0.5), pct(policy_ms, 0.99)
        print(
            f"policy change → enforced: p50 {out['policy_p50_ms']:.1f} ms, p99 {out['policy_p99_ms']:.1f} ms",
            flush=True,
        )

        key = Kind.PODS.key(NS, src["pod"].split("/")[1])

        def set_access(on: bool) -> None:
            def change(o: dict[str, Any]) -> dict[str, Any]:
                labels = {k: v for k, v in o["metadata"]["labels"].items() if k != "access"}
                if on:
                    labels["access"] = "granted"
                return {**o, "metadata": {**o["metadata"], "labels": labels}}

            store.update(key, change)

        label_ms: list[float] = []
        prof = start_profile(pid, profile) if profile else None
        for i in range(changes):
            set_access(i % 2 == 0)
            label_ms.append(probe(src["netns"], dst["ip"], want_open=i % 2 == 0) * 1000)
        if profile:
            stop_profile(prof, profile)
        out["label_p50_ms"], out["label_p99_ms"] = pct(label_ms, 0.5), pct(label_ms, 0.99)
        print("label change → enforced, slowest: "
              + " ".join(f"{ms:.0f}{'o' if i % 2 == 0 else 'c'}" for i, ms in
                         sorted(enumerate(label_ms), key=lambda x: -x[1])[:8]) + " ms (o: open, c: close)",
              flush=True)
        print(
            f"label change → enforced: p50 {out['label_p50_ms']:.1f} ms, p99 {out['label_p99_ms']:.1f} ms",
            flush=True,
        )

        pod = src["pod"].split("/")[1]
        cli_nowait: list[float] = []
        cli_wait: list[float] = []
        cmd_s: list[float] = []
        for i in range(10):
            args = ["label", "pod", "-n", NS, pod] + (["access=granted"] if i % 2 == 0 else ["access-"])
            wait = [] if i % 4 < 2 else ["--no-wait"]
            cmd_s.append(cilia(env, *args, *wait))
            took = probe(src["netns"], dst["ip"], want_open=i % 2 == 0) * 1000
            (cli_nowait if wait else cli_wait).append(took)
        out["cli_label_nowait_ms"] = statistics.median(cli_nowait)
        out["cli_label_wait_ms"] = statistics.median(cli_wait)
        out["cli_label_command_s"] = statistics.median(cmd_s)
        print(
            f"`cilia label` returned → enforced: median {out['cli_label_nowait_ms']:.1f} ms with --no-wait, "
            f"{out['cli_label_wait_ms']:.1f} ms with --wait "
            f"(the command itself: {out['cli_label_command_s']:.2f} s,"
            " mostly Python start-up)",
            flush=True,
        )

        out["agent_rss_mib"] = rss_mib(pid)
        print(f"agent resident memory: {out['agent_rss_mib']:.0f} MiB", flush=True)

        # Crash and recovery: SIGKILL the agent, start it again; it must adopt every pod.
        before = sorted((e["id"], e["pod"], e["ip"], e["identity"]) for e in client.endpoints())
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        probe(src["netns"], dst["ip"], want_open=False)  # still enforced with no agent
        t0 = time.monotonic()
        pid = process.start_background(cfg, timeout=600)
        out["recover_s"] = time.monotonic() - t0
        after = sorted((e["id"], e["pod"], e["ip"], e["identity"]) for e in client.endpoints())
        if after != before:
            raise RuntimeError("the restarted agent did not adopt the same endpoints")
        print(f"agent killed (SIGKILL) and started again: {len(after)} endpoints adopted, ready in "
              f"{out['recover_s']:.1f} s (nothing recreated)", flush=True)
        store.close()
    finally:
        # the agent logs each garbage collection slower than 50 ms (cilia.agent.gcpause)
        with contextlib.suppress(OSError):
            slow = [line for line in cfg.log_path.read_text(errors="replace").splitlines()
                    if "garbage collection of generation" in line]
            print(f"agent's slow garbage collections: {len(slow)}"
                  + "".join(f"\n  {line[line.find('garbage'):]}" for line in slow[-5:]), flush=True)
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "cilia.cli.main", "down", "--purge"], env=env, check=False)
        print(f"node down in {time.monotonic() - t0:.1f} s", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=500)
    ap.add_argument("--policies", type=int, default=500)
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--node-index", type=int, default=8)
    ap.add_argument("--profile", type=Path, help="py-spy the agent during the label changes into this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("node_bench needs root (network namespaces, eBPF)")
        return 2
    r = run(args.pods, args.policies, args.changes, args.node_index, args.profile)
    print(
        f"summary: pods={int(r['pods'])} pods_up_s={r['pods_up_s']:.1f} policies={int(r['policies'])} "
        f"policies_s={r['policies_s']:.1f} policy_p50_ms={r['policy_p50_ms']:.1f} "
        f"policy_p99_ms={r['policy_p99_ms']:.1f} label_p50_ms={r['label_p50_ms']:.1f} "
        f"label_p99_ms={r['label_p99_ms']:.1f} cli_label_nowait_ms={r['cli_label_nowait_ms']:.1f} "
        f"agent_rss_mib={r['agent_rss_mib']:.0f} recover_s={r['recover_s']:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
