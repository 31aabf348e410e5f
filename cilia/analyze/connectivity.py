"""``cilia connectivity``: who can reach whom, per port class, computed per identity.

Rows and columns are identity groups (pods with the same identity share every verdict), plus
``world`` and ``host``. For each port class (:mod:`cilia.analyze.portclasses`) each group's egress
and ingress is a whole row of groups (a Python int as a bitset), evaluated from the candidate entries
the engine would distill into its MapState (:class:`cilia.analyze.matrix.SideRows`; no MapState is
built); a cell needs the source's egress row and the destination's ingress row, so the ingress rows
are transposed and ANDed (:func:`cilia.analyze.matrix.transpose_and`). 100,000 pods (10,000 groups)
take seconds and a few hundred MiB (docs/benchmarks.md).

A cell is *filtered at L7* when the flow is allowed and a side's deciding entry sends it to an L7
proxy (HTTP rules, serverNames): the port is open, each request is then decided by the proxy
(``cilia trace --http-…`` decides one).
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TextIO

from cilia.analyze.cidrgroups import cidr_group_ends
from cilia.analyze.cluster import Analysis, PodEndpoint
from cilia.analyze.flow import EndKind, FlowEnd
from cilia.analyze.matrix import BitMatrix, SideRows, transpose_and
from cilia.analyze.peers import parse_proto, proto_name
from cilia.analyze.portclasses import PortClass, mentioned_ranges, port_classes
from cilia.analyze.selections import IndexedSelectorCache
from cilia.identity.reserved import ReservedIdentity
from cilia.policy.engine import PolicyEngine, pod_named_ports
from cilia.policy.resolve import (
    LABEL_HOST,
    NamedPorts,
    namespace_of,
    policy_contributions,
    resolve_filters,
    select_rules,
)
from cilia.policy.types import Direction


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

    def to_dict(self, pairs: bool = True) -> dict[str, Any]:
        """Classes, groups, the allowed pairs and their counts (``pairs=False``: only the counts;
        :func:`write_json` streams the pairs)."""
        if not pairs:
            return {
                "port_classes": self._classes_dict(),
                "groups": [g.to_dict() for g in self.groups],
                "allowed_pairs": {
                    c.label: m.count() for c, m in zip(self.classes, self.matrices, strict=True)
                },
            }
        return {
            "port_classes": self._classes_dict(),
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

    def _classes_dict(self) -> list[dict[str, Any]]:
        return [
            {
                "label": c.label,
                "protocol": proto_name(c.proto),
                "port": c.port,
                "ranges": [f"{lo}-{hi}/{proto_name(p)}" for p, lo, hi in c.segments],
            }
            for c in self.classes
        ]

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


class PolicySets:
    """Each local identity's egress and ingress as :class:`SideRows` over an index of identities
    (``bits``: identity -> its bit(s)): the engine's rule selection and filters, with selections
    found through a label index (:mod:`cilia.analyze.selections`) and turned into bitsets once per
    selection. No MapState is built."""

    def __init__(self, analysis: Analysis, bits: Mapping[int, int]) -> None:
        self.options = replace(analysis.options.engine_options(), secrets=analysis.cluster.secrets)
        self.identities = analysis.identities
        self.engine = PolicyEngine(self.options)  # its repository: the rules a namespace may match
        self.engine.apply_rules(analysis.rules)
        self.cache = IndexedSelectorCache(self.identities)
        self.own: dict[int, dict[tuple[str, int], int]] = {}
        for ep in analysis.endpoints:
            mine = self.own.setdefault(ep.identity, {})
            for name, proto, number in pod_named_ports(ep.pod):
                mine.setdefault((name, proto), number)
        cluster_ports: dict[tuple[str, int], set[int]] = defaultdict(set)
        for mine in self.own.values():
            for k, number in mine.items():
                cluster_ports[k].add(number)
        self.cluster_ports = {k: frozenset(v) for k, v in cluster_ports.items()}
        self.bits = bits
        self._converted: dict[int, tuple[object, int]] = {}
        self._sides: dict[int, tuple[SideRows, SideRows]] = {}

    def bits_of(self, ids: Any) -> int:
        """The bitset of a selection (memoised per selection object)."""
        found = self._converted.get(id(ids))
        if found is not None and found[0] is ids:
            return found[1]
        out = 0
        get = self.bits.get
        for i in ids:
            b = get(i)
            if b:
                out |= b
        self._converted[id(ids)] = (ids, out)
        return out

    def sides(self, identity: int) -> tuple[SideRows, SideRows]:
        """(egress, ingress) of a local endpoint identity."""
        found = self._sides.get(identity)
        if found is not None:
            return found
        labels = self.identities[identity]
        options = self.options
        selection = select_rules(self.engine.repository.candidates(namespace_of(labels)), labels, options)
        filters = resolve_filters(selection, options)
        contribs = policy_contributions(
            filters,
            selection,
            self.cache,
            NamedPorts(self.own.get(identity, {}), self.cluster_ports),
            is_host=LABEL_HOST in labels,
            options=options,
        )
        found = (
            SideRows(contribs, int(Direction.EGRESS), self.bits_of),
            SideRows(contribs, int(Direction.INGRESS), self.bits_of),
        )
        self._sides[identity] = found
        return found


def _policy_sides(analysis: Analysis, groups: list[Group]) -> list[tuple[SideRows | None, SideRows | None]]:
    """(egress, ingress) of each group over group indices; None where nothing is enforced (world,
    host, CIDR groups: not local endpoints)."""
    by_identity: dict[int, int] = defaultdict(int)
    for g in groups:
        by_identity[g.identity] |= 1 << g.index
    sets = PolicySets(analysis, by_identity)
    return [sets.sides(g.identity) if g.local else (None, None) for g in groups]


class FlowVerdicts:
    """Allowed or not at L3/L4, for flows between resolved ends, from :class:`PolicySets` over every
    identity: the matrix's fast path for questions about many flows (``cilia verify``), deciding
    as trace's side verdicts do (the egress of a pod source, the ingress of a pod destination, each
    looked up for the peer's identity) without building any MapState."""

    def __init__(self, analysis: Analysis) -> None:
        self.order = {ident: i for i, ident in enumerate(analysis.identities)}
        self.full = (1 << len(self.order)) - 1
        self.sets = PolicySets(analysis, {ident: 1 << i for ident, i in self.order.items()})

    def allowed(self, src: FlowEnd, dst: FlowEnd, proto: int, port: int) -> bool | None:
        """The verdict of one flow (None: an end whose identity the analysis does not know)."""
        if src.identity not in self.order or dst.identity not in self.order:
            return None
        if src.local:
            egress, _ = self.sets.sides(src.identity)
            if not (egress.row(proto, port, self.full)[0] >> self.order[dst.identity]) & 1:
                return False
        if dst.local:
            _, ingress = self.sets.sides(dst.identity)
            if not (ingress.row(proto, port, self.full)[0] >> self.order[src.identity]) & 1:
                return False
        return True


