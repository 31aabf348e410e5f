"""The DNS proxy's cache: which names answered with which address, and until when.

Each (name, address) pair of an allowed answer lives for the answer's TTL, raised to the node's
minimum (``tofqdns-min-ttl``; Cilium 1.18's default is 0: the server's TTL is honoured). A later
answer renews the pair; a pair is never shortened by a later, shorter answer within its lifetime
(as Cilium's cache keeps the latest expiry). Times are wall-clock seconds, so the cache can be
written to disk and read back by the next agent (:meth:`DnsCache.to_json`).

The cache is the node's (one for all endpoints) where Cilium keeps one per endpoint and a global
union; what reaches the ipcache is the same union either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cilia.identity.fqdn import normalize_fqdn
from cilia.identity.labels import Labels
from cilia.proxy.errors import ProxyError
from cilia.store.files import write_private

FORMAT_VERSION = 1
STATE_FILE = "fqdn.json"  # in the agent's state directory: the cache and the learned addresses' labels
STATE_VERSION = 1


class DnsCacheError(ProxyError, ValueError):
    """A saved cache that cannot be read (the file and what is wrong with it)."""


@dataclass
class DnsCache:
    """``address -> name -> expiry`` (wall-clock seconds)."""

    min_ttl: int = 0
    entries: dict[str, dict[str, float]] = field(default_factory=dict)

    def update(self, name: str, answers: Mapping[str, int], now: float) -> set[str]:
        """Record an answer for ``name`` (``address -> TTL``). Returns the addresses that gained the
        name (their identity may change); renewals of known pairs are not in it."""
        key = normalize_fqdn(name)
        gained = set()
        for ip, ttl in answers.items():
            expires = now + max(int(ttl), self.min_ttl)
            names = self.entries.setdefault(ip, {})
            if key not in names:
                gained.add(ip)
            names[key] = max(expires, names.get(key, expires))
        return gained

    def names(self, ip: str) -> frozenset[str]:
        """The names the address is known under (expired ones stay until :meth:`collect`)."""
        return frozenset(self.entries.get(ip, ()))

    def addresses(self) -> list[str]:
        return sorted(self.entries)

    def due(self, now: float) -> set[str]:
        """Addresses with at least one expired name."""
        return {ip for ip, names in self.entries.items() if any(t <= now for t in names.values())}

    def collect(self, now: float, keep: Iterable[str] = ()) -> set[str]:
        """Drop the expired names of every address except those in ``keep`` (still in use);
        addresses left without a name are forgotten. Returns the addresses that lost a name."""
        spared = set(keep)
        touched = set()
        for ip in sorted(self.due(now) - spared):
            names = self.entries[ip]
            for name in [n for n, t in names.items() if t <= now]:
                del names[name]
            if not names:
                del self.entries[ip]
            touched.add(ip)
        return touched

    def next_expiry(self) -> float | None:
        return min((t for names in self.entries.values() for t in names.values()), default=None)

    def lookup(self, name: str, now: float) -> list[str]:
        """The addresses ``name`` answered with that have not expired."""
        key = normalize_fqdn(name)
        return sorted(ip for ip, names in self.entries.items() if names.get(key, 0.0) > now)

    def to_json(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "min_ttl": self.min_ttl,
                "entries": {ip: dict(sorted(n.items())) for ip, n in sorted(self.entries.items())}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], min_ttl: int | None = None) -> DnsCache:
        """Read :meth:`to_json`; ``min_ttl`` (the running node's setting) wins over the saved one."""
        if data.get("version") != FORMAT_VERSION:
            raise DnsCacheError(f"DNS cache format {data.get('version')!r}, expected {FORMAT_VERSION}")
        try:
            entries = {str(ip): {str(n): float(t) for n, t in names.items()}
                       for ip, names in data.get("entries", {}).items()}
        except (AttributeError, TypeError, ValueError) as e:
            raise DnsCacheError(f"DNS cache entries: {e}") from e
        saved = int(data.get("min_ttl", 0))
        return cls(saved if min_ttl is None else min_ttl, entries)


def save_state(path: Path, cache: DnsCache, labels: Mapping[str, Labels]) -> None:
    """Write the node's DNS state (the cache and the identity labels of the learned addresses) to
    ``path``, atomically."""
    data = {"version": STATE_VERSION, "cache": cache.to_json(),
            "labels": {ip: lbls.strings() for ip, lbls in sorted(labels.items())}}
    write_private(path, json.dumps(data, separators=(",", ":")))  # 0600: every name a pod looked up


def load_state(path: Path, min_ttl: int | None = None) -> tuple[DnsCache, dict[str, Labels]] | None:
    """Read :func:`save_state` (None: nothing saved); ``min_ttl``: the running node's setting. A file
    that cannot be read is a :class:`DnsCacheError` naming it."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("version") != STATE_VERSION:
            raise DnsCacheError(f"format {data.get('version')!r}, expected {STATE_VERSION}")
        cache = DnsCache.from_json(data["cache"], min_ttl)
        return cache, {ip: Labels.parse(lbls) for ip, lbls in data.get("labels", {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DnsCacheError(f"{path}: {e}") from e


def saved_cache(state_dir: Path) -> DnsCache:
    """Offline (``cilia trace`` without an agent): the DNS cache a node saved in ``state_dir`` (empty
    when it saved none). Use :meth:`DnsCache.lookup` for a name's unexpired addresses,
    :meth:`DnsCache.names` and :func:`cilia.identity.fqdn.fqdn_identity_labels` for the identity an
    address has."""
    saved = load_state(state_dir / STATE_FILE, 0)
    return saved[0] if saved is not None else DnsCache()
