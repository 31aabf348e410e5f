"""The agent's HTTP/TLS proxy: HAProxy under the agent's supervision, fed from the engine's L7 policy.

:func:`start` runs one HAProxy for the node (:mod:`cilia.proxy.http`), with its files under
``<run dir>/proxy`` (0700), and reads its access log. After every reconcile batch the agent calls
:meth:`HttpProxy.sync`: the L7 port policies of the local endpoints (``EndpointPolicy.l7``, HTTP and
TLS parsers) become the rules document, the node's ipcache the proxy's identity map; whatever
changed is loaded through the runtime API (no reload), so the next request of an open connection
is decided by the new rules.

Every logged request is decided again by the engine's :meth:`L7PortPolicy.decide_http` for the
names of the policies (the one place that interprets rules) and becomes one L7 flow per policy the
proxy evaluated (``FlowPipeline.ingest_http``); the verdict is the proxy's own.

Egress and ingress rules on one connection: the egress listener also decides the destination's
ingress policy when the destination is a local endpoint with L7 rules on that port
(``both_at_egress``), because the proxy's onward connection is not redirected a second time (it
leaves the proxy's socket, not a pod's veth).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cilia.datapath.dualstack import host_prefixes, ipv6_of
from cilia.identity.reserved import ReservedIdentity
from cilia.policy.types import Direction
from cilia.proxy import transparent
from cilia.proxy.http import marks, runtime
from cilia.proxy.http.accesslog import AccessLogReader, HttpRecord, TlsRecord
from cilia.proxy.http.config import DEFAULT_PORTS, ProxyConfig, ProxyFiles
from cilia.proxy.http.rules import PortPolicyAt, RulesError, decision_map, render
from cilia.proxy.http.supervisor import ProxyStartError, Supervisor, haproxy_binary, stop_stale

log = logging.getLogger("cilia.agent")
PARSERS = ("http", "tls")
NODE_PORT_STRIDE = 100
DECISION_CACHE = 4096  # attributions kept (cleared when full or when the rules change)


def proxy_files(run_dir: Path) -> ProxyFiles:
    return ProxyFiles(run_dir / "proxy")


def proxy_ports(options: Any) -> dict[tuple[str, Direction], int]:
    """The listeners' ports: the contract's defaults, overridden by the engine's options."""
    ports = dict(DEFAULT_PORTS)
    for parser, direction, port in getattr(options, "proxy_ports", ()) or ():
        if str(parser) in PARSERS:
            ports[(str(parser), Direction(direction))] = port
    return ports


def node_proxy_ports(node_index: int) -> tuple[tuple[str, int, int], ...]:
    """The HTTP/TLS proxy ports of node ``node_index``: the defaults (15001-15004) + 100 × index.

    Cilium allocates proxy ports per node too. A port of its own per node lets several nodes share
    one network namespace (tests, a benchmark beside ``cilia up``): the datapath finds a listener
    by (original destination, proxy port), so listeners on every address must not collide."""
    return tuple(
        (parser, int(direction), port + NODE_PORT_STRIDE * node_index)
        for (parser, direction), port in sorted(DEFAULT_PORTS.items())
    )


def use_node_ports(agent: Any) -> None:
    """Give the node's engine its own HTTP/TLS proxy ports (before any policy is computed), unless
    the options name ports already."""
    engine = agent.reconciler.policy.engine
    if engine.options.proxy_ports:
        return
    engine.options = dataclasses.replace(engine.options, proxy_ports=node_proxy_ports(agent.cfg.node_index))


def node_ipcache(rec: Any) -> dict[str, int]:
    """The node's ipcache as the datapath gets it (prefix → identity), for the proxy's map."""
    want: dict[str, int] = dict(getattr(rec, "remote_ipcache", {}) or {})
    for e in rec.endpoints:  # the /32 and its IPv6 twin's /128 (IPv6 listeners beside the IPv4 ones)
        if e.identity:
            want.update(dict.fromkeys(host_prefixes(e.ip), e.identity))
    want.update(getattr(rec, "cidr_identities", {}) or {})
    fqdn = getattr(rec, "fqdn", None)
    if fqdn is not None:
        want.update(fqdn.ipcache())
    want.update(dict.fromkeys(host_prefixes(rec.gateway), int(ReservedIdentity.HOST)))
    # outside every prefix: world for IPv4, world-ipv6 for IPv6, as the datapath's lookup (both given,
    # so an IPv4 address never falls through to the IPv6 default)
    want.setdefault("0.0.0.0/0", int(ReservedIdentity.WORLD))
    want.setdefault("::/0", int(ReservedIdentity.WORLD_IPV6))
    return want


