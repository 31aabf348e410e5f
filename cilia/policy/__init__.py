"""The policy engine: the only place that interprets rules (repository -> selector cache -> MapState).

Pipeline, one concept per module: :mod:`~cilia.policy.translate` (API objects -> rules),
:mod:`~cilia.policy.repository` (rules by namespace and resource), :mod:`~cilia.policy.selectorcache`
(selector -> identities), :mod:`~cilia.policy.resolve` (per-identity enforcement, L4 filters,
distillation), :mod:`~cilia.policy.mapstate` (insertion rules, diff), :mod:`~cilia.policy.engine`
(the incremental façade). The datapath lookup over a MapState is :mod:`cilia.datapath.sim`.

Submodules are imported lazily so that ``import cilia.policy.types`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Contribution": "mapstate",
    "MapDiff": "mapstate",
    "MapState": "mapstate",
    "diff": "mapstate",
    "distill": "mapstate",
    "port_range_to_masked": "portrange",
    "Repository": "repository",
    "ResourceKey": "repository",
    "SelectorCache": "selectorcache",
    "EndpointPolicy": "resolve",
    "EnforcementMode": "resolve",
    "EngineOptions": "resolve",
    "Filter": "resolve",
    "NamedPorts": "resolve",
    "resolve_policy": "resolve",
    "PolicyEngine": "engine",
    "UnknownIdentityError": "engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cilia.policy' has no attribute {name!r}")
    return getattr(import_module(f"cilia.policy.{module}"), name)
