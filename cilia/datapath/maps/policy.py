"""The policy map (``cilia_policy``): one LPM trie for all endpoints.

Key ``{prefixlen; ep_id u32; identity u32; direction u8; proto u8; dport be16}``. Endpoint id,
peer identity and direction are always fully matched (72 bits); the LPM-variable part is
proto(8) | port(16), so ``prefixlen = 72 + types.lpm_prefix(proto, port_prefix)``. The value holds
the deny bit, proxy port and priority, auth type, the entry's LPM prefix (the kernel needs it to
choose between the exact and the wildcard-identity match) and the rule cookie that names the rules
in user space (:mod:`cilia.datapath.bpf.cookies`).
"""

from __future__ import annotations

import ctypes
import socket
from collections.abc import Iterable
from ctypes import Structure, c_uint8, c_uint16, c_uint32
from typing import NamedTuple

from cilia.datapath.bpf.libbpf import MapFd
from cilia.datapath.errors import DatapathError
from cilia.policy.types import Entry, Key, lpm_prefix

MAP = "cilia_policy"
MAX_ENTRIES = 1048576  # the whole node
DEFAULT_MAX_PER_ENDPOINT = 16384  # bpf-policy-map-max (semantics.md §5.6)
FIXED_BITS = 72
F_DENY = 0x1


class PolicyKey(Structure):
    _fields_ = [
        ("prefixlen", c_uint32),
        ("ep_id", c_uint32),
        ("identity", c_uint32),
        ("direction", c_uint8),
        ("proto", c_uint8),
        ("dport", c_uint16),  # network order
    ]


class PolicyValue(Structure):
    _fields_ = [
        ("cookie", c_uint32),
        ("proxy_port", c_uint16),  # network order
        ("flags", c_uint8),
        ("lpm_prefix", c_uint8),
        ("proxy_priority", c_uint8),
        ("auth_type", c_uint8),
        ("pad", c_uint16),
    ]


VALUE_SIZE = ctypes.sizeof(PolicyValue)


class InvalidKeyError(DatapathError, ValueError):
    """A MapState key the datapath cannot represent (unaligned port, bad prefix, …)."""


class PolicyMapEntry(NamedTuple):
    """One decoded map entry."""

    endpoint_id: int
    key: Key
    deny: bool
    cookie: int
    proxy_port: int
    proxy_priority: int
    auth_type: int


def make_key(endpoint_id: int, key: Key) -> PolicyKey:
    """The kernel key of a MapState key; rejects keys whose port is not aligned to its prefix."""
    if key.proto == 0:
        if key.port or key.prefix_len:
            raise InvalidKeyError(f"{key}: protocol ANY requires port 0 and prefix 0")
    elif not 0 <= key.prefix_len <= 16 or not 0 <= key.port <= 0xFFFF:
        raise InvalidKeyError(f"{key}: port prefix must be 0..16 and port 0..65535")
    elif key.port & (0xFFFF >> key.prefix_len):
        raise InvalidKeyError(f"{key}: port {key.port} is not aligned to prefix /{key.prefix_len}")
    return PolicyKey(FIXED_BITS + key.lpm_prefix, endpoint_id, key.identity, key.direction, key.proto,
                     socket.htons(key.port))


def make_value(key: Key, entry: Entry, cookie: int) -> PolicyValue:
    return PolicyValue(cookie, socket.htons(entry.proxy_port), F_DENY if entry.deny else 0,
                       lpm_prefix(key.proto, key.prefix_len), min(entry.proxy_priority, 255),
                       entry.auth_type, 0)


def decode_key(k: PolicyKey) -> tuple[int, Key]:
    plen = k.prefixlen - FIXED_BITS
    proto = k.proto if plen >= 8 else 0
    prefix = plen - 8 if plen >= 8 else 0
    port = socket.ntohs(k.dport) if proto else 0
    return int(k.ep_id), Key(int(k.identity), int(k.direction), int(proto), port, prefix)


class PolicyMap:
    """Typed access to the policy trie."""

    def __init__(self, m: MapFd) -> None:
        self.m = m

    def upsert(self, endpoint_id: int, key: Key, entry: Entry, cookie: int) -> None:
        self.m.update(make_key(endpoint_id, key), make_value(key, entry, cookie))

    def delete(self, endpoint_id: int, key: Key) -> bool:
        return self.m.delete(make_key(endpoint_id, key))

    def upsert_many(self, endpoint_id: int, items: Iterable[tuple[Key, Entry, int]]) -> None:
        """Batch upsert of (key, entry, cookie)."""
        rows = list(items)
        if not rows:
            return
        keys = (PolicyKey * len(rows))(*(make_key(endpoint_id, k) for k, _, _ in rows))
        vals = (PolicyValue * len(rows))(*(make_value(k, e, c) for k, e, c in rows))
        self.m.update_batch(keys, vals, len(rows))

    def delete_many(self, endpoint_id: int, keys: Iterable[Key]) -> None:
        ks = [make_key(endpoint_id, k) for k in keys]
        if ks:
            self.m.delete_batch((PolicyKey * len(ks))(*ks), len(ks))

    def dump(self, endpoint_id: int | None = None) -> list[PolicyMapEntry]:
        """Entries (of one endpoint, or all), sorted by endpoint then key."""
        out = []
        for k in self.m.keys(PolicyKey):
            if endpoint_id is not None and k.ep_id != endpoint_id:
                continue
            val = PolicyValue()
            if not self.m.lookup(k, val):
                continue
            ep, key = decode_key(k)  # type: ignore[arg-type]
            out.append(PolicyMapEntry(ep, key, bool(val.flags & F_DENY), int(val.cookie),
                                      socket.ntohs(val.proxy_port), int(val.proxy_priority),
                                      int(val.auth_type)))
        return sorted(out)

    def endpoint_keys(self, endpoint_id: int) -> dict[Key, PolicyMapEntry]:
        return {e.key: e for e in self.dump(endpoint_id)}
