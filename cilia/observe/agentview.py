"""The flow pipeline wired to a running agent: its endpoints, identities, CIDR prefixes and resolved
policies as a :class:`~cilia.observe.enrich.NodeView`, and a :class:`FlowPipeline` factory for the
agent's flow sink (``cilia.agent.daemon.run(node, flow_sink=pipeline_for)``).

The agent sits below this package (design.md layers), so it does not import it; the command that
starts the agent passes :func:`pipeline_for` in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from cilia.datapath.maps.policy import DEFAULT_MAX_PER_ENDPOINT
from cilia.observe.audit import AuditRules
from cilia.observe.enrich import LocalEndpoint, NodeView
from cilia.observe.flow import L4_NUMBERS, Service
from cilia.observe.metrics import NodeMetrics
from cilia.observe.pipeline import DEFAULT_RING, FlowPipeline

HOST_PREFIX = {4: 32, 6: 128}


def _workloads(manifest: Any) -> tuple[tuple[str, str], ...]:
    """(kind, name) of a pod manifest's owners (``metadata.ownerReferences``), as Hubble's workloads."""
    meta = manifest.get("metadata") if isinstance(manifest, dict) else None
    refs = meta.get("ownerReferences") if isinstance(meta, dict) else None
    return tuple((str(r.get("kind", "")), str(r.get("name", ""))) for r in refs or () if isinstance(r, dict))


def _frontends(views: Any) -> dict[tuple[str, int, int], Service]:
    """(ClusterIP, port, IP protocol) -> Service, from the agent's service table
    (:class:`cilia.agent.services.ServiceView` rows)."""
    out: dict[tuple[str, int, int], Service] = {}
    for v in views:
        for p in v.ports:
            proto = L4_NUMBERS.get(p.frontend.protocol)
            if proto is not None:
                out[(p.frontend.ip, p.frontend.port, proto)] = Service(v.name, v.namespace)
    return out


FrontendOf = Callable[[str, str, int, int, int], tuple[str, int] | None]


def _backend_lookup(lookup: FrontendOf | None, backends: set[tuple[str, int]]) -> FrontendOf | None:
    """The datapath's reverse NAT lookup, asked only about a destination that is some Service's
    backend (a flow to anything else was not translated: no map lookup on the flow path)."""
    if lookup is None or not backends:
        return None

    def frontend_of(src: str, dst: str, sport: int, dport: int, proto: int) -> tuple[str, int] | None:
        return lookup(src, dst, sport, dport, proto) if (dst, dport) in backends else None

    return frontend_of


class AgentNodeView:
    """Builds the agent's :class:`NodeView`, rebuilt only when its reconciled state moved on
    (store revision, policy revision, endpoint set, identities); reads under the agent's lock, as
    its REST views do, since the reconcile loop runs beside the flow reader."""

    def __init__(self, agent: Any, node_name: str = "") -> None:
        self.agent = agent
        self.audit = AuditRules()  # a copy of the agent's audit-mode rules (PolicyState.audited)
        self._audit_revision = -1
        # the cluster's name of the node (node-<i>, as `cilia node list`), else the single node's
        self.node_name = node_name or agent.cfg.node_name or f"cilia-node-{agent.cfg.node_index}"
        self._key: tuple[Any, ...] | None = None
        self._view = NodeView()

    def _names(self, ip: str) -> tuple[str, ...]:
        """The names the node's DNS proxy learned for ``ip``, as the cache holds them now."""
        fqdn = getattr(self.agent.reconciler, "fqdn", None)
        cache = getattr(fqdn, "cache", None)
        return tuple(sorted(n.rstrip(".") for n in cache.names(ip))) if cache is not None else ()

    def __call__(self) -> NodeView:
        rec = self.agent.reconciler
        with self.agent._lock:
            eps = tuple((e.id, e.ip, e.identity, str(e.pod), _workloads(rec.desired.raw_pods.get(e.pod)),
                         getattr(e, "ip6", ""))
                        for e in rec.endpoints)
            identities = dict(rec.allocator.identities())
            audit_revision = getattr(rec.policy, "audit_revision", 0)
            host = getattr(self.agent, "host_endpoint", None)  # the host firewall's host endpoint
            host_labels = host.labels if host is not None else None
            svc_views = tuple(getattr(getattr(rec, "services", None), "views", ()))
            key = (rec.revision, rec.policy.repo.revision, eps, frozenset(identities), audit_revision,
                   host_labels, svc_views)
            if key == self._key:
                return self._view
            if audit_revision != self._audit_revision:
                self.audit = AuditRules()
                for resource, rules in getattr(rec.policy, "audited", {}).items():
                    self.audit.set(resource, rules)
                self._audit_revision = audit_revision
            policies = {}
            for e in rec.endpoints:
                if e.identity and e.identity in rec.policy.cache.identities:
                    policies[e.identity] = rec.policy.endpoint_policy(e.identity, rec.desired.pods.get(e.pod))
            if host_labels is not None:  # host flows name the host policies (default deny included)
                policies[1] = rec.policy.endpoint_policy(1)
            prefixes = dict(getattr(rec, "cidr_identities", {}))
            services = _frontends(svc_views)
            backends = {(b.ip, b.port) for v in svc_views for p in v.ports for b in p.backends}
        audit = {}
        if self.audit:
            for ident, pol in policies.items():
                full = self.audit.full_policy(pol, identities, rec.policy.options)
                if full is not None:
                    audit[ident] = full
        endpoints = {}
        for ep_id, ip, ident, pod, workloads, ip6 in eps:
            ns, _, name = pod.partition("/")
            for addr in (ip, ip6) if ip6 else (ip,):  # a dual-stack pod by either address
                endpoints[addr] = LocalEndpoint(ep_id, ident, ns, name, addr, workloads)
        rev_nat = getattr(getattr(self.agent, "datapath", None), "service_frontend", None)  # bpf only
        frontend_of = _backend_lookup(rev_nat, backends)
        self._view = NodeView(endpoints, identities, prefixes, policies, audit, rec.policy.repo.revision,
                              self.node_name, names=self._names, services=services,
                              frontend_of=frontend_of)  # fmt: skip
        self._key = key
        return self._view


