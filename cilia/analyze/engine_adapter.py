"""The bridge from the offline cluster to the one engine: translation, per-identity resolution and the
datapath lookup. Analysis never decides on its own; every verdict is the engine's MapState looked up
exactly as the datapath does (:mod:`cilia.datapath.sim`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from cilia.analyze.peers import parse_proto
from cilia.datapath import sim
from cilia.k8s.objects import Cluster, Pod
from cilia.policy.engine import PolicyEngine
from cilia.policy.mapstate import MapState
from cilia.policy.resolve import EndpointPolicy, EnforcementMode, EngineOptions
from cilia.policy.rules import PolicyRule
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.translate import ServiceInfo, resolve_services, translate
from cilia.policy.types import Direction, RuleRef, Verdict

if TYPE_CHECKING:
    from cilia.analyze.cluster import Analysis


def service_infos(cluster: Cluster) -> list[ServiceInfo]:
    """The Services as toServices sees them (selector-less ones with their endpoint addresses)."""
    backends: dict[tuple[str, str], list[str]] = defaultdict(list)
    for ep in cluster.endpoints:
        backends[(ep.namespace, ep.service)].extend(ep.addresses)
    return [
        ServiceInfo(
            name=s.name,
            namespace=s.namespace,
            selector=dict(s.selector) if s.selector else None,
            backend_ips=tuple(dict.fromkeys(backends.get((s.namespace, s.name), ()))),
            ports=tuple((p.port, p.protocol) for p in s.ports),
            labels=dict(s.labels),
        )
        for s in cluster.services
    ]


def translate_all(cluster: Cluster, cluster_name: str = "default") -> tuple[PolicyRule, ...]:
    """Every policy as engine rules, toServices resolved against the manifests' Services."""
    services = service_infos(cluster)
    out: list[PolicyRule] = []
    for policy in cluster.policies:
        kwargs = {} if policy.kind == "NetworkPolicy" else {"cluster": cluster_name}
        out.extend(resolve_services(rule, services) for rule in translate(policy.model, **kwargs))
    return tuple(out)


def _port_key(pod: Pod) -> tuple[tuple[str, int, int], ...]:
    return tuple(
        sorted((p.name.lower(), int(parse_proto(p.protocol)), p.container_port) for p in pod.ports if p.name)
    )


@dataclass
class SidePolicy:
    """One identity's policy in one direction: enforcement, attribution and the lookup."""

    direction: Direction
    enforced: bool
    default_deny_by: tuple[RuleRef, ...]
    map_state: MapState = field(repr=False)

    def lookup(self, peer: int, proto: int, port: int) -> Verdict:
        """The datapath's verdict for a packet with ``peer`` on ``proto``/``port`` (§5.5)."""
        return sim.policy_lookup(self.map_state, peer, int(self.direction), proto, port)

    @cached_property
    def _peer_groups(self) -> dict[tuple[tuple[int, int, int, bool], ...], list[int]]:
        d = int(self.direction)
        shapes: dict[int, list[tuple[int, int, int, bool]]] = defaultdict(list)
        for key, entry in self.map_state.items():
            if key.direction == d and key.identity != 0:
                shapes[key.identity].append((key.proto, key.port, key.prefix_len, entry.deny))
        groups: dict[tuple[tuple[int, int, int, bool], ...], list[int]] = defaultdict(list)
        for peer, shape in shapes.items():
            groups[tuple(sorted(shape))].append(peer)
        return dict(groups)

    def peers(self) -> list[int]:
        """Peer identities with entries of their own in this direction (all others share a verdict)."""
        return [p for peers in self._peer_groups.values() for p in peers]

    def peer_groups(self) -> list[list[int]]:
        """:meth:`peers` grouped by the shape of their entries (ports, protocols, allow/deny): peers in
        one group get the same verdict for every packet, so one lookup decides for all of them."""
        return list(self._peer_groups.values())


class PolicyOracle:
    """The engine loaded with the cluster's rules and identities; policies are resolved on demand
    (endpoints with named ports are registered up front, so egress named ports resolve against
    every pod, as on a node)."""

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        opts = analysis.options
        self.options = EngineOptions(
            enforcement=EnforcementMode(str(opts.enforcement_mode)),
            allow_localhost=str(opts.allow_localhost) == "always",
        )
        self.engine = PolicyEngine(self.options, analysis.identities)
        self.engine.apply_rules(analysis.rules)
        self._own: dict[int, dict[tuple[str, int], int]] = {}
        for ep in analysis.endpoints:
            own = self._own.setdefault(ep.identity, {})
            for name, proto, number in _port_key(ep.pod):
                own.setdefault((name, proto), number)
        for ident, own in self._own.items():
            if own:
                self.engine.add_endpoint(ident, own)
        self._policies: dict[int, EndpointPolicy] = {}
        self._sides: dict[tuple[int, Direction], SidePolicy] = {}

    @property
    def cache(self) -> SelectorCache:
        return self.engine.cache

    def endpoint_policy(self, identity: int) -> EndpointPolicy:
        pol = self._policies.get(identity)
        if pol is None:
            if identity in self.engine.endpoints():
                pol = self.engine.policy(identity)
            else:
                pol = self.engine.compute(identity, ports=self._own.get(identity, {}))
            self._policies[identity] = pol
        return pol

    def side(self, identity: int, direction: Direction) -> SidePolicy:
        side = self._sides.get((identity, direction))
        if side is None:
            pol = self.endpoint_policy(identity)
            side = SidePolicy(
                direction, pol.is_enforced(direction), pol.default_deny_by[direction], pol.map_state
            )
            self._sides[(identity, direction)] = side
        return side