def connectivity(analysis: Analysis, classes: list[PortClass] | None = None) -> Connectivity:
    """The full matrix for every port class: each source's egress and each destination's ingress
    as whole rows of group bitsets, combined per class (a flow needs both). ``classes``: given port
    classes (``cilia diff``: those of both sides) instead of the ones these policies cut."""
    groups = groups_of(analysis)
    classes = classes if classes is not None else classes_of(analysis)
    n = len(groups)
    full = (1 << n) - 1
    sides = _policy_sides(analysis, groups)
    matrices: list[BitMatrix] = []
    l7: list[BitMatrix] = []
    for cls in classes:
        e_rows, e_red, i_rows, i_red = [], [], [], []
        for egress, ingress in sides:
            a, r = egress.row(cls.proto, cls.port, full) if egress is not None else (full, 0)
            e_rows.append(a)
            e_red.append(r)
            a, r = ingress.row(cls.proto, cls.port, full) if ingress is not None else (full, 0)
            i_rows.append(a)
            i_red.append(r)
        rows = transpose_and(e_rows, i_rows, n)
        matrices.append(BitMatrix(n, tuple(rows)))
        l7.append(_redirected(rows, e_red, i_red, n, full))
    if not any(m.count() for m in l7):
        l7 = []
    return Connectivity(tuple(groups), tuple(classes), tuple(matrices), tuple(l7))


def _redirected(rows: list[int], e_red: list[int], i_red: list[int], n: int, full: int) -> BitMatrix:
    """Allowed pairs that either side sends to an L7 proxy."""
    if not any(i_red):
        return BitMatrix(n, tuple(a & r for a, r in zip(rows, e_red, strict=True)))
    by_ingress = transpose_and([full] * n, i_red, n)
    return BitMatrix(n, tuple(a & (r | t) for a, r, t in zip(rows, e_red, by_ingress, strict=True)))


# --------------------------------------------------------------------------- output


def _bits(m: BitMatrix, src: int) -> str:
    """Row ``src`` as a string of "1"/"0", destination 0 first."""
    return format(m.rows[src], f"0{m.size}b")[::-1] if m.size else ""


def _indented(value: Any, level: int) -> str:
    """``value`` as ``json.dumps(indent=2)`` writes it nested ``level`` deep."""
    return json.dumps(value, indent=2).replace("\n", "\n" + "  " * level)


