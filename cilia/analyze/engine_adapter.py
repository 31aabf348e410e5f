"""The bridge from the offline cluster to the one engine: translation, per-identity resolution and the
datapath lookup. Analysis never decides on its own; every verdict is the engine's MapState looked up
exactly as the datapath does (:mod:`cilia.datapath.sim`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from cilia.analyze.selections import IndexedSelectorCache
from cilia.datapath import sim
from cilia.identity.labels import Labels
from cilia.k8s.objects import Cluster, Pod
from cilia.policy import engine as policy_engine
from cilia.policy.engine import PolicyEngine, pod_named_ports, policy_rules
from cilia.policy.mapstate import MapState
from cilia.policy.resolve import EndpointPolicy, EngineOptions
from cilia.policy.rules import PolicyRule
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.translate import ServiceInfo, resolve_services
from cilia.policy.types import Direction, RuleRef, Verdict


def service_infos(cluster: Cluster) -> list[ServiceInfo]:
    """The Services as toServices sees them (selector-less ones with their endpoint addresses)."""
    backends: dict[tuple[str, str], list[str]] = defaultdict(list)
    for ep in cluster.endpoints:
        backends[(ep.namespace, ep.service)].extend(ep.addresses)
    return policy_engine.service_infos(cluster.services, backends)


def translate_all(cluster: Cluster, cluster_name: str = "default") -> tuple[PolicyRule, ...]:
    """Every policy as engine rules, toServices resolved against the manifests' Services."""
    services = service_infos(cluster)
    return tuple(
        resolve_services(rule, services)
        for policy in cluster.policies
        for rule in policy_rules(policy, cluster_name)
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
    """The engine loaded with the cluster's rules and identities; policies are resolved on demand.
    Egress named ports resolve against every pod's named ports, as on a node: the engine is given
    them as the cluster's ports up front (registering each pod as a kept endpoint instead computed
    every policy eagerly and again each time another pod's named ports arrived: quadratic, 78 s of
    a 10k-pod diff). ``endpoints``: (identity, pod) of every pod."""

    def __init__(
        self,
        options: EngineOptions,
        identities: Mapping[int, Labels],
        rules: Iterable[PolicyRule],
        endpoints: Iterable[tuple[int, Pod]],
    ) -> None:
        self.options = options
        self.engine = PolicyEngine(self.options, identities)
        # selections through a label index (the engine's own cache tests every selector against
        # every identity); the oracle's identities are fixed, which the index needs
        self.engine.cache = IndexedSelectorCache(identities)
        self.engine.apply_rules(tuple(rules))
        self._own: dict[int, dict[tuple[str, int], int]] = {}
        for identity, pod in endpoints:
            own = self._own.setdefault(identity, {})
            for name, proto, number in pod_named_ports(pod):
                own.setdefault((name, proto), number)
        cluster: dict[tuple[str, int], set[int]] = defaultdict(set)
        for own in self._own.values():
            for k, number in own.items():
                cluster[k].add(number)
        self.engine.set_cluster_ports(cluster)
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
