"""What the DNS proxy learned on a node: the cache, the addresses with fqdn identities and the DNS
redirects as applied (:mod:`cilia.agent.fqdn` acts on it; the reconciler holds one)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cilia.identity.fqdn import host_prefix
from cilia.identity.labels import Labels
from cilia.proxy.dns.cache import STATE_FILE, DnsCache, load_state, save_state
from cilia.proxy.redirects import Redirects


@dataclass
class FqdnState:
    """The DNS cache, the addresses that have fqdn identities and what the datapath redirects."""

    ips: dict[str, Labels] = field(default_factory=dict)  # address -> identity labels
    identities: dict[str, int] = field(default_factory=dict)  # address -> identity
    # the DNS redirects as applied; unknown until read from the datapath (a previous agent's pins)
    redirects: Redirects = field(default_factory=Redirects)
    cache: DnsCache = field(default_factory=DnsCache)
    path: Path | None = None  # where the state is saved (None: not saved)
    clock: Callable[[], float] = time.time
    selectors_seen: frozenset[str] | None = None  # the toFQDNs selectors the labels were made for
    endpoints_seen: frozenset[tuple[int, int]] | None = None  # (id, identity) redirects were made for
    in_use: frozenset[str] = frozenset()  # expired addresses conntrack still had, when last read
    in_use_checked: float = 0.0
    dirty: bool = False  # renewed expiry times not saved yet (the timer saves them)
    routing_checked: float = 0.0  # monotonic time the proxy routing was last checked (keep_routing)

    @classmethod
    def for_node(cls, state_dir: Path, min_ttl: int = 0) -> FqdnState:
        return cls(cache=DnsCache(min_ttl), path=state_dir / STATE_FILE)

    def ipcache(self) -> dict[str, int]:
        return {host_prefix(ip): ident for ip, ident in self.identities.items()}

    def save(self) -> None:
        """Write the cache and the labels of the learned addresses (atomically)."""
        if self.path is None:
            return
        save_state(self.path, self.cache, self.ips)
        self.dirty = False

    def load(self) -> dict[str, Labels]:
        """Read the saved cache into this state; returns the saved labels by address ({} when
        nothing was saved). A file that cannot be read is an error naming it."""
        saved = load_state(self.path, self.cache.min_ttl) if self.path is not None else None
        if saved is None:
            return {}
        self.cache, labels = saved
        return labels
