"""``cilia diff``: what changes in who-can-reach-whom between two sets of manifests.

Both sides are computed as :func:`cilia.analyze.connectivity.connectivity` matrices over the same
port classes (those cut by the ranges either side's policies mention, so a class means the same ports
on both sides). Groups are matched by name (``deployment:NS/NAME``, a pod's name, ``world``, …);
a cell whose verdict flips is *opened* or *closed*. The matrix holds verdicts only, so the rules are
named by tracing just the cells that matter (:func:`cilia.analyze.trace.side_verdict`): every flipped
cell, and the cells whose verdict stayed but where the policies selecting the source (egress) or the
destination (ingress) changed — those are *rule-changed* when the deciding rules differ.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cilia.analyze.cluster import Analysis, Options, analyse_paths
from cilia.analyze.connectivity import Connectivity, Group, connectivity
from cilia.analyze.flow import FlowEnd, FlowTrace
from cilia.analyze.peers import PortSpec, parse_proto, proto_name
from cilia.analyze.portclasses import PortClass, mentioned_ranges, port_classes
from cilia.analyze.trace import side_verdict
from cilia.policy.resolve import namespace_of, select_rules
from cilia.policy.types import Direction, DropReason
from cilia.store import API_KINDS, ObjectKey, Store


class ChangeKind(StrEnum):
    OPENED = "opened"
    CLOSED = "closed"
    RULE_CHANGED = "rule-changed"


@dataclass(frozen=True)
class CellChange:
    """One (source group, destination group, port class) whose verdict or deciding rule changed."""

    kind: ChangeKind
    src: str
    dst: str
    port_class: str
    ports: str  # the class's ranges, "80/TCP" or "every port" for the only class
    before: str  # the deciding rule(s) before, for people
    after: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "change": str(self.kind),
            "from": self.src,
            "to": self.dst,
            "port_class": self.port_class,
            "ports": self.ports,
            "before": self.before,
            "after": self.after,
        }


@dataclass(frozen=True)
class Diff:
    """The connectivity delta from ``old`` to ``new``."""

    changes: tuple[CellChange, ...]
    groups_added: tuple[str, ...] = ()
    groups_removed: tuple[str, ...] = ()
    pods_added: tuple[str, ...] = ()
    pods_removed: tuple[str, ...] = ()
    port_classes: tuple[str, ...] = field(default=())
    # both sides' matrices over the common port classes (the html page draws the new side's edges)
    old_conn: Connectivity | None = field(default=None, compare=False, repr=False)
    new_conn: Connectivity | None = field(default=None, compare=False, repr=False)
    new_analysis: Analysis | None = field(default=None, compare=False, repr=False)  # the page's traces

    def of(self, kind: ChangeKind) -> list[CellChange]:
        return [c for c in self.changes if c.kind is kind]

    @property
    def workloads_changed(self) -> bool:
        return bool(self.groups_added or self.groups_removed or self.pods_added or self.pods_removed)

    def changed(self, fail_on: str = "any") -> bool:
        """Is there a change of the kind ``fail_on`` (opened | closed | any)?"""
        if fail_on == "opened":
            return bool(self.of(ChangeKind.OPENED))
        if fail_on == "closed":
            return bool(self.of(ChangeKind.CLOSED))
        return bool(self.changes) or self.workloads_changed

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": {
                "opened": len(self.of(ChangeKind.OPENED)),
                "closed": len(self.of(ChangeKind.CLOSED)),
                "rule_changed": len(self.of(ChangeKind.RULE_CHANGED)),
                "groups_added": len(self.groups_added),
                "groups_removed": len(self.groups_removed),
            },
            "port_classes": list(self.port_classes),
            "changes": [c.to_dict() for c in self.changes],
            "groups_added": list(self.groups_added),
            "groups_removed": list(self.groups_removed),
            "pods_added": list(self.pods_added),
            "pods_removed": list(self.pods_removed),
        }


# --------------------------------------------------------------------------- computing


def _ranges(analysis: Analysis) -> set[tuple[int, int, int]]:
    named: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for ep in analysis.endpoints:
        for cp in ep.pod.ports:
            if cp.name:
                named[cp.name.lower()].add((int(parse_proto(cp.protocol)), cp.container_port))
    return mentioned_ranges(analysis.rules, named)


def common_classes(old: Analysis, new: Analysis) -> list[PortClass]:
    """Port classes cut by what either side mentions: each is one verdict on both sides."""
    return port_classes(_ranges(old) | _ranges(new))


def group_end(analysis: Analysis, group: Group, endpoints: dict[str, Any]) -> FlowEnd:
    """A representative end of a group (its first pod; every pod of a group shares its verdicts)."""
    if group.local:
        return analysis.pod_end(endpoints[group.pods[0]])
    return FlowEnd(group.name, group.kind, group.identity, analysis.labels_of(group.identity))


def flow_of(analysis: Analysis, src: FlowEnd, dst: FlowEnd, port: PortSpec) -> FlowTrace:
    """Both sides of one flow, as ``cilia trace`` decides them (without trace's notes)."""
    egress = side_verdict(analysis, src, dst, Direction.EGRESS, port)
    ingress = side_verdict(analysis, dst, src, Direction.INGRESS, port)
    return FlowTrace(src, dst, port.proto, port.port, egress, ingress)


def _names(refs: Iterable[Any]) -> str:
    return "; ".join(r.describe() for r in refs)


def decider(flow: FlowTrace, names: dict[str, str] | None = None) -> str:
    """The rule(s) that decide a flow, in one line: the dropping side's deny or default deny, or
    the allowing rules of each side that has a policy (``names``: how to call an end, by its name)."""
    names = names or {}
    side = flow.decided_by
    if side is not None:
        who = f"{side.direction.label} of {names.get(side.owner, side.owner)}"
        if side.refused_at_l7:
            return f"{who}: refused at L7 ({_names(side.rules)})"
        if side.reason == DropReason.POLICY_DENY:
            return f"{who}: denied by {_names(side.rules)}"
        if side.reason == DropReason.AUTH_REQUIRED:
            return f"{who}: needs authentication ({_names(side.rules)})"
        by = _names(side.default_deny_by) or "enforcement mode always"
        return f"{who}: default deny ({by})"
    parts = []
    for s in (flow.egress, flow.ingress):
        if s.state == "no-policy":
            continue
        if s.state == "unenforced":
            parts.append(f"{s.direction.label} of {names.get(s.owner, s.owner)}: not enforced")
        else:
            allowed_by = _names(s.rules) or "default allow"
            parts.append(f"{s.direction.label} of {names.get(s.owner, s.owner)}: allowed by {allowed_by}")
    return "; ".join(parts) or "no policy on either side"


def _selected(analysis: Analysis, groups: Sequence[Group]) -> dict[str, str]:
    """Per local group, the rules that select it (as text): where they differ between the sides,
    a cell's deciding rule may have changed even though its verdict did not."""
    from cilia.policy.engine import PolicyEngine

    options = analysis.options.engine_options()
    engine = PolicyEngine(options)
    engine.apply_rules(analysis.rules)
    out = {}
    for g in groups:
        if not g.local:
            continue
        labels = analysis.identities[g.identity]
        sel = select_rules(engine.repository.candidates(namespace_of(labels)), labels, options)
        out[g.name] = "\n".join(sorted(repr(r) for r in sel.rules))
    return out


def _pods(conn: Connectivity) -> set[str]:
    return {p for g in conn.groups for p in g.pods}


def _ports_text(cls: PortClass, only: bool) -> str:
    if only:
        return "every port"
    if cls.label == "other":
        return "ports no policy names"
    return ", ".join(f"{lo}-{hi}/{proto_name(p)}" if lo != hi else f"{lo}/{proto_name(p)}"
                     for p, lo, hi in cls.segments)


def _named_ports(analysis: Analysis) -> frozenset[tuple[Any, ...]]:
    """Every pod's named ports with its labels (egress named ports resolve against all of them)."""
    return frozenset(
        (ep.labels, cp.name.lower(), cp.protocol, cp.container_port)
        for ep in analysis.endpoints
        for cp in ep.pod.ports
        if cp.name
    )


def _same_engine(old: Analysis, new: Analysis) -> bool:
    """Do both sides decide a side whose selecting rules and ends are equal alike? The engine's
    options (enforcement, host firewall, Secrets), every pod's named ports and the Nodes (which
    identity a node's address has, seen from where) must be equal."""
    return (
        old.oracle.options == new.oracle.options
        and _named_ports(old) == _named_ports(new)
        and old.cluster.nodes == new.cluster.nodes
    )


def diff(old: Analysis, new: Analysis) -> Diff:
    """The connectivity delta from ``old`` to ``new`` (see the module's docstring).

    A side is traced once where it cannot differ between the two: the egress of a source whose
    selecting rules did not change (not *touched*), towards a destination with the same labels,
    is the same verdict on both sides when the engines' options, the named ports and the Nodes are
    equal — it is taken from ``old`` (at 10,000 pods that halves the policies resolved). Where
    only one side of a cell is touched, that side is traced first: if its verdict is unchanged the
    cell is skipped without resolving the other end's policy (one workload's egress changed: the
    other sources' policies are never resolved)."""
    classes = common_classes(old, new)
    c_old = connectivity(old, classes)
    c_new = connectivity(new, classes)
    by_old = {g.name: g for g in c_old.groups}
    by_new = {g.name: g for g in c_new.groups}
    common = [name for name in by_old if name in by_new]
    eps_old = {ep.name: ep for ep in old.endpoints}
    eps_new = {ep.name: ep for ep in new.endpoints}
    sel_old = _selected(old, [by_old[n] for n in common])
    sel_new = _selected(new, [by_new[n] for n in common])
    touched = {n for n in common if sel_old.get(n) != sel_new.get(n)}
    common_set = set(common)
    ends_old = {n: group_end(old, by_old[n], eps_old) for n in common}
    ends_new = {n: group_end(new, by_new[n], eps_new) for n in common}
    reuse = _same_engine(old, new)
    same = {n for n in common if reuse and ends_old[n].labels == ends_new[n].labels}
    only = len(classes) == 1
    changes: list[CellChange] = []
    for ci, cls in enumerate(classes):
        m_old, m_new = c_old.matrices[ci], c_new.matrices[ci]
        ports = PortSpec(cls.proto, cls.port)
        for s in common:
            go, gn = by_old[s], by_new[s]
            t_old = {c_old.groups[d].name for d in m_old.targets(go.index)} & common_set
            t_new = {c_new.groups[d].name for d in m_new.targets(gn.index)} & common_set
            flips = t_old ^ t_new
            # a source whose policies changed: every destination; else those whose ingress changed
            candidates = flips | (common_set if s in touched else touched)
            for d in sorted(candidates, key=lambda name: by_old[name].index):
                src_o, dst_o, src, dst = ends_old[s], ends_old[d], ends_new[s], ends_new[d]
                unchanged = s in same and d in same
                if d not in flips and unchanged and (s in touched) != (d in touched):
                    # one side's policies changed: look at that side first; if its verdict is the
                    # same on both, so is the flow's deciding rule (the other side is equal)
                    if d in touched:
                        i_old = side_verdict(old, dst_o, src_o, Direction.INGRESS, ports)
                        i_new = side_verdict(new, dst, src, Direction.INGRESS, ports)
                        if i_old == i_new:
                            continue
                        e_old = e_new = side_verdict(old, src_o, dst_o, Direction.EGRESS, ports)
                    else:
                        e_old = side_verdict(old, src_o, dst_o, Direction.EGRESS, ports)
                        e_new = side_verdict(new, src, dst, Direction.EGRESS, ports)
                        if e_old == e_new:
                            continue
                        i_old = i_new = side_verdict(old, dst_o, src_o, Direction.INGRESS, ports)
                else:
                    e_old = side_verdict(old, src_o, dst_o, Direction.EGRESS, ports)
                    i_old = side_verdict(old, dst_o, src_o, Direction.INGRESS, ports)
                    e_new = (
                        e_old
                        if unchanged and s not in touched
                        else side_verdict(new, src, dst, Direction.EGRESS, ports)
                    )
                    i_new = (
                        i_old
                        if unchanged and d not in touched
                        else side_verdict(new, dst, src, Direction.INGRESS, ports)
                    )
                f_old = FlowTrace(src_o, dst_o, ports.proto, ports.port, e_old, i_old)
                f_new = FlowTrace(src, dst, ports.proto, ports.port, e_new, i_new)
                called = {f_old.src.name: s, f_old.dst.name: d, src.name: s, dst.name: d}
                before, after = decider(f_old, called), decider(f_new, called)
                if d in flips:
                    kind = ChangeKind.OPENED if d in t_new else ChangeKind.CLOSED
                elif before != after:
                    kind = ChangeKind.RULE_CHANGED
                else:
                    continue
                changes.append(CellChange(kind, s, d, cls.label, _ports_text(cls, only), before, after))
    order = {k: i for i, k in enumerate(ChangeKind)}
    changes.sort(key=lambda c: order[c.kind])
    p_old, p_new = _pods(c_old), _pods(c_new)
    return Diff(
        tuple(changes),
        tuple(n for n in by_new if n not in by_old),
        tuple(n for n in by_old if n not in by_new),
        tuple(sorted(p_new - p_old)),
        tuple(sorted(p_old - p_new)),
        tuple(c.label for c in classes),
        c_old,
        c_new,
        new,
    )


# --------------------------------------------------------------------------- a node's objects


def stored_objects(store: Store) -> dict[ObjectKey, dict[str, Any]]:
    """The objects a node holds of the kinds manifests carry (what ``cilia apply`` stored)."""
    return {r.key: r.value for kind in API_KINDS.values() for r in store.list(kind)}


def _as_manifests(objects: Mapping[ObjectKey, dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects as manifests: a Deployment's pods, which the node stores next to it, are left
    to the Deployment (analysis makes them again, with the same names)."""
    deployments = {(k.namespace, k.name) for k, v in objects.items() if v.get("kind") == "Deployment"}
    out = []
    for key, obj in sorted(objects.items(), key=lambda kv: kv[0].path()):
        owners = (obj.get("metadata") or {}).get("ownerReferences") or ()
        if obj.get("kind") == "Pod" and any(
            o.get("kind") == "Deployment" and (key.namespace, o.get("name")) in deployments for o in owners
        ):
            continue
        out.append(obj)
    return out


def diff_objects(
    current: Mapping[ObjectKey, dict[str, Any]],
    planned: Iterable[tuple[ObjectKey, dict[str, Any]]],
    options: Options = Options(),
) -> Diff:
    """The delta of applying ``planned`` over a node's ``current`` objects (``apply --dry-run``)."""
    import yaml

    new = dict(current)
    new.update(planned)
    with tempfile.TemporaryDirectory(prefix="cilia-diff-") as tmp:
        sides = []
        for name, objs in (("current", current), ("planned", new)):
            docs = _as_manifests(objs)
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
            sides.append(analyse_paths([path] if docs else [], options))  # a node with nothing yet
    return diff(sides[0], sides[1])


# --------------------------------------------------------------------------- output

_TITLES = {
    ChangeKind.OPENED: "opened",
    ChangeKind.CLOSED: "closed",
    ChangeKind.RULE_CHANGED: "deciding rule changed",
}


def _summary(d: Diff) -> str:
    return (
        f"{len(d.of(ChangeKind.OPENED))} opened, {len(d.of(ChangeKind.CLOSED))} closed, "
        f"{len(d.of(ChangeKind.RULE_CHANGED))} with a new deciding rule; "
        f"{len(d.groups_added)} workload groups added, {len(d.groups_removed)} removed"
    )


def render_text(d: Diff) -> str:
    lines = [_summary(d)]
    for kind in ChangeKind:
        found = d.of(kind)
        if not found:
            continue
        lines.append("")
        lines.append(f"{_TITLES[kind]}:")
        for c in found:
            lines.append(f"  {c.src} -> {c.dst}  {c.ports}")
            lines.append(f"    before: {c.before}")
            lines.append(f"    after:  {c.after}")
    for title, names in (
        ("workload groups added", d.groups_added),
        ("workload groups removed", d.groups_removed),
        ("pods added", d.pods_added),
        ("pods removed", d.pods_removed),
    ):
        if names:
            lines.append("")
            lines.append(f"{title}:")
            lines.extend(f"  {n}" for n in names)
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_md(d: Diff) -> str:
    """Markdown for a pull-request comment: a summary line and a table per kind of change."""
    lines = ["### cilia diff", "", f"**{_summary(d)}**"]
    for kind in ChangeKind:
        found = d.of(kind)
        if not found:
            continue
        lines += ["", f"#### {_TITLES[kind]} ({len(found)})", "", "| from | to | ports | before | after |",
                  "|---|---|---|---|---|"]
        for c in found:
            lines.append(
                f"| `{_md(c.src)}` | `{_md(c.dst)}` | {_md(c.ports)} | {_md(c.before)} | {_md(c.after)} |"
            )
    for title, names in (
        ("workload groups added", d.groups_added),
        ("workload groups removed", d.groups_removed),
        ("pods added", d.pods_added),
        ("pods removed", d.pods_removed),
    ):
        if names:
            lines += ["", f"#### {title}", ""]
            lines.extend(f"- `{_md(n)}`" for n in names)
    return "\n".join(lines) + "\n"


def render_json(d: Diff) -> str:
    return json.dumps(d.to_dict(), indent=2) + "\n"


def render_csv(d: Diff) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["change", "from", "to", "port_class", "ports", "before", "after"])
    for c in d.changes:
        w.writerow([str(c.kind), c.src, c.dst, c.port_class, c.ports, c.before, c.after])
    for kind, names in (
        ("group-added", d.groups_added),
        ("group-removed", d.groups_removed),
        ("pod-added", d.pods_added),
        ("pod-removed", d.pods_removed),
    ):
        for n in names:
            w.writerow([kind, n, "", "", "", "", ""])
    return out.getvalue()


def render_dot(d: Diff) -> str:
    """Graphviz: changed edges only (green opened, red closed, blue deciding rule changed)."""
    colours = {ChangeKind.OPENED: "darkgreen", ChangeKind.CLOSED: "red", ChangeKind.RULE_CHANGED: "blue"}
    lines = ["digraph cilia_diff {", "  rankdir=LR;", '  node [shape=box, fontname="sans-serif"];']
    for n in d.groups_added:
        lines.append(f"  {json.dumps(n)} [style=filled, fillcolor=palegreen];")
    for n in d.groups_removed:
        lines.append(f"  {json.dumps(n)} [style=dashed];")
    for c in d.changes:
        label = f"{c.kind}: {c.ports}"
        lines.append(
            f"  {json.dumps(c.src)} -> {json.dumps(c.dst)} "
            f"[color={colours[c.kind]}, label={json.dumps(label)}, tooltip={json.dumps(c.after)}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_mermaid(d: Diff) -> str:
    """A Mermaid flowchart for docs: changed edges only (thick opened, crossed closed, dotted rule
    changed); added groups drawn with a double border."""

    def text(value: str) -> str:
        return '"' + value.replace('"', "#quot;") + '"'

    ids: dict[str, str] = {}

    def node(name: str) -> str:
        if name not in ids:
            ids[name] = f"n{len(ids)}"
        return ids[name]

    edges = []
    for c in d.changes:
        a, b = node(c.src), node(c.dst)
        label = text(f"{c.kind}: {c.ports}")
        arrow = {
            ChangeKind.OPENED: f"{a} ==>|{label}| {b}",
            ChangeKind.CLOSED: f"{a} --x|{label}| {b}",
            ChangeKind.RULE_CHANGED: f"{a} -.->|{label}| {b}",
        }[c.kind]
        edges.append(f"  {arrow}")
    for name in (*d.groups_added, *d.groups_removed):
        node(name)
    lines = ["flowchart LR"]
    added = set(d.groups_added)
    for name, nid in ids.items():
        lines.append(f"  {nid}[[{text(name)}]]" if name in added else f"  {nid}[{text(name)}]")
    return "\n".join(lines + edges) + "\n"


RENDERERS = {
    "text": render_text,
    "json": render_json,
    "md": render_md,
    "csv": render_csv,
    "dot": render_dot,
    "mermaid": render_mermaid,
}