def port_policies(rec: Any) -> list[PortPolicyAt]:
    """The HTTP/TLS port policies of the local endpoints, by endpoint address."""
    out: list[PortPolicyAt] = []
    for ep in rec.endpoints:
        if not ep.identity:
            continue
        pod = rec.desired.pods.get(ep.pod)
        if pod is None:
            continue
        for pol in getattr(rec.policy.endpoint_policy(ep.identity, pod), "l7", ()) or ():
            if str(pol.parser) in PARSERS:
                out.append(PortPolicyAt(ep.ip, pol))
                if six := ipv6_of(ep.ip):  # requests over IPv6 name the endpoint by its twin
                    out.append(PortPolicyAt(six, pol))
    return out


class HttpProxy:
    """The node's HAProxy, its rules and its access log (see the module docstring)."""

    def __init__(self, agent: Any, cfg: ProxyConfig, both_at_egress: bool = True) -> None:
        self.agent = agent
        self.cfg = cfg
        self.both_at_egress = both_at_egress
        self.version = 0
        self.rules_text = ""
        self.decisions: list[tuple[str, str]] = []  # the native decision map (cilia.proxy.http.rules)
        self.ipcache: dict[str, int] = {}
        self.policies: Mapping[tuple[str, str], list[Any]] = {}  # (direction, ip) -> port policies
        self._generation = 0  # bumped when the port policies change: the decision cache's key
        self._decisions: dict[tuple[Any, ...], Any] = {}  # attributions by request, and by shape
        self.last_error = ""
        self._lock = threading.Lock()  # one sync at a time (agent loop, restart hook)
        self.reader: AccessLogReader | None = None
        self.supervisor: Supervisor | None = None

    def start(self) -> HttpProxy:
        self.cfg.files.make_dirs()
        self.reader = AccessLogReader(self.cfg.files.log_socket, self.on_record, self.on_batch).start()
        self._compute()
        self.supervisor = Supervisor(self.cfg, self.rules_text, self.ipcache, on_start=self._on_start,
                                     log_path=self.cfg.files.run_dir / "haproxy.log",
                                     decisions=self.decisions)  # fmt: skip
        try:
            self.supervisor.start()
        except BaseException:
            self.reader.close()
            raise
        return self

    def _on_start(self) -> None:
        """After a restart: the files it loaded may be older than what the agent knows now."""
        if self.version:
            threading.Thread(target=self._push_all, name="cilia-haproxy-resync", daemon=True).start()

    def _push_all(self) -> None:
        with self._lock:
            try:
                files = self.cfg.files
                runtime.load_rules(files.api_socket, files.rules)
                runtime.replace_map(files.api_socket, files.ipcache_map, self.ipcache)
                runtime.replace_map_entries(files.api_socket, files.decide_map, self.decisions)
            except runtime.RuntimeAPIError as e:
                self.last_error = str(e)
                log.warning("http proxy resync after restart: %s", e)

    def _compute(self) -> None:
        """The rules document (a new version only when its body changed) and the ipcache, from the
        reconciler's state."""
        rec = self.agent.reconciler
        pols = port_policies(rec)
        by_key: dict[tuple[str, str], list[Any]] = {}
        for p in pols:
            by_key.setdefault((p.policy.direction.label, p.ip), []).append(p.policy)
        try:
            text = render(pols, self.version + 1, self.both_at_egress)
            decisions = decision_map(pols)
        except RulesError as e:  # a regex the proxy cannot match as RE2 does: keep the old rules
            self.last_error = str(e)
            log.error("http proxy rules not updated: %s", e)
            text = self.rules_text or render([], self.version + 1, self.both_at_egress)
            decisions = self.decisions
        if not self.rules_text or text.split("\n", 1)[1] != self.rules_text.split("\n", 1)[1]:
            self.version += 1
            self.rules_text = text
        self.decisions = decisions
        if by_key != self.policies:
            self._generation += 1
            self._decisions = {}
        self.policies = by_key
        self.ipcache = node_ipcache(rec)

    def sync(self) -> None:
        """Bring HAProxy's rules and identity map up to the agent's state (the agent's lock held)."""
        with self._lock:
            old_version, old_ipc, old_decisions = self.version, dict(self.ipcache), self.decisions
            self._compute()
            if self.supervisor is None:
                return
            try:
                if self.version != old_version:  # Lua's rules first: the map may send requests to it
                    self.supervisor.write_data(rules_text=self.rules_text)
                    runtime.load_rules(self.cfg.files.api_socket, self.cfg.files.rules)
                if self.decisions != old_decisions:
                    self.supervisor.write_data(decisions=self.decisions)
                    runtime.replace_map_entries(self.cfg.files.api_socket, self.cfg.files.decide_map,
                                                self.decisions)  # fmt: skip
                if self.ipcache != old_ipc:
                    self.supervisor.write_data(ipcache=self.ipcache)
                    runtime.replace_map(self.cfg.files.api_socket, self.cfg.files.ipcache_map, self.ipcache)
            except runtime.RuntimeAPIError as e:  # HAProxy restarting: it loads the files at start
                self.last_error = str(e)
                log.warning("http proxy update: %s", e)

    def on_record(self, r: HttpRecord | TlsRecord) -> None:
        """One logged request → one L7 flow per policy the proxy evaluated, named by the engine."""
        self.on_batch([r])

    def on_batch(self, records: list[HttpRecord | TlsRecord]) -> None:
        """The requests of one burst of the access log → their L7 flows (one batch for the sink
        when it takes batches: one lock, one write of the flow log); TLS ClientHellos → one TLS
        flow per policy evaluated."""
        if any(isinstance(r, TlsRecord) for r in records):
            self._on_tls([r for r in records if isinstance(r, TlsRecord)])
            records = [r for r in records if not isinstance(r, TlsRecord)]
            if not records:
                return
        sink = self.agent.flow_sink
        many = getattr(sink, "ingest_http_many", None)
        one = getattr(sink, "ingest_http", None)
        if many is None and one is None:
            return
        items = []
        cache, generation = self._decisions, self._generation
        for r in records:
            # a request shape's attributions (one per policy evaluated) are the same for each of
            # its requests: looked up once per shape and rules generation
            key = ("shape", generation, r.shape)
            got = cache.get(key) if r.shape else None
            if got is None:
                got = tuple(self._attribution(r, label, allowed)
                            for label, allowed in (r.decided or ((r.listener, False),)))  # fmt: skip
                if r.shape:
                    cache[key] = got
            items += [(r, *a) for a in got]
        if many is not None:
            many(items)
        else:
            for item in items:
                one(*item)

    def _on_tls(self, records: list[TlsRecord]) -> None:
        ingest = getattr(self.agent.flow_sink, "ingest_tls", None)
        if ingest is None:
            return
        for r in records:
            for label, allowed in r.decided or ((r.listener, False),):
                egress = label == "egress"
                direction = Direction.EGRESS if egress else Direction.INGRESS
                ip = r.client[0] if egress else r.server[0]
                remote = r.server_identity if egress else r.client_identity
                by: frozenset[Any] = frozenset()
                refused: frozenset[Any] = frozenset()
                for pol in self.policies.get((direction.label, ip), ()):
                    if str(pol.parser) == "tls" and pol.covers(6, r.server[1]):
                        d = pol.decide_sni(remote, r.sni)
                        by, refused = d.by, d.refused_by
                        break
                ingest(r, direction, allowed, by, refused)

    def _attribution(self, r: HttpRecord, direction_label: str, allowed: bool
                     ) -> tuple[Direction, bool, frozenset[Any], frozenset[Any]]:
        """(direction, allowed, rules that allowed, rules that refused) of one logged request for
        one policy, decided again by the engine's L7 policy — cached per (policies' generation,
        direction, endpoint, port, peer, method, path, host, headers): a stream of equal requests
        is decided once per rules change."""
        egress = direction_label == "egress"
        direction = Direction.EGRESS if egress else Direction.INGRESS
        ip = r.client[0] if egress else r.server[0]
        remote = r.server_identity if egress else r.client_identity
        key: tuple[Any, ...] = (
            (self._generation, egress, r.shape) if r.shape  # the shape holds all of the below
            else (self._generation, egress, ip, r.server[1], remote, r.method, r.path, r.host, r.headers)
        )  # fmt: skip
        got = self._decisions.get(key)
        if got is None:
            by: frozenset[Any] = frozenset()
            refused: frozenset[Any] = frozenset()
            headers: dict[str, str] = {}
            for k, v in r.headers:
                headers[k] = f"{headers[k]},{v}" if k in headers else v
            for pol in self.policies.get((direction.label, ip), ()):
                if pol.covers(6, r.server[1]):
                    d = pol.decide_http(remote, r.method, r.path, r.host, headers)
                    by, refused = d.by, d.refused_by
                    break
            if len(self._decisions) >= DECISION_CACHE:
                self._decisions.clear()
            got = self._decisions[key] = (by, refused)
        return direction, allowed, got[0], got[1]

    def status(self) -> dict[str, Any]:
        sup = self.supervisor
        return {"pid": sup.pid if sup else None, "restarts": sup.restarts if sup else 0,
                "rules_version": self.version, "last_error": self.last_error}  # fmt: skip

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.reader is not None:
            self.reader.close()
        self.cfg.files.remove_socket_dir()