def pipeline_for(
    agent: Any, metrics: NodeMetrics | None = None, capacity: int = DEFAULT_RING
) -> FlowPipeline:
    """The agent's flow sink: flows named from its state, kept in a ring of ``capacity``, logged
    under its state directory (``flows.jsonl``), counted in ``metrics`` (which also gets the agent's
    policy implementation delays: cilia.agent.policydelay)."""
    delay = getattr(agent.reconciler, "policy_delay", None)
    if metrics is not None and delay is not None:
        delay.sink = metrics.observe_policy_delay
    return FlowPipeline(
        AgentNodeView(agent),
        getattr(agent.datapath, "rules_for", None),
        state_dir=agent.cfg.state_dir,
        capacity=capacity,
        metrics=metrics,
    )


log = logging.getLogger("cilia.observe")


def refresh_metrics(agent: Any, metrics: NodeMetrics, map_capacity: int = DEFAULT_MAX_PER_ENDPOINT) -> None:
    """Copy the agent's state into ``metrics``: policies loaded, endpoints by enforcement, policy
    map fill per endpoint, and the kernel's packet / lost / suppressed counters (bpf datapath).
    ``cilium_policy`` counts rules (a CNP with ``specs`` counts each), as Cilium's does."""
    rec = agent.reconciler
    with agent._lock:
        states: dict[str, int] = {}
        for e in rec.endpoints:
            enf = rec.policy.enforcement(e.identity) if e.identity else {"ingress": False, "egress": False}
            state = {(True, True): "both", (True, False): "ingress", (False, True): "egress"}.get(
                (enf["ingress"], enf["egress"]), "none"
            )
            states[state] = states.get(state, 0) + 1
        fill = {e.id: len(rec.applied.get(e.id, ())) for e in rec.endpoints}
        policies = len(rec.policy.repo)
        revision = rec.policy.repo.revision
        fqdn_state = getattr(rec, "fqdn", None)
        cache = getattr(fqdn_state, "cache", None)
        fqdn = None
        if cache is not None:
            ips = cache.addresses()
            names = {n for ip in ips for n in cache.names(ip)}
            fqdn = (len(names), len(ips), len(fqdn_state.in_use), len(fqdn_state.selectors_seen or ()))
    metrics.set_policy_count(policies)
    metrics.set_policy_revision(revision)
    if fqdn is not None:
        metrics.set_fqdn(*fqdn)
    metrics.set_enforcement(states)
    metrics.set_map_fill(fill, map_capacity)
    read = getattr(agent.datapath, "metrics", None)
    if read is not None:
        metrics.set_datapath_counters(read())


def serve_metrics(
    agent: Any, metrics: NodeMetrics, addr: str, interval_s: float = 5.0
) -> tuple[Any, threading.Event]:
    """Serve ``metrics`` on ``addr`` (``--metrics-addr 127.0.0.1:9962``) and refresh them from the
    agent every ``interval_s`` in a background thread. Returns the HTTP server (its
    ``server_address`` has the bound port) and an event that stops both when set."""
    server = metrics.serve(addr)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                refresh_metrics(agent, metrics)
            except Exception:  # metrics must never take the agent down; the log says what broke
                log.exception("refreshing metrics")
            stop.wait(interval_s)
        server.shutdown()

    threading.Thread(target=loop, name="cilia-metrics", daemon=True).start()
    return server, stop
