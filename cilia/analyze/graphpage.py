"""``-o html`` of ``cilia connectivity`` and ``cilia diff``: one self-contained page with a graph.

The page is drawn by cytoscape.js, vendored in ``cilia/analyze/static/`` (its MIT licence beside it)
and inlined, so nothing is fetched when the page is viewed (a Content-Security-Policy forbids it).
Workload groups (pods of one identity) are nodes inside a compound node per namespace; world, host
and CIDR-group peers stand outside. Allowed edges carry their ports; denied edges, and in a diff the
opened, closed and rule-changed ones, are shown on demand. Clicking an edge shows its trace (the
deciding rule on each side); the matrix of the visible groups is below the graph.

The data is one JSON object in the page: the groups, per port class every group's row of the matrix
as a bitset (base64, ``ceil(n/8)`` bytes per row), the traces of the cells (when they are few
enough to compute: :data:`TRACE_CELLS`) and the diff's changes. Above :data:`EXPAND_GROUPS` groups
the page starts with each namespace collapsed to one node and builds a namespace's groups and edges
when it is opened (the edges of a large page are computed in the browser from the bitsets, only for
what is shown); :func:`expected_view` says what the first view draws, so a test can compare the
drawn graph with the data.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from cilia.analyze.cluster import Analysis
from cilia.analyze.connectivity import Connectivity, Group
from cilia.analyze.diff import Diff, decider, flow_of, group_end
from cilia.analyze.flow import EndKind
from cilia.analyze.peers import PortSpec, proto_name

# Above this many groups the first view shows namespaces collapsed (one node each).
EXPAND_GROUPS = 150
# In the collapsed view, more namespace-level edges than this are drawn only for opened namespaces.
EDGE_LIMIT = 3000
# Traces are embedded for every cell (group pair and port class) up to this many cells.
TRACE_CELLS = 6000


def _static(name: str) -> str:
    return resources.files("cilia.analyze").joinpath("static", name).read_text(encoding="utf-8")


# CIDR peers are drawn in one box of their own, like a namespace (a large policy set names hundreds)
CIDR_BOX = "(CIDR peers)"


def namespace_of_group(group: Group) -> str:
    """The namespace box a group is drawn in: a pod group's namespace, :data:`CIDR_BOX` for CIDR
    peers, "" (no box) for world, host and the other entities."""
    if group.kind is EndKind.EXTERNAL:
        return CIDR_BOX
    if not group.local or not group.pods:
        return ""
    return group.pods[0].split("/", 1)[0]


def _rows_b64(rows: Sequence[int], n: int) -> str:
    width = (n + 7) // 8
    return base64.b64encode(b"".join(r.to_bytes(width, "little") for r in rows)).decode("ascii")


def _class_dicts(conn: Connectivity) -> list[dict[str, Any]]:
    out = []
    for c in conn.classes:
        ports = ", ".join(
            f"{lo}-{hi}/{proto_name(p)}" if lo != hi else f"{lo}/{proto_name(p)}" for p, lo, hi in c.segments
        )
        out.append({"label": c.label, "ports": ports if c.label != "other" else "ports no policy names",
                    "port": f"{c.port}/{proto_name(c.proto)}"})
    return out


def _group_dicts(groups: Sequence[Group], status: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "name": g.name,
            "ns": namespace_of_group(g),
            "kind": str(g.kind),
            "identity": g.identity,
            "pods": list(g.pods[:50]),
            "podCount": len(g.pods),
            "status": status.get(g.name, ""),
        }
        for g in groups
    ]


class _Strings:
    """Repeated texts (rule names, notes) once in the page; cells refer to them by index."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.items)
            self.items.append(text)
        return found


def _traces(
    analysis: Analysis, conn: Connectivity, shown: Sequence[int], strings: _Strings
) -> dict[str, list[list[int]]]:
    """Per "src,dst" pair of the page's group indices: per class [decider, egress note, ingress note]
    as string indices."""
    endpoints = {ep.name: ep for ep in analysis.endpoints}
    groups = [conn.groups[i] for i in shown]
    ends = [group_end(analysis, g, endpoints) for g in groups]
    called = {end.name: g.name for end, g in zip(ends, groups, strict=True)}
    ports = [PortSpec(c.proto, c.port) for c in conn.classes]
    out: dict[str, list[list[int]]] = {}
    for si in range(len(groups)):
        for di in range(len(groups)):
            cells = []
            for port in ports:
                flow = flow_of(analysis, ends[si], ends[di], port)
                cells.append([strings(decider(flow, called))] + [
                    strings(f"{side.direction.label} of {called.get(side.owner, side.owner)}: {side.note}")
                    for side in (flow.egress, flow.ingress)
                ])  # fmt: skip
            out[f"{si},{di}"] = cells
    return out


