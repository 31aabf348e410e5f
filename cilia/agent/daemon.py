"""The node agent process: reconcile loop over a store watch, REST API, flow reader.

``run(cfg)`` runs in the foreground until SIGTERM/SIGINT. Stopping the agent never removes pods or
kernel state: the programs stay attached and the maps pinned, so enforcement continues, and the
next agent adopts everything (``cilia down`` is what tears the node down, see
:mod:`cilia.agent.node`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from cilia.agent import ctgc, fqdn, gcpause, hostendpoint, hostpods, l7proxy
from cilia.agent.api import APIServer
from cilia.agent.config import AgentConfig
from cilia.agent.endpoints import EndpointTable
from cilia.agent.events import EventLog
from cilia.agent.flows import FlowSink, RingSink
from cilia.agent.interfaces import NodeDatapath, PodRuntime
from cilia.agent.node import Node
from cilia.agent.reconcile import Reconciler
from cilia.store import Store
from cilia.store.files import write_private

log = logging.getLogger("cilia.agent")
RUNTIME_CHECK_S = 10.0  # how often an idle agent checks that its pods still exist on the system


class Agent:
    """One node's agent; also the :class:`cilia.agent.api.AgentView` the REST API serves."""

    def __init__(self, cfg: AgentConfig, store: Store, runtime: PodRuntime, datapath: NodeDatapath,
                 gateway: str, flow_sink: FlowSink | None = None,
                 reconciler_options: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.runtime = runtime
        self.datapath = datapath
        self.events = EventLog(cfg.events_path)
        self.reconciler = Reconciler(
            store, runtime, datapath,
            endpoints=EndpointTable(cfg.endpoints_path), events=self.events, gateway=gateway,
            cluster=cfg.cluster, enforcement_mode=cfg.enforcement_mode, allow_localhost=cfg.allow_localhost,
            host_firewall=cfg.host_firewall, **(reconciler_options or {}),
        )  # fmt: skip
        # toFQDNs: learned addresses kept in the state dir, expiring after their TTL (min-TTL raised)
        self.reconciler.fqdn = fqdn.FqdnState.for_node(cfg.state_dir, cfg.tofqdns_min_ttl)
        self._lock = threading.RLock()  # the reconciler's state: the loop writes, the API reads
        self._cond = threading.Condition()
        self._processed = 0
        self._caught_up = False
        self._ready = False
        self._stop = threading.Event()
        self.started = time.time()
        self.last_error = ""
        # run under the lock after each reconcile step (the HTTP proxy's rules: cilia.agent.l7proxy)
        self.after_sync: list[Callable[[], None]] = []
        self.flow_sink: FlowSink = flow_sink if flow_sink is not None else RingSink(
            self.pods_by_ip, datapath.rules_for
        )
        self.host_endpoint: Any = None  # cilia.agent.hostendpoint.HostEndpoint with the host firewall
        self.settle_gc = False  # only in the agent's own process (run()): freezes the process's heap
        self.host_pods: Any = None  # cilia.agent.hostpods.HostNetworkPods (kernel lab)

    def pods_by_ip(self) -> dict[str, str]:
        """``ip -> namespace/pod`` of the local endpoints, each address of a dual-stack pod (names flows)."""
        return {ip: str(e.pod) for e in self.reconciler.endpoints for ip in (e.ip, e.ip6) if ip}

    # ------------------------------------------------------------------ loop

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Recover, then reconcile every store change until :meth:`stop`."""
        with self._lock:
            fqdn.restore(self.reconciler, self.reconciler.fqdn)  # before the first policy sync
            rev = self.reconciler.start()
            self._after_sync()
        self._advance(rev)
        if self.settle_gc:  # the state built so far is not walked by later collections
            gcpause.settle()
        self._ready = True
        log.info("agent ready: %d endpoints, store revision %d", len(self.reconciler.endpoints), rev)
        resync_at: float | None = None  # set after a failure: when to retry a full sync
        check_at = time.monotonic() + RUNTIME_CHECK_S
        with self.store.watch(rev + 1) as watch:
            while not self._stop.is_set():
                ev = watch.get(timeout=0.2)
                batch = ([ev] if ev is not None else []) + watch.drain()
                with self._lock:
                    try:
                        if batch:
                            self.reconciler.handle(batch)
                            self._after_sync()
                        elif time.monotonic() >= check_at:
                            check_at = time.monotonic() + RUNTIME_CHECK_S
                            self.reconciler.check_runtime()
                            self._after_sync()
                            if self.settle_gc:  # idle: collect now what changes built, not mid-change
                                gcpause.settle()
                        if resync_at is not None and time.monotonic() >= resync_at:
                            # A failed update left endpoints fail-closed: retry a full sync.
                            self.reconciler.resync()
                            self._after_sync()
                            resync_at = None
                            log.info("full resync after error succeeded")
                        if resync_at is None:
                            self.last_error = ""
                    except Exception as e:  # keep the node running; the error is visible in status
                        self.last_error = f"{type(e).__name__}: {e}"
                        resync_at = time.monotonic() + 1.0
                        log.exception("reconcile failed")
                self._advance(watch.next_revision - 1)

    def _after_sync(self) -> None:
        for hook in self.after_sync:
            try:
                hook()
            except Exception:  # a proxy's failure must not stop reconciling; the log says what broke
                log.exception("after-sync hook")

    def _advance(self, revision: int) -> None:
        with self._cond:
            self._processed = max(self._processed, revision)
            self._caught_up = self._processed >= self.store.revision
            self._cond.notify_all()

    # ------------------------------------------------------------------ AgentView

    def wait_revision(self, revision: int, timeout: float) -> int:
        """Wait until every store change up to ``revision`` and the agent's own follow-up writes
        (pods of a Deployment, identities) are reconciled."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._processed >= revision and self._caught_up):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
            return self._processed

    def status(self) -> dict[str, Any]:
        # Without the reconciler's lock: plain reads, so status answers during a long reconcile.
        created, to_create = self.reconciler.pods_progress  # one read: the pair stays consistent
        return {
            "ready": self._ready,
            "pid": os.getpid(),
            "revision": self._processed,
            "caught_up": self._caught_up,
            "endpoints": len(self.reconciler.endpoints),
            # pods created / to create by the current (or last) pass that creates pods: `cilia up`'s progress
            "pods_created": created,
            "pods_to_create": to_create,
            "identities": len(self.reconciler.allocator.identities()),
            "policies": len(self.reconciler.desired.policies),
            "state_dir": str(self.cfg.state_dir),
            "datapath": self.cfg.datapath,
            "enforcement_mode": self.cfg.enforcement_mode,
            "uptime_s": round(time.time() - self.started, 1),
            "rss_kib": _rss_kib(),
            "last_error": self.last_error,
        }

    def endpoints(self) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for ep in self.reconciler.endpoints:
                data = ep.to_json()
                pod = self.reconciler.desired.pods.get(ep.pod)
                summary = self.reconciler.policy.summary(ep.identity, pod)
                data["enforcement"] = summary.pop("enforcement")
                data["audit"] = self.reconciler.node_audit  # policy audit mode: drops only reported
                data["policy"] = summary
                data["policy_entries"] = len(self.reconciler.applied.get(ep.id, {}))
                out.append(data)
            if self.host_endpoint is not None:
                out.append(self.host_endpoint.describe())
            if self.host_pods is not None:  # no endpoint of their own: listed for `get pods` only
                gw = self.reconciler.gateway
                out += hostpods.describe((pk, gw, s) for pk, s in sorted(self.host_pods.running().items()))
            return out

    def identities(self) -> list[dict[str, Any]]:
        with self._lock:
            used: dict[int, list[str]] = {}
            for ep in self.reconciler.endpoints:
                used.setdefault(ep.identity, []).append(str(ep.pod))
            return [
                {"id": n, "labels": labels.strings(), "endpoints": sorted(used.get(n, []))}
                for n, labels in sorted(self.reconciler.allocator.identities().items())
            ]

    def flows(self, since: int, limit: int) -> dict[str, Any]:
        return self.flow_sink.snapshot(since, limit)


def _rss_kib() -> int:
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run(node: Node, flow_sink: Callable[[Agent], FlowSink] | None = None) -> int:
    """Run the agent of ``node`` in the foreground until SIGTERM/SIGINT (``cilia agent``).
    ``flow_sink`` builds the sink for datapath events (default: :class:`RingSink`)."""
    cfg = node.cfg
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    member = node.cluster  # one node of several (cilia.agent.cluster), or None
    agent = Agent(cfg, node.store, node.runtime, node.datapath, node.gateway,
                  reconciler_options=member.reconciler_options() if member is not None else None)
    agent.settle_gc = True  # this process is the agent's (cilia.agent.gcpause)
    l7proxy.use_node_ports(agent)  # before any policy is computed: the entries carry these ports
    fqdn.use_node_dns_port(agent)  # (after the HTTP/TLS ports: it adds the DNS proxy's port to them)
    if member is not None:
        member.attach(agent)
    if cfg.node_name:  # a cluster node: its underlay address is the node's own too (identity host)
        from cilia.store.nodes import NodeInfo

        agent.reconciler.host_addresses = [NodeInfo.lab(cfg.node_name, cfg.node_index).address]
    host = hostendpoint.start(agent, node)  # the host firewall (None when it is off)
    host_pods = hostpods.start(agent, node)  # hostNetwork pods' ports on the node's addresses
    if flow_sink is not None:
        agent.flow_sink = flow_sink(agent)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    server = APIServer(cfg.socket_path, agent)
    write_private(cfg.pid_path, f"{os.getpid()}\n")
    server.start()
    node.start_flows(agent.flow_sink)
    dns_proxy = fqdn.start_proxy(agent)  # toFQDNs: None on the simulated datapath
    http_proxy = l7proxy.start(agent)  # HTTP/TLS rules: HAProxy; None on the simulated datapath
    if http_proxy is not None:
        agent.after_sync.append(http_proxy.sync)
    fqdn_gc = fqdn.start_gc(agent)
    ct_gc = ctgc.start(node.datapath)
    try:
        agent.run()
    finally:
        ct_gc.set()
        fqdn_gc.set()
        fqdn.flush(agent)
        if dns_proxy is not None:
            dns_proxy.close()
        if http_proxy is not None:
            http_proxy.stop()
        if member is not None:
            member.close()
        if host is not None:
            host.close()
        if host_pods is not None:
            host_pods.close()
        server.close()
        node.close()
        with contextlib.suppress(FileNotFoundError):
            if cfg.pid_path.read_text().strip() == str(os.getpid()):
                cfg.pid_path.unlink()
        log.info("agent stopped (node state kept; `cilia down` removes it)")
    return 0
