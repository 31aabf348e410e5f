"""What a node learned from DNS answers, for offline analysis of toFQDNs rules (semantics.md §7).

A ``toFQDNs`` selector selects identities labelled ``fqdn:<selector>``; on a node such an identity
exists only for an address its DNS proxy saw in an allowed answer, for as long as the answer's
TTL (raised to the node's minimum) runs. Offline there is no proxy: :class:`NodeDns` reads the cache a
node saved (``<state-dir>/fqdn.json``, :func:`cilia.proxy.dns.cache.saved_cache`) and answers as of one
moment (``now``): which addresses a name has, and under which unexpired names an address is known.
Names whose TTL has passed count as gone, although the node keeps an expired address while a
connection in its conntrack still uses it (offline analysis sees no conntrack).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from cilia.identity.fqdn import name_matches, normalize_fqdn
from cilia.k8s.frozen import frozen

if TYPE_CHECKING:
    from cilia.proxy.dns.cache import DnsCache


class NodeStateError(ValueError):
    """The node's saved DNS cache cannot be read (the file and what is wrong with it)."""


@frozen
class LearnedAddress:
    """An address as a node's DNS cache knows it: its unexpired names and the toFQDNs selectors
    (of the loaded policies) one of them matches. No selector: the address stays a plain outside
    address (world, or the CIDR identity of a policy prefix)."""

    ip: str
    names: tuple[str, ...]
    selectors: tuple[str, ...]


class NodeDns:
    """One node's saved DNS cache as of ``now`` (default: the time it is created). The file is read
    on first use, so analyses that need no DNS answer never touch it. ``state_dir`` None: nothing
    learned (``--no-state``)."""

    def __init__(self, state_dir: Path | None, now: float | None = None) -> None:
        self.state_dir = state_dir
        self.now = time.time() if now is None else now

    @cached_property
    def cache(self) -> DnsCache:
        # Imported here: the DNS proxy's modules cost every analysis start-up (issue 15).
        from cilia.proxy.dns.cache import DnsCache, DnsCacheError, saved_cache

        if self.state_dir is None:
            return DnsCache()
        try:
            return saved_cache(self.state_dir)
        except (DnsCacheError, OSError) as e:
            raise NodeStateError(
                f"cannot read what the node learned from DNS answers: {e} (--no-state analyses without it)"
            ) from None

    def where(self) -> str:
        """Which node state was read, for messages."""
        return "no node state read: --no-state" if self.state_dir is None else f"state dir {self.state_dir}"

    def addresses(self, name: str) -> list[str]:
        """The addresses ``name`` answered with whose TTL has not passed, in address order."""
        return sorted(self.cache.lookup(name, self.now), key=ipaddress.ip_address)

    def all_addresses(self) -> list[str]:
        """Every address the cache holds (expired names included), in address order."""
        return sorted(self.cache.entries, key=ipaddress.ip_address)

    def names(self, ip: str) -> tuple[str, ...]:
        """The names ``ip`` is known under whose TTL has not passed."""
        return tuple(sorted(n for n, t in self.cache.entries.get(ip, {}).items() if t > self.now))

    def expired_at(self, name: str) -> float | None:
        """When the last answer for ``name`` expired, if the cache still holds only expired ones."""
        key = normalize_fqdn(name)
        times = [names[key] for names in self.cache.entries.values() if key in names]
        return max(times) if times and max(times) <= self.now else None

    def learned(self, ip: str, selectors: Iterable[str]) -> LearnedAddress | None:
        """``ip`` as the cache knows it now (None: not learned, or every name of it expired)."""
        names = self.names(ip)
        if not names:
            return None
        sels = tuple(sorted({s for s in selectors if any(name_matches(n, s) for n in names)}))
        return LearnedAddress(ip, names, sels)

    def unknown_name(self, name: str) -> str:
        """Why ``fqdn:NAME`` stands for no address (the message of a bad-peer error)."""
        import datetime as dt  # here: only this message formats a time (start-up, issue 15)

        expired = self.expired_at(name)
        when = (
            f"; its last answer expired at {dt.datetime.fromtimestamp(expired, dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
            if expired is not None else ""
        )
        return (
            f"no address learned for {normalize_fqdn(name)} on this node ({self.where()}{when}); toFQDNs "
            "rules are decided by DNS answers: look the name up from a pod first, or trace to its IP"
        )