def _shown(conn: Connectivity) -> tuple[list[int], list[int]]:
    """The groups the page draws (a filtered matrix: its rows and columns) and, per page index, a
    mask of the columns its row may reach (0 for a group that is only a column)."""
    n = len(conn.groups)
    rows = list(getattr(conn, "rows", range(n)))
    cols = list(getattr(conn, "cols", range(n)))
    if len(rows) == n and len(cols) == n:
        return list(range(n)), [(1 << n) - 1] * n
    shown = sorted(set(rows) | set(cols))
    col_mask = sum(1 << c for c in cols)
    row_set = set(rows)
    return shown, [col_mask if g in row_set else 0 for g in shown]


def _reindexed(rows: Sequence[int], shown: list[int], masks: list[int]) -> list[int]:
    """Matrix rows over the page's indices (the shown groups, in order)."""
    if len(shown) == len(rows):
        return [r & m for r, m in zip(rows, masks, strict=True)]
    out = []
    for g, mask in zip(shown, masks, strict=True):
        row = rows[g] & mask
        out.append(sum(1 << i for i, d in enumerate(shown) if (row >> d) & 1) if row else 0)
    return out


@dataclass(frozen=True)
class View:
    """What the first view of a page draws: leaf nodes (groups, or collapsed namespaces), compound
    namespace nodes and edges."""

    leaves: int
    parents: int
    edges: int
    collapsed: bool


def _any_rows(conn: Connectivity) -> list[int]:
    rows = [0] * len(conn.groups)
    for m in conn.matrices:
        for i, r in enumerate(m.rows):
            rows[i] |= r
    return rows


def expected_view(data: dict[str, Any]) -> View:
    """What the page's first view must draw for ``data`` (:func:`page_data`), computed independently
    of the page's script: the browser test compares it with what cytoscape drew."""
    groups = data["groups"]
    n = len(groups)
    namespaces = sorted({g["ns"] for g in groups if g["ns"]})
    collapsed = n > EXPAND_GROUPS
    pairs: dict[tuple[int, int], str] = {}
    if data["mode"] == "diff":
        for c in data["changes"]:
            pairs.setdefault((c["src"], c["dst"]), c["kind"])  # an edge has the first change's kind
    else:
        width = (n + 7) // 8
        inside = [g["kind"] in ("pod", "node") or g["name"] == "host" for g in groups]
        for b64 in data["rows"]:
            raw = base64.b64decode(b64)
            for s in range(n):
                row = int.from_bytes(raw[s * width : (s + 1) * width], "little")
                while row:
                    low = row & -row
                    if inside[s] or inside[low.bit_length() - 1]:  # none between two outside peers
                        pairs[(s, low.bit_length() - 1)] = "allowed"
                    row ^= low
    if not collapsed:
        return View(n, len(namespaces), len(pairs), False)
    unit = [("ns:" + g["ns"]) if g["ns"] else f"g:{i}" for i, g in enumerate(groups)]
    units = {(unit[s], unit[d], kind) for (s, d), kind in pairs.items()}
    # edges with a closed namespace at an end are drawn only up to EDGE_LIMIT (then: none of them)
    grouped = {u for u in units if u[0].startswith("ns:") or u[1].startswith("ns:")}
    edges = len(units) if len(grouped) <= EDGE_LIMIT else len(units) - len(grouped)
    leaves = len(namespaces) + sum(1 for g in groups if not g["ns"])
    return View(leaves, 0, edges, True)


def connectivity_data(
    conn: Connectivity, analysis: Analysis | None = None, title: str = ""
) -> dict[str, Any]:
    """The page's data for a connectivity matrix (``analysis``: to embed each cell's trace). A
    filtered matrix (rows and columns of a view) draws its rows' and columns' groups."""
    shown, masks = _shown(conn)
    n = len(shown)
    strings = _Strings()
    cells = n * n * len(conn.classes)
    traces = _traces(analysis, conn, shown, strings) if analysis is not None and cells <= TRACE_CELLS else {}
    return {
        "mode": "connectivity",
        "title": title or "cilia connectivity",
        "classes": _class_dicts(conn),
        "groups": _group_dicts([conn.groups[i] for i in shown], {}),
        "rows": [_rows_b64(_reindexed(m.rows, shown, masks), n) for m in conn.matrices],
        "l7": [_rows_b64(_reindexed(m.rows, shown, masks), n) for m in conn.l7] if conn.l7 else [],
        "strings": strings.items,
        "traces": traces,
        "changes": [],
        "limits": {"expandGroups": EXPAND_GROUPS, "edgeLimit": EDGE_LIMIT},
    }


