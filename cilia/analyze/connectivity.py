"""``cilia connectivity``: who can reach whom, per port class, computed per identity.

Rows and columns are identity groups (pods with the same identity share every verdict), plus
``world`` and ``host``. For each port class (:mod:`cilia.analyze.portclasses`) each side of each
group is summarised as a default verdict plus exceptions for the peer identities its MapState names,
and the matrix is combined as bitsets (:mod:`cilia.analyze.matrix`).

A cell is *filtered at L7* when the flow is allowed and a side's deciding entry sends it to an L7
proxy (HTTP rules, serverNames): the port is open, each request is then decided by the proxy
(``cilia trace --http-…`` decides one).
"""

from __future__ import annotations

import csv
import html
import io
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, TextIO

from cilia.analyze.cidrgroups import cidr_group_ends
from cilia.analyze.cluster import Analysis, PodEndpoint
from cilia.analyze.flow import EndKind
from cilia.analyze.matrix import UNENFORCED, BitMatrix, SideSummary, combine
from cilia.analyze.peers import parse_proto, proto_name
from cilia.analyze.portclasses import PortClass, mentioned_ranges, port_classes
from cilia.identity.reserved import ReservedIdentity
from cilia.policy.types import Direction

# A peer identity no MapState has an entry for: its lookup gives a side's default verdict.
NO_SUCH_IDENTITY = 0xFFFFFFFF


@dataclass(frozen=True)
class Group:
    """One row/column: an identity and the pods that have it (none for world and host)."""

    index: int
    name: str
    identity: int
    kind: EndKind
    pods: tuple[str, ...] = ()

    @property
    def local(self) -> bool:
        return self.kind is EndKind.POD

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "identity": self.identity,
            "kind": str(self.kind),
            "pods": list(self.pods),
        }


@dataclass(frozen=True)
class Connectivity:
    groups: tuple[Group, ...]
    classes: tuple[PortClass, ...]
    matrices: tuple[BitMatrix, ...]  # one per class, over group indices
    l7: tuple[BitMatrix, ...] = ()  # per class: allowed pairs whose requests an L7 proxy decides

    def allowed(self, src: int, dst: int, cls: int) -> bool:
        return self.matrices[cls].allowed(src, dst)

    def filtered_at_l7(self, src: int, dst: int, cls: int) -> bool:
        return bool(self.l7) and self.l7[cls].allowed(src, dst)

    def row_marks(self, cls: int, src: int) -> str:
        """Row ``src`` of class ``cls`` as "1" (allowed), "0" (denied), "7" (filtered at L7)."""
        bits = _bits(self.matrices[cls], src)
        if not self.l7 or not self.l7[cls].rows[src]:
            return bits
        l7 = _bits(self.l7[cls], src)
        return "".join("7" if f == "1" else b for b, f in zip(bits, l7, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "port_classes": [
                {
                    "label": c.label,
                    "protocol": proto_name(c.proto),
                    "port": c.port,
                    "ranges": [f"{lo}-{hi}/{proto_name(p)}" for p, lo, hi in c.segments],
                }
                for c in self.classes
            ],
            "groups": [g.to_dict() for g in self.groups],
            "allowed": {
                c.label: {g.name: [self.groups[d].name for d in m.targets(g.index)] for g in self.groups}
                for c, m in zip(self.classes, self.matrices, strict=True)
            },
            "allowed_pairs": {c.label: m.count() for c, m in zip(self.classes, self.matrices, strict=True)},
            **(
                {
                    "filtered_at_l7": {
                        c.label: {
                            g.name: [self.groups[d].name for d in m.targets(g.index)]
                            for g in self.groups
                            if m.rows[g.index]
                        }
                        for c, m in zip(self.classes, self.l7, strict=True)
                        if m.count()
                    }
                }
                if self.l7_count()
                else {}
            ),
        }

    def l7_count(self, cls: int | None = None) -> int:
        """Pairs filtered at L7 (of one class, or of all)."""
        if not self.l7:
            return 0
        return self.l7[cls].count() if cls is not None else sum(m.count() for m in self.l7)


def _group_name(members: list[PodEndpoint], deployment_sizes: dict[tuple[str, str], int]) -> str:
    deps = {(m.pod.namespace, m.deployment) for m in members}
    if len(deps) == 1:
        ns, dep = next(iter(deps))
        if dep and deployment_sizes.get((ns, dep)) == len(members):
            return f"deployment:{ns}/{dep}"
    names = [m.name for m in members]
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1})"


