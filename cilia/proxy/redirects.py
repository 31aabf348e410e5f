"""Redirect bookkeeping: which of an endpoint's connections go to a proxy, and on which port.

A redirect is keyed by (endpoint, direction, port, protocol), as Cilium keys its proxy redirects,
and carries the proxy port of the MapState entry that asks for it (``Entry.proxy_port``, Cilium's
``ProxyPort``). :class:`Redirects` remembers what the datapath was told and computes the changes
to a wanted set, so each datapath hook is told only what changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from cilia.policy.mapstate import MapState
from cilia.policy.types import Direction, Proto

DNS_PORT = 53


class RedirectKey(NamedTuple):
    endpoint: int  # endpoint id
    direction: Direction
    port: int  # the policy entry's destination port
    proto: int  # Proto value (TCP, UDP)


def redirects_of(endpoint: int, mapstate: MapState) -> dict[RedirectKey, int]:
    """The redirects an endpoint's MapState asks for: every allow entry with a proxy port, by its
    (direction, port, protocol); several peers on one port share one redirect."""
    out: dict[RedirectKey, int] = {}
    for key, entry in mapstate.entries.items():
        if entry.deny or not entry.proxy_port or key.proto == Proto.ANY:
            continue
        rk = RedirectKey(endpoint, Direction(key.direction), key.port, key.proto)
        out[rk] = max(entry.proxy_port, out.get(rk, 0))
    return out


def dns_redirects(endpoint: int, proxy_port: int) -> dict[RedirectKey, int]:
    """The DNS redirects of an endpoint whose egress policy has DNS rules: UDP and TCP port 53."""
    return {RedirectKey(endpoint, Direction.EGRESS, DNS_PORT, p): proxy_port for p in (Proto.UDP, Proto.TCP)}


def by_endpoint(redirects: Mapping[RedirectKey, int]) -> dict[int, dict[RedirectKey, int]]:
    """The redirects grouped by endpoint id."""
    out: dict[int, dict[RedirectKey, int]] = {}
    for k, port in sorted(redirects.items()):
        out.setdefault(k.endpoint, {})[k] = port
    return out


@dataclass(frozen=True)
class RedirectChanges:
    removed: tuple[RedirectKey, ...] = ()
    set: Mapping[RedirectKey, int] = field(default_factory=dict)  # new, or with another proxy port

    @property
    def endpoints(self) -> set[int]:
        """The endpoints some change concerns."""
        return {k.endpoint for k in (*self.removed, *self.set)}

    def __bool__(self) -> bool:
        return bool(self.removed or self.set)


@dataclass
class Redirects:
    """The redirects the datapath was told about (``applied``; None until read back from it, e.g.
    a previous agent's pinned maps)."""

    applied: dict[RedirectKey, int] | None = None

    def changes(self, want: Mapping[RedirectKey, int]) -> RedirectChanges:
        """What to tell the datapath to get from ``applied`` to ``want``."""
        have = self.applied or {}
        return RedirectChanges(tuple(sorted(have.keys() - want.keys())),
                               {k: p for k, p in sorted(want.items()) if have.get(k) != p})

    def commit(self, want: Mapping[RedirectKey, int]) -> None:
        """The datapath now holds ``want``."""
        self.applied = dict(want)

    def of_endpoints(self, endpoints: Iterable[int]) -> dict[RedirectKey, int]:
        ids = set(endpoints)
        return {k: p for k, p in (self.applied or {}).items() if k.endpoint in ids}
