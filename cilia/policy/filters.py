"""The L4 filter and the named ports that policy resolution (:mod:`cilia.policy.resolve`) builds and
that L7 resolution (:mod:`cilia.policy.l7resolve`) reads; here so neither imports the other."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from cilia.identity.selector import Selector
from cilia.policy.types import Direction, RuleRef


class NamedPorts(NamedTuple):
    """Named ports for resolution: the subject's own container ports (ingress) and every known
    endpoint's (egress: a name resolves only if all endpoints agree on one port, like Cilium's
    ``namedPortMultiMap``)."""

    own: Mapping[tuple[str, int], int] = {}
    cluster: Mapping[tuple[str, int], frozenset[int]] = {}

    def resolve(self, direction: int, name: str, proto: int) -> int:
        """The port ``name``/``proto`` stands for, 0 if unknown or ambiguous."""
        if direction == Direction.INGRESS:
            return self.own.get((name, proto), 0)
        ports = self.cluster.get((name, proto), frozenset())
        return next(iter(ports)) if len(ports) == 1 else 0


class Filter(NamedTuple):
    """One L4 filter of a direction: a port (range / name / ICMP type, or proto 0 for L3-only)
    and, per peer selector, whether it is a deny and which rules wrote it."""

    direction: int
    proto: int
    port: int
    end_port: int
    name: str
    selectors: tuple[tuple[Selector, bool, frozenset[RuleRef]], ...]
    # Allow selectors whose rules require authentication, with the auth type (Cilium's AuthType).
    auth: tuple[tuple[Selector, int], ...] = ()
    # The L7 parser of the port ("" none, else cilia.policy.l7.L7Parser) and the allow selectors'
    # L7 policies (cilia.policy.l7resolve.L7Spec); an allowed selector not listed has no L7 part.
    parser: str = ""
    l7: tuple[tuple[Selector, Any], ...] = ()