def groups_of(analysis: Analysis) -> list[Group]:
    """Identity groups of the pods (ordered by their first pod), then world and host, then the
    identities of each CIDR group's addresses."""
    by_id: dict[int, list[PodEndpoint]] = defaultdict(list)
    for ep in analysis.endpoints:
        by_id[ep.identity].append(ep)
    sizes: dict[tuple[str, str], int] = defaultdict(int)
    for ep in analysis.endpoints:
        if ep.deployment:
            sizes[(ep.pod.namespace, ep.deployment)] += 1
    ordered = sorted(by_id.items(), key=lambda item: item[1][0].name)
    groups = [
        Group(i, _group_name(members, sizes), ident, EndKind.POD, tuple(m.name for m in members))
        for i, (ident, members) in enumerate(ordered)
    ]
    n = len(groups)
    groups.append(Group(n, "world", int(ReservedIdentity.WORLD), EndKind.ENTITY))
    groups.append(Group(n + 1, "host", int(ReservedIdentity.HOST), EndKind.ENTITY))
    # CiliumCIDRGroups: a column per identity an address of the group can have (cidrgroup:NAME peers)
    for cg in analysis.cluster.cidr_groups:
        for end in cidr_group_ends(analysis, cg.name) if cg.cidrs else ():
            groups.append(Group(len(groups), end.name, end.identity, EndKind.EXTERNAL))
    return groups


def classes_of(analysis: Analysis) -> list[PortClass]:
    named: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for ep in analysis.endpoints:
        for cp in ep.pod.ports:
            if cp.name:
                named[cp.name.lower()].add((int(parse_proto(cp.protocol)), cp.container_port))
    return port_classes(mentioned_ranges(analysis.rules, named))


class _Side:
    """One group's policy in one direction, with its peer groups mapped to matrix indices once."""

    def __init__(self, analysis: Analysis, group: Group, direction: Direction, index: dict[int, list[int]]):
        self.side = analysis.side(group.identity, direction) if group.local else None
        self.groups: list[tuple[int, list[int]]] = []
        if self.side is not None:
            for peers in self.side.peer_groups():
                targets = [gi for peer in peers for gi in index.get(peer, ())]
                if targets:
                    self.groups.append((peers[0], targets))
        # Peers whose entries redirect to an L7 proxy (grouped apart: the entry shape ignores it).
        self.redirecting = self.side is not None and any(
            e.proxy_port and not e.deny and k.direction == direction for k, e in self.side.map_state.items()
        )
        self.peer_targets: list[tuple[int, list[int]]] = []
        if self.redirecting and self.side is not None:
            for peer in self.side.peers():
                targets = index.get(peer, [])
                if targets:
                    self.peer_targets.append((peer, targets))

    def not_redirected(self, cls: PortClass) -> SideSummary:
        """Per peer: True unless the deciding entry sends the flow to an L7 proxy."""
        side = self.side
        if side is None or not self.redirecting:
            return UNENFORCED

        def plain(peer: int) -> bool:
            v = side.lookup(peer, cls.proto, cls.port)
            return not (v.allowed and v.entry is not None and v.entry.proxy_port)

        default = plain(NO_SUCH_IDENTITY)
        exceptions: dict[int, bool] = {}
        for peer, targets in self.peer_targets:
            verdict = plain(peer)
            if verdict != default:
                exceptions.update(dict.fromkeys(targets, verdict))
        return SideSummary(default, exceptions)

    def summary(self, cls: PortClass) -> SideSummary:
        side = self.side
        if side is None:
            return UNENFORCED
        default = side.lookup(NO_SUCH_IDENTITY, cls.proto, cls.port).allowed
        exceptions: dict[int, bool] = {}
        for peer, targets in self.groups:
            verdict = side.lookup(peer, cls.proto, cls.port).allowed
            if verdict != default:
                exceptions.update(dict.fromkeys(targets, verdict))
        return SideSummary(default, exceptions)


def connectivity(analysis: Analysis) -> Connectivity:
    """The full matrix for every port class."""
    groups = groups_of(analysis)
    classes = classes_of(analysis)
    index: dict[int, list[int]] = defaultdict(list)
    for g in groups:
        index[g.identity].append(g.index)
    egress = [_Side(analysis, g, Direction.EGRESS, index) for g in groups]
    ingress = [_Side(analysis, g, Direction.INGRESS, index) for g in groups]
    matrices = [
        combine([s.summary(cls) for s in egress], [s.summary(cls) for s in ingress]) for cls in classes
    ]
    l7: list[BitMatrix] = []
    if any(s.redirecting for s in (*egress, *ingress)):
        full = (1 << len(groups)) - 1
        for cls, m in zip(classes, matrices, strict=True):
            # redirected on either side = not (plain on egress and plain on ingress)
            plain = combine([s.not_redirected(cls) for s in egress], [s.not_redirected(cls) for s in ingress])
            rows = tuple(a & (full & ~p) for a, p in zip(m.rows, plain.rows, strict=True))
            l7.append(BitMatrix(m.size, rows))
    return Connectivity(tuple(groups), tuple(classes), tuple(matrices), tuple(l7))


