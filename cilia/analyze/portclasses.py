"""Port/protocol classes: the partition of (protocol, port) space that the policies distinguish.

Every MapState entry covers one protocol/port range that some rule mentioned (or everything, for
L3-only rules), so a verdict depends only on *which mentioned ranges contain the port*. Ports with the
same set of containing ranges form one class and share every verdict; the class with no containing
range is ``other`` (only L3-only rules and the default apply). Named ports count as the numbers the
pods' container ports give them. Connectivity is computed once per class, with a representative
(protocol, port) of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cilia.analyze.peers import proto_name
from cilia.policy.rules import PolicyRule
from cilia.policy.types import Proto

_ICMPS = (Proto.ICMP, Proto.ICMPV6)
# Protocols whose unmentioned ports can stand for the "other" class, in order of preference.
_OTHER_CANDIDATES = (Proto.TCP, Proto.UDP, Proto.SCTP, Proto.ICMP, Proto.ICMPV6)


@dataclass(frozen=True)
class PortClass:
    """One class: a name, a representative (proto, port) and the (proto, lo, hi) segments it holds."""

    label: str
    proto: int
    port: int
    segments: tuple[tuple[int, int, int], ...]

    def contains(self, proto: int, port: int) -> bool:
        return any(p == proto and lo <= port <= hi for p, lo, hi in self.segments)


def _limit(proto: int) -> int:
    return 255 if proto in _ICMPS else 65535


def _lowest(proto: int) -> int:
    return 0 if proto in _ICMPS else 1


def mentioned_ranges(
    rules: Iterable[PolicyRule], named_ports: Mapping[str, Iterable[tuple[int, int]]]
) -> set[tuple[int, int, int]]:
    """Every (proto, lo, hi) that some rule entry names; named ports become the container port numbers
    that carry the name (``named_ports``: name -> (proto, number) pairs)."""
    out: set[tuple[int, int, int]] = set()
    for rule in rules:
        for entry in rule.entries:
            for pp in entry.ports or ():
                if pp.name:
                    out.update((p, n, n) for p, n in named_ports.get(pp.name, ()) if p == pp.proto)
                elif pp.port == 0:
                    # Also for ICMP: Cilium 1.18 reads ICMP type 0 (EchoReply) as port 0, i.e. every
                    # type (cilium/cilium#41304, fixed after 1.18), and the engine does the same.
                    out.add((pp.proto, 0, _limit(pp.proto)))
                else:
                    out.add((pp.proto, pp.port, max(pp.port, pp.end_port)))
    return out


def _segment_label(proto: int, lo: int, hi: int) -> str:
    lo = max(lo, _lowest(proto))
    if lo == _lowest(proto) and hi == _limit(proto):
        return "*"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _class_label(segs: list[tuple[int, int, int]]) -> str:
    proto = segs[0][0]
    parts = [_segment_label(p, lo, hi) for p, lo, hi in segs]
    shown = ",".join(parts[:3]) + (",…" if len(parts) > 3 else "")
    return f"{shown}/{proto_name(proto)}"


def port_classes(ranges: Iterable[tuple[int, int, int]]) -> list[PortClass]:
    """The classes of (proto, port) space cut by ``ranges``, mentioned classes first (by protocol and
    port), then ``other`` if any port is left that no range mentions."""
    by_proto: dict[int, list[tuple[int, int]]] = {}
    for proto, lo, hi in set(ranges):
        by_proto.setdefault(proto, []).append((lo, hi))
    groups: dict[frozenset[tuple[int, int, int]], list[tuple[int, int, int]]] = {}
    other: list[tuple[int, int, int]] = []
    for proto in sorted(set(by_proto) | set(_OTHER_CANDIDATES)):
        spans = by_proto.get(proto, [])
        cuts = {0, _limit(proto) + 1}
        for lo, hi in spans:
            cuts.update((lo, hi + 1))
        edges = sorted(cuts)
        for lo, nxt in itertools.pairwise(edges):
            hi = nxt - 1
            sig = frozenset((proto, a, b) for a, b in spans if a <= lo and hi <= b)
            if sig:
                groups.setdefault(sig, []).append((proto, lo, hi))
            elif hi >= _lowest(proto):
                other.append((proto, lo, hi))
    classes = []
    for segs in groups.values():
        segs.sort()
        proto, lo, _ = segs[0]
        classes.append(PortClass(_class_label(segs), proto, max(lo, _lowest(proto)), tuple(segs)))
    classes.sort(key=lambda c: (c.segments[0][0] not in (Proto.TCP,), c.proto, c.port, c.label))
    if other:
        pick = min(other, key=lambda s: _OTHER_CANDIDATES.index(s[0]) if s[0] in _OTHER_CANDIDATES else 99)
        classes.append(PortClass("other", pick[0], max(pick[1], _lowest(pick[0])), tuple(sorted(other))))
    return classes
