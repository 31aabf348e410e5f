"""Port ranges as aligned power-of-two blocks (semantics.md §5.3, Cilium ``PortRangeToMaskedPorts``).

A policy-map key covers ``port .. port + (0xffff >> prefix_len)``; a range ``start..end`` becomes the
minimal set of such blocks. ``(0, 0)`` and ``(0, 65535)`` are the single wildcard block ``(0, 0)``;
``end <= start`` is the single port ``start``.
"""

from __future__ import annotations

from functools import lru_cache

MAX_PORT = 0xFFFF
FULL_PORT_PREFIX = 16


@lru_cache(maxsize=4096)
def port_range_to_masked(start: int, end: int) -> tuple[tuple[int, int], ...]:
    """``start..end`` (inclusive) as ``(port, prefix_len)`` blocks, lowest port first."""
    if start == 0 and end in (0, MAX_PORT):
        return ((0, 0),)
    if end <= start:
        return ((start, FULL_PORT_PREFIX),)
    blocks: list[tuple[int, int]] = []
    port = start
    while port <= end:
        # The largest aligned block starting at `port` that does not run past `end`.
        size = port & -port if port else MAX_PORT + 1
        while port + size - 1 > end:
            size >>= 1
        blocks.append((port, FULL_PORT_PREFIX - size.bit_length() + 1))
        port += size
    return tuple(blocks)


def block_range(port: int, prefix_len: int) -> tuple[int, int]:
    """The inclusive port range a ``(port, prefix_len)`` block covers."""
    return port, port + (MAX_PORT >> prefix_len)


def port_mask(prefix_len: int) -> int:
    """The mask that keeps the first ``prefix_len`` bits of a 16-bit port."""
    return (MAX_PORT << (FULL_PORT_PREFIX - prefix_len)) & MAX_PORT