def diff_data(d: Diff, title: str = "") -> dict[str, Any]:
    """The page's data for a diff: the new side's groups and matrix (for context) and the changes;
    removed groups are drawn too (without edges)."""
    conn = d.new_conn
    if conn is None:
        raise ValueError("this diff carries no connectivity (computed by cilia.analyze.diff.diff)")
    old_groups = d.old_conn.groups if d.old_conn is not None else ()
    status = {name: "added" for name in d.groups_added} | {name: "removed" for name in d.groups_removed}
    removed = [g for g in old_groups if g.name in status and status[g.name] == "removed"]
    groups = list(conn.groups) + removed
    index = {g.name: i for i, g in enumerate(groups)}
    n = len(conn.groups)
    total = len(groups)
    rows_of = [list(m.rows) + [0] * (total - n) for m in conn.matrices]
    strings = _Strings()
    traces = (
        _traces(d.new_analysis, conn, list(range(n)), strings)  # the new side's, for unchanged edges
        if d.new_analysis is not None and n * n * len(conn.classes) <= TRACE_CELLS
        else {}
    )
    labels = [c["label"] for c in _class_dicts(conn)]
    changes = [
        {
            "kind": str(c.kind),
            "src": index[c.src],
            "dst": index[c.dst],
            "cls": labels.index(c.port_class) if c.port_class in labels else -1,
            "ports": c.ports,
            "before": c.before,
            "after": c.after,
        }
        for c in d.changes
    ]
    return {
        "mode": "diff",
        "title": title or "cilia diff",
        "summary": d.to_dict()["summary"],
        "classes": _class_dicts(conn),
        "groups": _group_dicts(groups, status),
        "rows": [_rows_b64(rows, total) for rows in rows_of],
        "l7": [],
        "strings": strings.items,
        "traces": traces,
        "changes": changes,
        "limits": {"expandGroups": EXPAND_GROUPS, "edgeLimit": EDGE_LIMIT},
    }


def _script_json(data: dict[str, Any]) -> str:
    # inside <script>: "</" would end the element early
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"


def render_page(data: dict[str, Any]) -> str:
    """The self-contained page for ``data`` (:func:`connectivity_data` or :func:`diff_data`)."""
    title = html.escape(data["title"])
    return "\n".join([
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title}</title>",
        f"<style>{_static('graphpage.css')}</style>",
        "</head><body>",
        f'<header><h1>{title}</h1><div id="summary"></div></header>',
        '<div id="controls">'
        '<input id="search" type="search" placeholder="search workloads, pods, namespaces">'
        '<select id="ns-filter"><option value="">all namespaces</option></select>'
        '<select id="class-filter"><option value="-1">any port class</option></select>'
        '<span id="toggles"></span>'
        '<button id="expand-all">open all namespaces</button>'
        '<button id="collapse-all">close all namespaces</button>'
        '<button id="fit">fit</button>'
        "</div>",
        '<div id="main"><div id="cy"></div><aside id="details">'
        "<p>Click an edge for its trace (the deciding rule on each side), a node for its pods; "
        "click a closed namespace to open it.</p></aside></div>",
        '<div id="notice"></div>',
        '<h2>Matrix</h2><div id="matrix"></div>',
        '<div id="cilia-status" data-rendered="0"></div>',
        f"<script>/* cytoscape.js, MIT licence (cytoscape.LICENSE in cilia/analyze/static) */\n"
        f"{_static('cytoscape.min.js')}</script>",
        f'<script id="cilia-data" type="application/json">{_script_json(data)}</script>',
        f"<script>{_static('graphpage.js')}</script>",
        "</body></html>",
        "",
    ])  # fmt: skip


def render_connectivity_page(conn: Connectivity, analysis: Analysis | None = None) -> str:
    """``cilia connectivity -o html``."""
    return render_page(connectivity_data(conn, analysis))


def render_diff_page(d: Diff) -> str:
    """``cilia diff -o html``."""
    return render_page(diff_data(d))
