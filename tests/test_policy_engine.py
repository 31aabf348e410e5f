"""The engine façade: incremental updates equal a full recompute, and the returned diffs, applied in
order, reproduce every endpoint's MapState (what the kernel sync relies on)."""

from __future__ import annotations

import random
import sys

from conftest import REPO

if str(REPO) not in sys.path:  # bench/ is a top-level directory, not an installed package
    sys.path.insert(0, str(REPO))

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.generators import (
    APPS,
    ENVS,
    NAMESPACES,
    cidr_workload,
    pod_labels,
    random_identities,
    random_rules,
)
from cilia.identity.labels import Labels
from cilia.identity.podlabels import pod_identity_labels
from cilia.k8s import api
from cilia.policy.engine import PolicyEngine, UnknownIdentityError
from cilia.policy.mapstate import MapDiff
from cilia.policy.repository import ResourceKey
from cilia.policy.resolve import ALLOW_ANY, ALLOW_LOCALHOST_INGRESS, resolve_policy
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.translate import ServiceInfo, translate
from cilia.policy.types import Direction, Entry, Key, RuleRef


def apply_diffs(shadow: dict[int, dict[Key, Entry]], diffs: dict[int, MapDiff]) -> None:
    for ident, d in diffs.items():
        state = shadow.setdefault(ident, {})
        for k in d.deletes:
            del state[k]
        state.update(d.adds)
        for k, e in d.updates.items():
            assert k in state
            state[k] = e


def check(engine: PolicyEngine, shadow: dict[int, dict[Key, Entry]]) -> None:
    fresh_cache = SelectorCache(engine.cache.identities)
    for ident in engine.endpoints():
        kept = engine.policy(ident).map_state.entries
        assert kept == engine.compute(ident).map_state.entries
        full = resolve_policy(
            ident,
            engine.cache.identities[ident],
            list(engine.repository),
            fresh_cache,
            named_ports=engine._named_ports({}),
            options=engine.options,
        )
        assert kept == full.map_state.entries
        assert shadow.get(ident, {}) == kept
    for ident in set(shadow) - set(engine.endpoints()):
        assert shadow[ident] == {}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32))
def test_incremental_equals_full_recompute(seed: int) -> None:
    rng = random.Random(seed)
    ids = random_identities(rng)
    engine = PolicyEngine(identities=ids)
    shadow: dict[int, dict[Key, Entry]] = {}
    pods = [i for i in ids if 256 <= i < 0x01000000]
    for p in pods:
        apply_diffs(shadow, engine.add_endpoint(p))
    check(engine, shadow)
    next_id = 400
    for step in range(12):
        op = rng.random()
        if op < 0.4:
            rules = random_rules(rng, rng.randint(1, 2), name_prefix=f"s{step}-")
            res = ResourceKey("CiliumNetworkPolicy", "ns1", f"pol{rng.randint(0, 3)}")
            rules = tuple(r.__class__(**{**r.__dict__, "ref": r.ref._replace(name=res.name)}) for r in rules)
            apply_diffs(shadow, engine.apply(res, rules))
        elif op < 0.55:
            apply_diffs(
                shadow, engine.delete(ResourceKey("CiliumNetworkPolicy", "ns1", f"pol{rng.randint(0, 3)}"))
            )
        elif op < 0.75:
            lbls = pod_labels(rng.choice(APPS), rng.choice(ENVS), rng.choice(NAMESPACES))
            apply_diffs(shadow, engine.add_identity(next_id, lbls))
            if rng.random() < 0.5:
                apply_diffs(shadow, engine.add_endpoint(next_id))
            next_id += 1
        elif op < 0.9:
            victims = [i for i in engine.cache.identities if i >= 256]
            if victims:
                apply_diffs(shadow, engine.remove_identity(rng.choice(victims)))
        else:
            victims = [i for i in engine.cache.identities if i >= 256]
            if victims:  # relabel an existing identity
                v = rng.choice(victims)
                apply_diffs(shadow, engine.add_identity(v, pod_labels(rng.choice(APPS), "dev", "ns1")))
        check(engine, shadow)


def test_one_policy_added_gives_an_incremental_diff() -> None:
    w = cidr_workload(50)
    engine = PolicyEngine(identities=w.identities)
    engine.add_endpoint(w.subject)
    engine.apply_rules(w.rules[:-1])
    before = dict(engine.policy(w.subject).map_state.entries)
    diffs = engine.apply_rules(w.rules[-1:])
    assert set(diffs) == {w.subject}
    d = diffs[w.subject]
    after = engine.policy(w.subject).map_state.entries
    assert not d.deletes
    assert after == {**before, **d.adds, **d.updates}
    assert d.adds and all(k.direction == Direction.EGRESS for k in d.adds)


def test_unrelated_policy_touches_nothing() -> None:
    ids = {300: pod_labels("a", "prod", "ns1"), 301: pod_labels("b", "prod", "ns2")}
    engine = PolicyEngine(identities=ids)
    engine.add_endpoint(300)
    rules = random_rules(random.Random(1), 1)
    rule = rules[0].__class__(**{**rules[0].__dict__, "namespace": "ns2"})
    assert engine.apply(ResourceKey("CiliumNetworkPolicy", "ns2", "x"), (rule,)) == {}
    assert engine.policy(300).map_state.entries == {
        Key(0, Direction.INGRESS, 0, 0, 0): Entry(False, frozenset({ALLOW_ANY[Direction.INGRESS]})),
        Key(0, Direction.EGRESS, 0, 0, 0): Entry(False, frozenset({ALLOW_ANY[Direction.EGRESS]})),
        Key(1, Direction.INGRESS, 0, 0, 0): Entry(False, frozenset({ALLOW_LOCALHOST_INGRESS})),
    }


def test_unknown_endpoint_identity_is_an_error() -> None:
    engine = PolicyEngine(identities={300: Labels()})
    with pytest.raises(UnknownIdentityError, match="identity 999"):
        engine.add_endpoint(999)


def test_to_services_resolve_against_the_services_the_engine_knows() -> None:
    ids = {
        300: pod_identity_labels({"role": "backend"}, "prod"),
        301: pod_identity_labels({"role": "database"}, "prod"),
        302: pod_identity_labels({"role": "cache"}, "prod"),
    }
    engine = PolicyEngine(identities=ids)
    engine.add_endpoint(300)
    cnp = api.CiliumNetworkPolicy.model_validate(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "to-db", "namespace": "prod"},
            "spec": {
                "endpointSelector": {"matchLabels": {"role": "backend"}},
                "egress": [
                    {
                        "toServices": [{"k8sService": {"serviceName": "db", "namespace": "prod"}}],
                        "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}],
                    }
                ],
            },
        }
    )
    engine.apply_rules(translate(cnp))
    diffs = engine.set_services([ServiceInfo("db", "prod", {"role": "database"})])
    ref = RuleRef("CiliumNetworkPolicy", "prod", "to-db", "egress", 0)
    assert {k: v for k, v in engine.policy(300).map_state.items() if k.direction == Direction.EGRESS} == {
        Key(301, Direction.EGRESS, 6, 5432, 16): Entry(False, frozenset({ref}))
    }
    assert set(diffs) == {300}
    # The service's selector changes: the peer follows.
    engine.set_services([ServiceInfo("db", "prod", {"role": "cache"})])
    assert {k for k in engine.policy(300).map_state if k.direction == Direction.EGRESS} == {
        Key(302, Direction.EGRESS, 6, 5432, 16)
    }
