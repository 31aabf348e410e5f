"""What a proxy needs from the agent, and nothing more: the agent implements these protocols
(under its own lock); a proxy never reaches into the agent's state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from cilia.proxy.records import DnsRecord


class ProxyHost(Protocol):
    """The agent as every proxy sees it."""

    def identity_of(self, ip: str) -> int:
        """The security identity the node's ipcache gives ``ip`` (flows name both ends by it)."""
        ...

    def report(self, record: DnsRecord) -> None:
        """Hand one record to the flow sink (must not raise into the proxy)."""
        ...


class DnsProxyHost(ProxyHost, Protocol):
    """The agent as the DNS proxy sees it."""

    def dns_rules(self, ip: str) -> Sequence[str] | None:
        """The ``matchName``/``matchPattern`` patterns the egress DNS rules of the endpoint at
        ``ip`` allow; None when ``ip`` is no endpoint of this node or it has no DNS rules."""
        ...

    def learn(self, name: str, addresses: Mapping[str, int]) -> None:
        """``name`` (a name the endpoint's rules allowed) answered ``address -> TTL``; returns once
        the policies and the ipcache know the addresses, before the answer reaches the pod."""
        ...