def start(agent: Any, both_at_egress: bool = True) -> HttpProxy | None:
    """The node's HTTP/TLS proxy, or None on the simulated datapath (no redirect) or without
    HAProxy (then L7 ports fail closed: the datapath finds no listener)."""
    cfg = agent.cfg
    if getattr(cfg, "datapath", "bpf") != "bpf":
        return None
    try:
        haproxy_binary()
    except ProxyStartError as e:
        log.error("http proxy not started: %s", e)
        return None
    options = agent.reconciler.policy.options
    files = proxy_files(cfg.run_dir)
    # The listeners take the node's proxy ports on every address (noreuseport): nodes sharing a
    # namespace have ports of their own (use_node_ports); should one be taken anyway, this node's
    # L7 ports fail closed.
    pcfg = ProxyConfig(files, ports=proxy_ports(options), both_at_egress=both_at_egress,
                       nbthread=proxy_threads())  # fmt: skip
    try:
        check_ports_free(pcfg.ports, cfg.node_index)
    except ProxyStartError as e:
        log.error("http proxy not started: %s", e)
        return None
    try:
        # the node's policy routing for redirected packets (cilia.proxy.transparent, idempotent) and
        # the mark on HAProxy's own connections (no second redirect at the destination)
        transparent.install_routing()
        marks.install(node_port(pcfg))
        with agent._lock:
            proxy = HttpProxy(agent, pcfg, both_at_egress)
            return proxy.start()
    except (ProxyStartError, OSError, transparent.RoutingError, marks.MarkError) as e:
        log.error("http proxy not started: %s", e)
        return None


