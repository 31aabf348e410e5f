"""Differential property test: engine MapState + datapath sim == the plain reference evaluator
(semantics.md §9) on random policies, identities and flows."""

from __future__ import annotations

import sys

from conftest import REPO

if str(REPO) not in sys.path:  # bench/ is a top-level directory, not an installed package
    sys.path.insert(0, str(REPO))

from hypothesis import given, settings
from hypothesis import strategies as st
from reference_evaluator import reference_allowed

from bench.generators import named_ports_for, random_world
from cilia.datapath.sim import policy_lookup
from cilia.policy.resolve import EnforcementMode, EngineOptions, NamedPorts, resolve_policy
from cilia.policy.selectorcache import SelectorCache


@settings(max_examples=400, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    mode=st.sampled_from(list(EnforcementMode)),
    allow_localhost=st.booleans(),
    n_rules=st.integers(1, 7),
)
def test_engine_and_sim_agree_with_reference(
    seed: int, mode: EnforcementMode, allow_localhost: bool, n_rules: int
) -> None:
    world = random_world(seed, n_rules=n_rules, n_flows=30)
    options = EngineOptions(enforcement=mode, allow_localhost=allow_localhost)
    cache = SelectorCache(world.identities)
    pods = [i for i in world.identities if 256 <= i < 0x01000000]
    own = named_ports_for(pods)
    cluster: dict[tuple[str, int], set[int]] = {}
    for ports in own.values():
        for k, v in ports.items():
            cluster.setdefault(k, set()).add(v)
    frozen = {k: frozenset(v) for k, v in cluster.items()}
    policies = {}
    for subject, peer, direction, proto, port in world.flows:
        if subject not in policies:
            policies[subject] = resolve_policy(
                subject,
                world.identities[subject],
                world.rules,
                cache,
                named_ports=NamedPorts(own[subject], frozen),
                options=options,
            )
        got = policy_lookup(policies[subject].map_state, peer, direction, proto, port)
        want = reference_allowed(
            world.rules,
            world.identities[subject],
            world.identities[peer],
            peer,
            direction,
            proto,
            port,
            mode=mode.value,
            allow_localhost=allow_localhost,
            own_ports=own[subject],
            cluster_ports=frozen,
        )
        assert got.allowed == want, (subject, peer, direction, proto, port, got)
        # A drop names its reason: 181 when a deny entry decided, 133 when nothing allowed.
        if not got.allowed:
            assert (got.reason == 181) == (got.entry is not None and got.entry.deny)