def write_json(conn: Connectivity, out: TextIO) -> None:
    """:meth:`Connectivity.to_dict` as indented JSON, written row by row (at 10,000 groups the
    ``allowed`` lists hold millions of names: they are never one object in memory)."""
    data = conn.to_dict(pairs=False)
    quoted = [json.dumps(g.name) for g in conn.groups]

    def stream(key: str, matrices: list[tuple[str, BitMatrix]], only_nonempty: bool) -> None:
        out.write(f",\n  {json.dumps(key)}: ")
        if not matrices:
            out.write("{}")
            return
        out.write("{")
        for ci, (label, m) in enumerate(matrices):
            out.write(("," if ci else "") + f"\n    {json.dumps(label)}: ")
            rows = [g for g in conn.groups if not only_nonempty or m.rows[g.index]]
            if not rows:
                out.write("{}")
                continue
            out.write("{")
            for ri, g in enumerate(rows):
                targets = m.targets(g.index)
                names = (
                    "[\n" + ",\n".join("        " + quoted[d] for d in targets) + "\n      ]"
                    if targets
                    else "[]"
                )
                out.write(("," if ri else "") + f"\n      {quoted[g.index]}: {names}")
            out.write("\n    }")
        out.write("\n  }")

    out.write("{")
    first = True
    for key, value in data.items():
        if key == "allowed_pairs":
            stream("allowed", [(c.label, m) for c, m in zip(conn.classes, conn.matrices, strict=True)], False)
        out.write(("" if first else ",") + f"\n  {json.dumps(key)}: {_indented(value, 1)}")
        first = False
    if conn.l7_count():
        pairs = zip(conn.classes, conn.l7, strict=True)
        stream("filtered_at_l7", [(c.label, m) for c, m in pairs if m.count()], True)
    out.write("\n}\n")


# Above this many groups, ``-o table`` and ``-o html`` summarise (counts per group and class) instead
# of drawing the matrix, which would have millions of cells; json and csv always hold every pair.
SUMMARY_GROUPS = 100


def _degree_lines(conn: Connectivity) -> list[str]:
    """Per group and class: how many groups it reaches and how many reach it."""
    outs = [[m.rows[g.index].bit_count() for g in conn.groups] for m in conn.matrices]
    ins = [m.column_counts() for m in conn.matrices]
    head = "  ".join(f"{c.label} out/in" for c in conn.classes)
    lines = [f"  {'group':<8} {head}"]
    for g in conn.groups:
        cells = "  ".join(
            f"{f'{o[g.index]}/{i[g.index]}':>{len(c.label) + 7}}"
            for c, o, i in zip(conn.classes, outs, ins, strict=True)
        )
        lines.append(f"  {f'[{g.index + 1}]':<8} {cells}")
    return lines


def render_summary(conn: Connectivity) -> str:
    """``-o table`` for a large cluster: the groups, per class the pairs allowed, and per group the
    groups it reaches (out) and that reach it (in)."""
    n = len(conn.groups)
    lines = [
        f"{n} identity groups, {len(conn.classes)} port classes: too many for a matrix "
        f"(over {SUMMARY_GROUPS} groups); -o csv or -o json list every pair.",
        "",
        "groups (pods with the same identity share a row):",
    ]
    for g in conn.groups:
        lines.append(f"  [{g.index + 1}] {g.name} (identity {g.identity}, {len(g.pods)} pods)")
    lines.append("")
    for ci, (cls, m) in enumerate(zip(conn.classes, conn.matrices, strict=True)):
        n7 = conn.l7_count(ci)
        via = f" ({n7} filtered at L7: each request decided by a proxy)" if n7 else ""
        lines.append(f"{cls.label}: {m.count()} of {n * n} pairs allowed{via}")
    lines.append("")
    lines.append("groups reached (out) and reaching (in), per port class:")
    lines.extend(_degree_lines(conn))
    return "\n".join(lines) + "\n"


def render_table(conn: Connectivity) -> str:
    """Plain-text matrices, one per port class; ``✓`` allowed, ``✗`` denied, ``L7`` allowed at L4
    with each request decided by an L7 proxy."""
    if len(conn.groups) > SUMMARY_GROUPS:
        return render_summary(conn)
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
    """A self-contained HTML page: one matrix per port class, rows = from, columns = to (above
    :data:`SUMMARY_GROUPS` groups, the summary of :func:`render_summary` instead)."""
    esc = html.escape
    if len(conn.groups) > SUMMARY_GROUPS:
        return (
            '<!doctype html>\n<html><head><meta charset="utf-8"><title>cilia connectivity</title>'
            "</head><body>\n<h1>cilia connectivity</h1>\n<pre>"
            + esc(render_summary(conn))
            + "</pre>\n</body></html>\n"
        )
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