def check_ports_free(ports: Mapping[tuple[str, Direction], int], node_index: int) -> None:
    """Raise :class:`ProxyStartError` naming the port and the node index when a proxy port is
    taken in this network namespace — most likely by another node with the same index (its
    listeners take every address; two nodes must not share proxy ports: each needs its own index)."""
    for (parser, direction), port in sorted(ports.items(), key=lambda kv: kv[1]):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closing connection is no owner
            try:
                s.bind(("", port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise ProxyStartError(f"{parser} {direction.label} proxy port {port}: {e}") from None
                raise ProxyStartError(
                    f"the {parser} {direction.label} proxy port {port} of node index {node_index} is in use "
                    f"in this network namespace (another cilia node with index {node_index}?): L7 ports "
                    "fail closed; give each node its own index (--node-index)"
                ) from None


def proxy_threads(cpus: int | None = None) -> int:
    """HAProxy's threads: half the machine's CPUs (1 to 4). The proxy shares the CPUs with the
    pods' programs and the agent; on 2 CPUs a second thread costs more in hand-offs between threads
    than it brings (bench/l7_bench.py: CPU per request 26 µs with 1 thread, 30-34 µs with 2)."""
    n = cpus if cpus is not None else (os.cpu_count() or 2)
    return max(1, min(4, n // 2))


def node_port(cfg: ProxyConfig) -> int:
    """The node's HTTP ingress proxy port: what names its nftables mark table."""
    return cfg.ports[("http", Direction.INGRESS)]


def teardown(run_dir: Path, node_index: int = 0) -> list[str]:
    """``cilia down``: end an HAProxy a crashed agent left running (by the PID in its pid file, only
    if it runs this node's configuration), remove the proxy's files and the node's nftables mark
    table, and — when no other node's proxy is left in this namespace — the namespace's policy
    routing for proxy traffic."""
    files = proxy_files(run_dir)
    removed = []
    if stop_stale(ProxyConfig(files)):
        removed.append("http proxy (haproxy)")
    port = DEFAULT_PORTS[("http", Direction.INGRESS)] + NODE_PORT_STRIDE * node_index  # use_node_ports
    if os.geteuid() == 0 and shutil.which("nft") is not None:  # only root installed them (start)
        if marks.remove(port):
            removed.append(f"nftables table inet {marks.table_name(port)}")
        if not marks.tables():  # the last node with a proxy in this namespace
            with contextlib.suppress(transparent.RoutingError):
                removed += transparent.remove_routing()
    if files.socket_dir != files.run_dir and files.socket_dir.exists():
        shutil.rmtree(files.socket_dir, ignore_errors=True)
        removed.append(str(files.socket_dir))
    if files.run_dir.exists():
        shutil.rmtree(files.run_dir, ignore_errors=True)
        removed.append(str(files.run_dir))
    return removed
