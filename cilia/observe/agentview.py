"""The flow pipeline wired to a running agent: its endpoints, identities, CIDR prefixes and resolved
policies as a :class:`~cilia.observe.enrich.NodeView`, and a :class:`FlowPipeline` factory for the
agent's flow sink (``cilia.agent.daemon.run(node, flow_sink=pipeline_for)``).

The agent sits below this package (design.md layers), so it does not import it; the command that
starts the agent passes :func:`pipeline_for` in.
"""

from __future__ import annotations

from typing import Any

from cilia.observe.audit import AuditRules
from cilia.observe.enrich import LocalEndpoint, NodeView
from cilia.observe.metrics import NodeMetrics
from cilia.observe.pipeline import DEFAULT_RING, FlowPipeline

HOST_PREFIX = {4: 32, 6: 128}


class AgentNodeView:
    """Builds the agent's :class:`NodeView`, rebuilt only when its reconciled state moved on
    (store revision, policy revision, endpoint set, identities); reads under the agent's lock, as
    its REST views do, since the reconcile loop runs beside the flow reader."""

    def __init__(self, agent: Any, audit: AuditRules | None = None, node_name: str = "") -> None:
        self.agent = agent
        self.audit = audit or AuditRules()
        self.node_name = node_name or f"cilia-node-{agent.cfg.node_index}"
        self._key: tuple[Any, ...] | None = None
        self._view = NodeView()

    def __call__(self) -> NodeView:
        rec = self.agent.reconciler
        with self.agent._lock:
            eps = tuple((e.id, e.ip, e.identity, str(e.pod)) for e in rec.endpoints)
            identities = dict(rec.allocator.identities())
            key = (rec.revision, rec.policy.repo.revision, eps, frozenset(identities), self.audit.revision)
            if key == self._key:
                return self._view
            policies = {}
            for e in rec.endpoints:
                if e.identity and e.identity in rec.policy.cache.identities:
                    policies[e.identity] = rec.policy.endpoint_policy(e.identity, rec.desired.pods.get(e.pod))
            prefixes = dict(getattr(rec, "cidr_identities", {}))
        audit = {}
        if self.audit:
            for ident, pol in policies.items():
                full = self.audit.full_policy(pol, identities, rec.policy.options)
                if full is not None:
                    audit[ident] = full
        endpoints = {}
        for ep_id, ip, ident, pod in eps:
            ns, _, name = pod.partition("/")
            endpoints[ip] = LocalEndpoint(ep_id, ident, ns, name, ip)
        self._view = NodeView(endpoints, identities, prefixes, policies, audit, rec.policy.repo.revision,
                              self.node_name)  # fmt: skip
        self._key = key
        return self._view


def pipeline_for(
    agent: Any, metrics: NodeMetrics | None = None, capacity: int = DEFAULT_RING
) -> FlowPipeline:
    """The agent's flow sink: flows named from its state, kept in a ring of ``capacity``, logged
    under its state directory (``flows.jsonl``), counted in ``metrics``."""
    return FlowPipeline(
        AgentNodeView(agent),
        getattr(agent.datapath, "rules_for", None),
        state_dir=agent.cfg.state_dir,
        capacity=capacity,
        metrics=metrics,
    )