# --------------------------------------------------------------------------- output


def _bits(m: BitMatrix, src: int) -> str:
    """Row ``src`` as a string of "1"/"0", destination 0 first."""
    return format(m.rows[src], f"0{m.size}b")[::-1] if m.size else ""


def render_table(conn: Connectivity) -> str:
    """Plain-text matrices, one per port class; ``✓`` allowed, ``✗`` denied, ``L7`` allowed at L4
    with each request decided by an L7 proxy."""
    width = len(str(len(conn.groups)))
    lines = ["groups (pods with the same identity share a row):"]
    for g in conn.groups:
        extra = f", pods: {', '.join(g.pods)}" if len(g.pods) > 1 else ""
        lines.append(f"  [{g.index + 1:>{width}}] {g.name} (identity {g.identity}{extra})")
    cols = " ".join(f"{g.index + 1:>{width}}" for g in conn.groups)
    head = "from\\to"
    label_width = max(len(head), width + 2)
    if conn.l7_count():
        width = max(width, 2)
        cols = " ".join(f"{g.index + 1:>{width}}" for g in conn.groups)
        label_width = max(len(head), width + 2)
    marks = {"1": "✓".rjust(width), "0": "✗".rjust(width), "7": "L7".rjust(width)}
    for ci, (cls, m) in enumerate(zip(conn.classes, conn.matrices, strict=True)):
        lines.append("")
        n7 = conn.l7_count(ci)
        via = f" ({n7} filtered at L7: each request decided by a proxy)" if n7 else ""
        lines.append(f"{cls.label}: {m.count()} of {len(conn.groups) ** 2} pairs allowed{via}")
        lines.append(f"  {head:<{label_width}} {cols}")
        for g in conn.groups:
            cells = " ".join(marks[bit] for bit in conn.row_marks(ci, g.index))
            lines.append(f"  {f'[{g.index + 1}]':<{label_width}} {cells}")
    return "\n".join(lines) + "\n"


def _csv_field(value: object) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([value])
    return buf.getvalue()


def write_csv(conn: Connectivity, out: TextIO) -> None:
    """One row per (port class, from, to), streamed: a 10,000-pod matrix has millions of rows, so
    the quoted cells are built once per group and rows are joined as strings."""
    out.write("port_class,from,from_identity,to,to_identity,verdict\n")
    tails = {
        bit: [f",{_csv_field(d.name)},{d.identity},{verdict}\n" for d in conn.groups]
        for bit, verdict in (("1", "allow"), ("0", "deny"), ("7", "allow-l7"))
    }
    for ci, cls in enumerate(conn.classes):
        label = _csv_field(cls.label)
        for g in conn.groups:
            head = f"{label},{_csv_field(g.name)},{g.identity}"
            out.write("".join(head + tails[bit][i] for i, bit in enumerate(conn.row_marks(ci, g.index))))


def render_csv(conn: Connectivity) -> str:
    out = io.StringIO()
    write_csv(conn, out)
    return out.getvalue()


def render_html(conn: Connectivity) -> str:
    """A self-contained HTML page: one matrix per port class, rows = from, columns = to."""
    esc = html.escape
    out = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8"><title>cilia connectivity</title>',
        "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:center}th.row{text-align:left}"
        "td.allow{background:#d9f2d9}td.deny{background:#f7d4d4}"
        + ("td.l7{background:#fbeecb}" if conn.l7_count() else "")
        + "</style></head><body>",
        "<h1>cilia connectivity</h1>",
        "<p>Rows: source; columns: destination. Pods with the same identity share a row.</p>",
        "<ol>",
    ]
    for g in conn.groups:
        pods = f" — {esc(', '.join(g.pods))}" if len(g.pods) > 1 else ""
        out.append(f"<li>{esc(g.name)} (identity {g.identity}){pods}</li>")
    out.append("</ol>")
    head = "".join(f"<th>{g.index + 1}</th>" for g in conn.groups)
    html_cells = {
        "1": '<td class="allow">✓</td>',
        "0": '<td class="deny">✗</td>',
        "7": '<td class="l7" title="allowed at L4; each request decided by an L7 proxy">L7</td>',
    }
    for ci, (cls, m) in enumerate(zip(conn.classes, conn.matrices, strict=True)):
        n7 = conn.l7_count(ci)
        via = f" ({n7} filtered at L7)" if n7 else ""
        out.append(f"<h2>{esc(cls.label)}: {m.count()} of {len(conn.groups) ** 2} pairs allowed{via}</h2>")
        out.append(f"<table><tr><th>from \\ to</th>{head}</tr>")
        for g in conn.groups:
            cells = "".join(html_cells[bit] for bit in conn.row_marks(ci, g.index))
            out.append(f'<tr><th class="row">{g.index + 1}. {esc(g.name)}</th>{cells}</tr>')
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
