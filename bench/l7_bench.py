"""L7 benchmark (``make bench-l7``, root): HTTP through the node's proxy (HAProxy) against HTTP
straight to the pod, on a node of its own (private state, pins and pod range).

Two pods: a client and a server running nginx (from Debian) in its network namespace on port 8080
(the lab's own workload keeps the pod's declared port 80), answering a fixed 200. The same ingress
policy is applied twice: without L7 rules (the connection goes straight to the pod) and with an
HTTP rule (``GET /.*``: the datapath redirects the connection to the proxy, which decides every
request). For each, wrk (from Debian) runs in the
client's namespace:

* latency: one keep-alive connection, one request at a time — p50 and p99;
* throughput: ``--conns`` keep-alive connections on 2 threads — requests/s.

Then rule changes: a keep-alive connection from the client's namespace keeps asking for a path the
policy does not allow yet; the policy is changed in the store to allow it, and the time until the
proxy answers 200 on that same connection is recorded (``--changes`` times, p50/p99).

Traffic flows only between the two lab namespaces. The last line is ``summary: latency_ratio=…
rps_ratio=… rule_change_p99_ms=…`` (ratios proxied/direct: latency p50, requests/s).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
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
from cilia.store import open_store  # noqa: E402

NS = "default"
PORT = 8080
NGINX_CONF = """worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def pod(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {"containers": [{"name": "web", "image": "nginxdemos/hello:plain-text",
                                 "ports": [{"containerPort": port}]}]},
    }  # fmt: skip


def policy(paths: list[str] | None) -> dict[str, Any]:
    """The server's ingress policy: the client on PORT; with ``paths``, only GETs of those paths."""
    to_ports: dict[str, Any] = {"ports": [{"port": str(PORT), "protocol": "TCP"}]}
    if paths is not None:
        to_ports["rules"] = {"http": [{"method": "GET", "path": p} for p in paths]}
    return {
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "l7-bench", "namespace": NS},
        "spec": {"endpointSelector": {"matchLabels": {"app": "l7bench-server"}},
                 "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "l7bench-client"}}],
                              "toPorts": [to_ports]}]},
    }  # fmt: skip


def write_yaml(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text("---\n".join(json.dumps(d) + "\n" for d in docs))  # JSON is YAML
    return path


class KeepAlive:
    """One HTTP/1.1 keep-alive connection opened from a lab namespace (reconnects if closed)."""

    def __init__(self, ns: str, ip: str, port: int) -> None:
        self.ns, self.addr = ns, (ip, port)
        self.sock: socket.socket | None = None

    def get(self, path: str, timeout: float = 1.0) -> int:
        """The status of ``GET path`` (0: no answer)."""
        for _ in range(2):
            if self.sock is None:
                with netns.entered(self.ns):
                    self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                try:
                    self.sock.connect(self.addr)
                except OSError:
                    self.close()
                    return 0
            try:
                self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: l7bench-server\r\n\r\n".encode())
                return self._response()
            except OSError:
                self.close()  # closed by the other side: once more on a new connection
        return 0

    def _response(self) -> int:
        assert self.sock is not None
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("closed")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("closed")
            body += chunk
        return int(lines[0].split()[1])

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def wrk(ns: str, url: str, threads: int, conns: int, seconds: int) -> dict[str, float]:
    """wrk's latency percentiles (µs), requests/s and its own CPU seconds (``cpu_s``), run in
    namespace ``ns``."""
    argv = [*netns.exec_argv(ns), "wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise RuntimeError(f"wrk failed ({run.returncode}): {run.stderr or run.stdout}")
    out = run.stdout
    res: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        res[f"p{pct}_us"] = float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m is None or "p50_us" not in res:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    if non2xx is not None:
        raise RuntimeError(f"wrk got {non2xx.group(1)} refused answers: the policy does not allow the load")
    res["rps"] = float(m.group(1))
    total = re.search(r"(\d+) requests in", out)
    res["requests"] = float(total.group(1)) if total else 0.0
    res["cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return res


def machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far (/proc/stat; iowait counts as idle)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / tick, idle / tick


def cpu_s(pid_file: Path, children: bool = False) -> float:
    """User + system CPU seconds of the process named by ``pid_file``, with ``children`` its child
    processes' too (nginx's worker; not the agent's: HAProxy is counted apart); 0 if there is none."""
    try:
        pids = [int(pid_file.read_text().split()[0])]
        if children:
            pids += [int(c) for c in Path(f"/proc/{pids[0]}/task/{pids[0]}/children").read_text().split()]
    except (OSError, ValueError, IndexError):
        return 0.0
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    vals = sorted(values)
    return vals[min(len(vals) - 1, round(q * (len(vals) - 1)))]


def wait_for(cond: Any, what: str, limit: float = 15.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > limit:
            raise RuntimeError(f"{what}: not within {limit}s")
        time.sleep(0.02)


def run(node_index: int, seconds: int, conns: int, changes: int) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="cilia-l7bench-"))
    pin_root = f"/sys/fs/bpf/cilia/l7bench-{os.getpid()}"
    env = {**os.environ, "CILIA_STATE_DIR": str(base / "state"), "CILIA_RUN_DIR": str(base / "run"),
           "CILIA_PIN_ROOT": pin_root}  # fmt: skip
    cfg = AgentConfig(state_dir=base / "state", run_dir=base / "run", node_index=node_index,
                      pin_root=pin_root)  # fmt: skip
    out: dict[str, float] = {}
    nginx: subprocess.Popen[bytes] | None = None
    try:
        process.start_background(cfg)
        client = AgentClient(cfg.socket_path, timeout=60)
        store = open_store(cfg.state_dir)
        pods = write_yaml(base / "pods.yaml", [pod("l7bench-client", 80), pod("l7bench-server", 80)])
        rev = manifests.apply(store, [str(pods)]).revision
        client.wait_revision(rev, 60)
        wait_for(lambda: client.status()["endpoints"] >= 2, "pods up")
        eps = {e["pod"].split("/")[1]: e for e in client.endpoints()}
        server = eps["l7bench-server"]
        cns, sns, sip = eps["l7bench-client"]["netns"], server["netns"], server["ip"]
        ndir = base / "nginx"
        ndir.mkdir()
        (ndir / "nginx.conf").write_text(NGINX_CONF.format(dir=ndir, port=PORT))
        argv = ["nginx", "-p", str(ndir), "-c", str(ndir / "nginx.conf"), "-g", "daemon off;"]
        nginx = subprocess.Popen([*netns.exec_argv(sns), *argv], start_new_session=True)
        url = f"http://{sip}:{PORT}/bench"
        probe = KeepAlive(cns, sip, PORT)

        def last_seq() -> int:
            """The last flow's sequence number, once the agent has caught up with the log."""
            def last() -> int:  # binary search with one-flow reads: the agent serialises little
                lo, hi = 0, 1 << 40
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if client.flows(mid - 1, 1).get("flows"):
                        lo = mid
                    else:
                        hi = mid - 1
                return lo

            seqs = [-1]
            while True:
                seqs.append(last())
                if seqs[-1] == seqs[-2]:
                    return seqs[-1]
                time.sleep(0.3)

        def measure(label: str) -> dict[str, float]:
            lat = wrk(cns, url, 1, 1, seconds)
            seq0 = last_seq()
            procs = {"agent": cfg.pid_path, "haproxy": cfg.run_dir / "proxy" / "haproxy.pid",
                     "nginx": ndir / "nginx.pid"}  # fmt: skip
            before = {k: cpu_s(p, k == "nginx") for k, p in procs.items()}
            busy0, idle0 = machine_cpu()
            thr = wrk(cns, url, 2, conns, seconds)
            busy1, idle1 = machine_cpu()
            used = {k: cpu_s(p, k == "nginx") - before[k] for k, p in procs.items()}
            used["wrk"] = thr["cpu_s"]
            r = {"p50_us": lat["p50_us"], "p99_us": lat["p99_us"], "rps": thr["rps"]}
            n = max(thr["rps"] * seconds, 1.0)
            r.update({f"{k}_cpu_us": v / n * 1e6 for k, v in used.items()})
            r["machine_cpu_us"] = (busy1 - busy0) / n * 1e6
            r["idle_s"] = idle1 - idle0
            r["flows_per_request"] = (last_seq() - seq0) / max(thr["requests"], 1.0)
            print(f"{label}: latency p50 {r['p50_us']:.0f} µs, p99 {r['p99_us']:.0f} µs (1 connection); "
                  f"{r['rps']:.0f} requests/s ({conns} connections; CPU per request: agent "
                  f"{r['agent_cpu_us']:.1f} µs, haproxy {r['haproxy_cpu_us']:.1f}, nginx "
                  f"{r['nginx_cpu_us']:.1f}, wrk {r['wrk_cpu_us']:.1f}, whole machine "
                  f"{r['machine_cpu_us']:.1f} µs; machine idle {r['idle_s']:.1f} CPU-s of "
                  f"{seconds * (os.cpu_count() or 1)}; flows made: {r['flows_per_request']:.3f} per "
                  "request)", flush=True)  # fmt: skip
            return r

        rev = manifests.apply(store, [str(write_yaml(base / "l4.yaml", [policy(None)]))]).revision
        client.wait_revision(rev, 30)
        wait_for(lambda: probe.get("/bench") == 200, "nginx answering the client")
        probe.close()
        direct = measure("direct (policy without L7 rules)")

        rev = manifests.apply(store, [str(write_yaml(base / "l7.yaml", [policy(["/.*"])]))]).revision
        client.wait_revision(rev, 30)
        # through the proxy: a request the rule does not allow gets the proxy's 403
        wait_for(lambda: probe.get("/x", 0.5) == 200 and _post_refused(cns, sip), "the proxy deciding")
        probe.close()
        proxied = measure("through the proxy (GET /.*)")
        out.update({f"direct_{k}": v for k, v in direct.items()})
        out.update({f"proxied_{k}": v for k, v in proxied.items()})
        out["latency_ratio"] = proxied["p50_us"] / direct["p50_us"]
        out["latency_p99_ratio"] = proxied["p99_us"] / direct["p99_us"]
        out["rps_ratio"] = proxied["rps"] / direct["rps"]
        if proxied["flows_per_request"] < 0.999:  # every proxied request must be an L7 flow
            print(f"WARNING: only {proxied['flows_per_request']:.3f} flows per proxied request: the agent "
                  "lost access log lines", flush=True)  # fmt: skip

        # from here on each policy allows one path only: /change-i is refused until change i
        manifests.apply(store, [str(write_yaml(base / "change-start.yaml", [policy(["/bench"])]))])
        wait_for(lambda: probe.get("/change-0") == 403, "the first rule change's starting point")
        change_ms: list[float] = []
        for i in range(changes):
            path = f"/change-{i}"
            if probe.get(path) != 403:
                raise RuntimeError(f"{path} answered before the policy allowed it")
            doc = write_yaml(base / f"change-{i}.yaml", [policy([path])])
            t0 = time.monotonic()
            manifests.apply(store, [str(doc)])
            while probe.get(path) != 200:
                if time.monotonic() - t0 > 10:
                    raise RuntimeError(f"rule change {i} not enforced within 10 s")
            change_ms.append((time.monotonic() - t0) * 1000)
        out["rule_change_p50_ms"], out["rule_change_p99_ms"] = pct(change_ms, 0.5), pct(change_ms, 0.99)
        print(f"rule change → enforced on an open keep-alive connection ({changes} changes): "
              f"p50 {out['rule_change_p50_ms']:.1f} ms, p99 {out['rule_change_p99_ms']:.1f} ms", flush=True)
        probe.close()
        store.close()
    finally:
        if nginx is not None:
            with_pgid_kill(nginx)
        subprocess.run([sys.executable, "-m", "cilia.cli.main", "down", "--purge"], env=env, check=False,
                       capture_output=True)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)  # the manifests and nginx's files
    return out


def _post_refused(ns: str, ip: str) -> bool:
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect((ip, PORT))
        s.sendall(b"POST /x HTTP/1.1\r\nHost: l7bench-server\r\nContent-Length: 0\r\n\r\n")
        return s.recv(100).startswith(b"HTTP/1.1 403")
    except OSError:
        return False
    finally:
        s.close()


def with_pgid_kill(proc: subprocess.Popen[bytes]) -> None:
    """End nginx (its own process group, started by this benchmark) and wait for it."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5, help="each wrk run")
    ap.add_argument("--conns", type=int, default=16, help="connections of the throughput runs")
    ap.add_argument("--changes", type=int, default=30)
    ap.add_argument("--node-index", type=int, default=13)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("l7_bench needs root (network namespaces, eBPF)")
        return 2
    r = run(args.node_index, args.seconds, args.conns, args.changes)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"summary: latency_ratio={r['latency_ratio']:.2f} rps_ratio={r['rps_ratio']:.2f} "
          f"rule_change_p99_ms={r['rule_change_p99_ms']:.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
