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

import bisect
import csv
import io
import ipaddress
import json
import textwrap
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, TextIO

from cilia.analyze.cidrgroups import cidr_group_ends
from cilia.analyze.cluster import Analysis, PodEndpoint
from cilia.analyze.flow import EndKind, FlowEnd
from cilia.analyze.matrix import BitMatrix, SideRows, transpose_and
from cilia.analyze.peer_names import parse_port_query, resolve_peer
from cilia.analyze.peers import PEER_ENTITIES, PeerError, PortSpec, parse_proto, proto_name
from cilia.analyze.portclasses import PortClass, mentioned_ranges, port_classes
from cilia.analyze.selections import IndexedSelectorCache
from cilia.identity.reserved import RESERVED_LABELS, ReservedIdentity
from cilia.policy.engine import PolicyEngine, pod_named_ports
from cilia.policy.resolve import (
    LABEL_HOST,
    NamedPorts,
    namespace_of,
    policy_contributions,
    resolve_filters,
    select_rules,
)
from cilia.policy.rules import PeerKind as RulePeerKind
from cilia.policy.types import Direction, Proto


@dataclass(frozen=True)
class Group:
    """One row/column: an identity and the pods that have it (none for world, host, the other
    entities and the CIDR prefixes). ``peer`` is a PEER argument that ``cilia trace`` resolves to
    this identity (a pod of it, ``entity:NAME``, an address whose longest prefix is this one)."""

    index: int
    name: str
    identity: int
    kind: EndKind
    pods: tuple[str, ...] = ()
    peer: str = ""

    @property
    def local(self) -> bool:
        return self.kind is EndKind.POD

    @property
    def namespace(self) -> str:
        """The namespace of the group's pods ("" for peers outside the cluster's pods)."""
        return self.pods[0].partition("/")[0] if self.pods else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "identity": self.identity,
            "kind": str(self.kind),
            "namespace": self.namespace or None,
            "peer": self.peer or None,
            "pods": list(self.pods),
        }


@dataclass(frozen=True)
class Connectivity:
    """The matrices over ``groups`` (one per port class); ``sources``/``dests`` are the rows and
    columns a filtered view shows (None: every group)."""

    groups: tuple[Group, ...]
    classes: tuple[PortClass, ...]
    matrices: tuple[BitMatrix, ...]  # one per class, over group indices
    l7: tuple[BitMatrix, ...] = ()  # per class: allowed pairs whose requests an L7 proxy decides
    sources: tuple[int, ...] | None = None
    dests: tuple[int, ...] | None = None

    @property
    def rows(self) -> tuple[int, ...]:
        return self.sources if self.sources is not None else tuple(range(len(self.groups)))

    @property
    def cols(self) -> tuple[int, ...]:
        return self.dests if self.dests is not None else tuple(range(len(self.groups)))

    @property
    def filtered(self) -> bool:
        return self.sources is not None or self.dests is not None

    @cached_property
    def col_mask(self) -> int:
        out = 0
        for d in self.cols:
            out |= 1 << d
        return out

    def allowed(self, src: int, dst: int, cls: int) -> bool:
        return self.matrices[cls].allowed(src, dst)

    def filtered_at_l7(self, src: int, dst: int, cls: int) -> bool:
        return bool(self.l7) and self.l7[cls].allowed(src, dst)

    def targets(self, cls: int, src: int, l7: bool = False) -> list[int]:
        """The shown destinations ``src`` reaches in class ``cls`` (of the L7 matrix with ``l7``)."""
        m = (self.l7 if l7 else self.matrices)[cls]
        if self.dests is None:
            return m.targets(src)
        return [d for d in m.targets(src) if (self.col_mask >> d) & 1]

    def count(self, cls: int, l7: bool = False) -> int:
        """Allowed (or filtered at L7) pairs of the shown rows and columns in class ``cls``."""
        if l7 and not self.l7:
            return 0
        m = (self.l7 if l7 else self.matrices)[cls]
        if not self.filtered:
            return m.count()
        mask = self.col_mask
        return sum((m.rows[s] & mask).bit_count() for s in self.rows)

    def row_marks(self, cls: int, src: int) -> str:
        """Row ``src`` of class ``cls`` over the shown columns as "1" (allowed), "0" (denied), "7"
        (filtered at L7)."""
        bits = _bits(self.matrices[cls], src)
        if self.l7 and self.l7[cls].rows[src]:
            l7 = _bits(self.l7[cls], src)
            bits = "".join("7" if f == "1" else b for b, f in zip(bits, l7, strict=True))
        if self.dests is None:
            return bits
        return "".join(bits[d] for d in self.dests)

    def to_dict(self, pairs: bool = True) -> dict[str, Any]:
        """Classes, groups, the allowed pairs and their counts (``pairs=False``: only the counts;
        :func:`write_json` streams the pairs)."""
        head: dict[str, Any] = {
            "port_classes": self._classes_dict(),
            "groups": [g.to_dict() for g in self.groups],
        }
        if self.filtered:
            head["sources"] = [self.groups[i].name for i in self.rows]
            head["destinations"] = [self.groups[i].name for i in self.cols]
        counts = {c.label: self.count(ci) for ci, c in enumerate(self.classes)}
        if not pairs:
            return {**head, "allowed_pairs": counts}
        out = {
            **head,
            "allowed": {
                c.label: {
                    self.groups[s].name: [self.groups[d].name for d in self.targets(ci, s)] for s in self.rows
                }
                for ci, c in enumerate(self.classes)
            },
            "allowed_pairs": counts,
        }
        if self.l7_count():
            out["filtered_at_l7"] = {
                c.label: {
                    self.groups[s].name: [self.groups[d].name for d in self.targets(ci, s, l7=True)]
                    for s in self.rows
                    if self.targets(ci, s, l7=True)
                }
                for ci, c in enumerate(self.classes)
                if self.count(ci, l7=True)
            }
        return out

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
        if cls is not None:
            return self.count(cls, l7=True)
        return sum(self.count(ci, l7=True) for ci in range(len(self.classes)))


def _group_name(members: list[PodEndpoint], deployment_sizes: dict[tuple[str, str], int]) -> str:
    deps = {(m.pod.namespace, m.deployment) for m in members}
    if len(deps) == 1:
        ns, dep = next(iter(deps))
        if dep and deployment_sizes.get((ns, dep)) == len(members):
            return f"deployment:{ns}/{dep}"
    names = [m.name for m in members]
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1})"


def groups_of(analysis: Analysis) -> list[Group]:
    """Identity groups of the pods (ordered by their first pod), then world and host, the other
    entities the policies name (kube-apiserver, remote-node, …), the identities of each CIDR
    group's addresses and those of the policies' CIDR prefixes (toCIDR/fromCIDR, except holes)."""
    by_id: dict[int, list[PodEndpoint]] = defaultdict(list)
    for ep in analysis.endpoints:
        by_id[ep.identity].append(ep)
    sizes: dict[tuple[str, str], int] = defaultdict(int)
    for ep in analysis.endpoints:
        if ep.deployment:
            sizes[(ep.pod.namespace, ep.deployment)] += 1
    ordered = sorted(by_id.items(), key=lambda item: item[1][0].name)
    groups = [
        Group(i, _group_name(pods, sizes), ident, EndKind.POD, tuple(m.name for m in pods), pods[0].name)
        for i, (ident, pods) in enumerate(ordered)
    ]
    n = len(groups)
    groups.append(Group(n, "world", int(ReservedIdentity.WORLD), EndKind.ENTITY, peer="entity:world"))
    host_kind = EndKind.NODE if analysis.host_firewall else EndKind.ENTITY  # host policies decide for it
    groups.append(Group(n + 1, "host", int(ReservedIdentity.HOST), host_kind, peer="entity:host"))
    for name, rid in named_entities(analysis):
        groups.append(Group(len(groups), name, int(rid), EndKind.ENTITY, peer=f"entity:{name}"))
    seen = {g.identity for g in groups}
    taken = _taken_addresses(analysis)
    spans = sorted((n.version, int(n[0]), int(n[-1])) for n, _ in analysis.prefix_identities)
    # CiliumCIDRGroups: a column per identity an address of the group can have (cidrgroup:NAME peers)
    for cg in analysis.cluster.cidr_groups:
        for end in cidr_group_ends(analysis, cg.name) if cg.cidrs else ():
            if end.identity not in seen:
                net = ipaddress.ip_network(end.name.partition(" ")[0])
                peer = _address_in(net, spans, taken)
                groups.append(Group(len(groups), end.name, end.identity, EndKind.EXTERNAL, peer=peer))
                seen.add(end.identity)
    # the policies' prefixes: an address outside the pods has the identity of its longest prefix
    prefixes = sorted(
        analysis.prefix_identities, key=lambda p: (p[0].version, p[0].network_address, p[0].prefixlen)
    )
    for net, ident in prefixes:
        if ident not in seen:
            peer = _address_in(net, spans, taken)
            groups.append(Group(len(groups), f"cidr:{net}", ident, EndKind.EXTERNAL, peer=peer))
            seen.add(ident)
    return groups


# Reserved identities a policy can name besides world and host (which always have a row).
_OTHER_ENTITIES = ("kube-apiserver", "remote-node", "health", "ingress", "init", "unmanaged")


def named_entities(analysis: Analysis) -> list[tuple[str, ReservedIdentity]]:
    """The reserved peers (other than world and host) that some fromEntities/toEntities selects."""
    selectors = {p.selector for rule in analysis.rules for e in rule.entries for p in e.peers
                 if p.kind is RulePeerKind.ENTITIES}
    out = []
    for name in _OTHER_ENTITIES:
        rid = ReservedIdentity[PEER_ENTITIES[name].upper().replace("-", "_")]
        if any(sel.matches(RESERVED_LABELS[rid]) for sel in selectors):
            out.append((name, rid))
    return out


def _taken_addresses(analysis: Analysis) -> set[str]:
    """Addresses trace does not read as a CIDR identity: pods', nodes', ClusterIPs, and those a
    node learned for toFQDNs (normalised text)."""
    texts = {a for ep in analysis.endpoints for a in ep.pod.addresses}
    texts |= set(analysis.nodes.by_ip) | set(analysis.learned)
    texts |= {s.cluster_ip for s in analysis.cluster.services if s.cluster_ip and s.cluster_ip != "None"}
    texts |= {a for s in analysis.cluster.services for a in s.addresses}  # a dual-stack Service's IPv6 one
    out = set()
    for t in texts:
        try:
            out.add(str(ipaddress.ip_address(t)))
        except ValueError:
            continue
    return out


Span = tuple[int, int, int]  # (IP version, first address, last address) of a prefix


def _address_in(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network, spans: list[Span], taken: set[str]
) -> str:
    """An address inside ``net`` that no longer ipcache prefix (``spans``: all of them, sorted) holds and
    that is not ``taken`` ("" if there is none): its longest prefix is ``net``, so ``cilia trace``
    gives it this prefix's identity. Prefixes nest or are disjoint: only those inside ``net`` can
    be longer ones holding an address of it."""
    lo, hi = int(net.network_address), int(net.broadcast_address)
    # spans are sorted: those starting inside net are one slice of them
    start = bisect.bisect_left(spans, (net.version, lo, -1))
    end = bisect.bisect_right(spans, (net.version, hi, 1 << 129))
    inner = [(a, b) for _, a, b in spans[start:end] if b <= hi and (a, b) != (lo, hi)]
    candidates = [lo, hi]
    for a, b in inner:  # around each longer prefix inside it
        candidates += [b + 1, a - 1]
    make = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    for c in candidates:
        if lo <= c <= hi and not any(a <= c <= b for a, b in inner):
            text = str(make(c))
            if text not in taken:
                return text
    return ""


def classes_of(analysis: Analysis) -> list[PortClass]:
    named: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for ep in analysis.endpoints:
        for cp in ep.pod.ports:
            if cp.name:
                named[cp.name.lower()].add((int(parse_proto(cp.protocol)), cp.container_port))
    return port_classes(mentioned_ranges(analysis.rules, named))


def port_classes_of(analysis: Analysis, text: str) -> list[PortClass]:
    """The port classes that hold a ``--port`` value: a number, or a container port name (every
    number a pod gives that name)."""
    query = parse_port_query(text)
    if query.spec is not None:
        wanted = {(int(query.spec.proto), query.spec.port)}
    else:
        wanted = {
            (int(parse_proto(cp.protocol)), cp.container_port)
            for ep in analysis.endpoints
            for cp in ep.pod.ports
            if (cp.name or "").lower() == query.name
            and (query.proto is None or parse_proto(cp.protocol) == query.proto)
        }
        if not wanted:
            raise PeerError(f"--port {text}: no pod has a container port named {query.name!r}")
    return [c for c in classes_of(analysis) if any(c.contains(p, n) for p, n in wanted)]


def identities_of(analysis: Analysis, peer: str, namespace: str | None) -> frozenset[int]:
    """The identities a ``--from``/``--to`` PEER stands for (kubectl names with ``-n`` too)."""
    return frozenset(end.identity for end in resolve_peer(analysis, peer, namespace))


class PolicySets:
    """Each local identity's egress and ingress as :class:`SideRows` over an index of identities
    (``bits``: identity -> its bit(s)): the engine's rule selection and filters, with selections
    found through a label index (:mod:`cilia.analyze.selections`) and turned into bitsets once per
    selection. No MapState is built."""

    def __init__(self, analysis: Analysis, bits: Mapping[int, int]) -> None:
        engine_options = analysis.options.engine_options(analysis.has_host_policies)  # host firewall
        self.options = replace(engine_options, secrets=analysis.cluster.secrets)
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
    return [sets.sides(g.identity) if g.local or g.kind is EndKind.NODE else (None, None) for g in groups]


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


@dataclass(frozen=True)
class View:
    """The part of the matrix to compute and show: the pods of ``namespace`` (with every peer that
    is not a pod), rows of the identities ``sources``, columns of ``dests`` (None: no limit)."""

    namespace: str | None = None
    sources: frozenset[int] | None = None
    dests: frozenset[int] | None = None

    def keeps(self, g: Group) -> bool:
        return self.namespace is None or not g.local or g.namespace == self.namespace


Shown = tuple[int, ...] | None


def _viewed(groups: list[Group], view: View) -> tuple[list[Group], Shown, Shown]:
    """The groups a view needs (re-indexed) and its rows and columns among them (None: all)."""
    kept = [g for g in groups if view.keeps(g)]
    is_row = [view.sources is None or g.identity in view.sources for g in kept]
    is_col = [view.dests is None or g.identity in view.dests for g in kept]
    used = [(g, r, c) for g, r, c in zip(kept, is_row, is_col, strict=True) if r or c]
    out = [replace(g, index=i) for i, (g, _, _) in enumerate(used)]
    rows = tuple(i for i, (_, r, _) in enumerate(used) if r) if view.sources is not None else None
    cols = tuple(i for i, (_, _, c) in enumerate(used) if c) if view.dests is not None else None
    return out, rows, cols


def connectivity(
    analysis: Analysis, classes: list[PortClass] | None = None, view: View | None = None
) -> Connectivity:
    """The full matrix for every port class: each source's egress and each destination's ingress
    as whole rows of group bitsets, combined per class (a flow needs both). ``classes``: given port
    classes (``cilia diff``: those of both sides) instead of the ones these policies cut; ``view``:
    only these rows and columns."""
    groups = groups_of(analysis)
    rows_shown = cols_shown = None
    if view is not None:
        groups, rows_shown, cols_shown = _viewed(groups, view)
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
    return Connectivity(tuple(groups), tuple(classes), tuple(matrices), tuple(l7), rows_shown, cols_shown)


# --------------------------------------------------------------------------- deciding rules


# Above this many cells (shown rows x columns x classes) ``-o json`` leaves the deciding rules out
# unless asked (``--rules``): each is a trace of both sides.
CELLS_LIMIT = 20_000


def group_end(analysis: Analysis, group: Group) -> FlowEnd:
    """A flow end with the group's identity, named as the group (its first pod; every pod of a
    group decides alike)."""
    if group.local:
        return replace(analysis.resolve(group.pods[0])[0], name=group.name)
    return FlowEnd(group.name, group.kind, group.identity, analysis.labels_of(group.identity))


def cell_rule(analysis: Analysis, src: FlowEnd, dst: FlowEnd, cls: PortClass) -> dict[str, Any]:
    """What decides one cell, as ``cilia trace`` finds it on the class's representative port: the
    dropping side and its deny rule or default-deny policies, or the allowing rules of both sides."""
    from cilia.analyze.deciding import decided_by  # here: trace's modules only when rules are asked for
    from cilia.analyze.flow import FlowTrace
    from cilia.analyze.trace import side_verdict

    port = PortSpec(Proto(cls.proto), cls.port)
    egress = side_verdict(analysis, src, dst, Direction.EGRESS, port)
    ingress = side_verdict(analysis, dst, src, Direction.INGRESS, port)
    found = decided_by(FlowTrace(src, dst, port.proto, port.port, egress, ingress))
    sides = found["sides"]
    if found["side"] is not None:
        rules = next(sd["rules"] for sd in sides if sd["direction"] == found["side"])
        reason = next(sd["reason"] for sd in sides if sd["direction"] == found["side"])
    else:
        rules = sorted({r for sd in sides for r in sd["rules"]})
        reason = "allowed"
    return {"side": found["side"], "reason": reason, "rules": rules, "text": found["text"]}


def cells_size(conn: Connectivity) -> int:
    return len(conn.rows) * len(conn.cols) * len(conn.classes)


def deciding_rules(analysis: Analysis, conn: Connectivity) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Per class, source and destination shown: the cell's verdict mark and what decided it."""
    ends = {i: group_end(analysis, conn.groups[i]) for i in {*conn.rows, *conn.cols}}
    verdicts = {"1": "allow", "0": "deny", "7": "allow-l7"}
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for ci, cls in enumerate(conn.classes):
        per: dict[str, dict[str, dict[str, Any]]] = {}
        for s in conn.rows:
            marks = conn.row_marks(ci, s)
            per[conn.groups[s].name] = {
                conn.groups[d].name: {"verdict": verdicts[mark], **cell_rule(analysis, ends[s], ends[d], cls)}
                for d, mark in zip(conn.cols, marks, strict=True)
            }
        out[cls.label] = per
    return out


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


def write_json(
    conn: Connectivity, out: TextIO, cells: dict[str, Any] | None = None, cells_note: str = ""
) -> None:
    """:meth:`Connectivity.to_dict` as indented JSON, written row by row (at 10,000 groups the
    ``allowed`` lists hold millions of names: they are never one object in memory); then the
    deciding rule of each cell (``cells``, from :func:`deciding_rules`) or why they are left out."""
    data = conn.to_dict(pairs=False)
    quoted = [json.dumps(g.name) for g in conn.groups]

    def stream(key: str, classes: list[int], l7: bool) -> None:
        out.write(f",\n  {json.dumps(key)}: ")
        if not classes:
            out.write("{}")
            return
        out.write("{")
        for n, ci in enumerate(classes):
            out.write(("," if n else "") + f"\n    {json.dumps(conn.classes[ci].label)}: ")
            rows = [(s, conn.targets(ci, s, l7)) for s in conn.rows]
            if l7:
                rows = [(s, t) for s, t in rows if t]
            if not rows:
                out.write("{}")
                continue
            out.write("{")
            for ri, (s, targets) in enumerate(rows):
                names = (
                    "[\n" + ",\n".join("        " + quoted[d] for d in targets) + "\n      ]"
                    if targets
                    else "[]"
                )
                out.write(("," if ri else "") + f"\n      {quoted[s]}: {names}")
            out.write("\n    }")
        out.write("\n  }")

    out.write("{")
    first = True
    for key, value in data.items():
        if key == "allowed_pairs":
            stream("allowed", list(range(len(conn.classes))), False)
        out.write(("" if first else ",") + f"\n  {json.dumps(key)}: {_indented(value, 1)}")
        first = False
    if conn.l7_count():
        stream("filtered_at_l7", [ci for ci in range(len(conn.classes)) if conn.count(ci, l7=True)], True)
    if cells is not None:
        out.write(f',\n  "deciding_rules": {_indented(cells, 1)}')
    elif cells_note:
        out.write(f',\n  "deciding_rules_omitted": {json.dumps(cells_note)}')
    out.write("\n}\n")


# Above this many groups, ``-o table`` and ``-o html`` summarise (counts per group and class) instead
# of drawing the matrix, which would have millions of cells; json and csv always hold every pair.
SUMMARY_GROUPS = 100


def _by_namespace(conn: Connectivity, indices: Sequence[int]) -> list[tuple[str, list[Group]]]:
    """The groups of ``indices`` under headings: each namespace of pods, then the peers that are
    not pods (world, host, entities, CIDR prefixes)."""
    heads: dict[str, list[Group]] = {}
    for i in indices:
        g = conn.groups[i]
        heads.setdefault(f"namespace {g.namespace}" if g.local else "not pods", []).append(g)
    return sorted(heads.items(), key=lambda item: (item[0] == "not pods", item[0]))


def _legend(conn: Connectivity, width: int) -> list[str]:
    shown = sorted({*conn.rows, *conn.cols})
    lines = ["groups (pods with the same identity share a row), by namespace:"]
    for head, members in _by_namespace(conn, shown):
        lines.append(f"  {head}:")
        for g in members:
            shown = ", ".join(g.pods[:3]) + (f", … ({len(g.pods)} pods)" if len(g.pods) > 3 else "")
            extra = f", pods: {shown}" if len(g.pods) > 1 else ""
            if not g.local and g.kind is EndKind.EXTERNAL and g.peer:
                extra = f", e.g. {g.peer}"
            lines.append(f"    [{g.index + 1:>{width}}] {g.name} (identity {g.identity}{extra})")
    return lines


def render_summary(conn: Connectivity) -> str:
    """``-o table`` for a large cluster: per namespace its groups, each with how many groups it
    reaches (out) and is reached by (in) on some port class; per class the pairs allowed."""
    rows, cols = conn.rows, conn.cols
    any_rows = [0] * len(conn.groups)
    for m in conn.matrices:
        for s in rows:
            any_rows[s] |= m.rows[s] & conn.col_mask
    ins = BitMatrix(len(conn.groups), tuple(any_rows)).column_counts()
    pods = sum(len(conn.groups[i].pods) for i in sorted({*rows, *cols}))
    spaces = {conn.groups[i].namespace for i in {*rows, *cols} if conn.groups[i].local}
    lines = [
        f"{len(rows)} x {len(cols)} identity groups ({pods} pods in {len(spaces)} namespaces), "
        f"{len(conn.classes)} port classes:",
        f"too many for a matrix (over {SUMMARY_GROUPS} groups); -o csv or -o json list every pair;",
        "--namespace, --from, --to and --port narrow the matrix.",
        "",
        "port classes:",
    ]
    total = len(rows) * len(cols)
    for ci, cls in enumerate(conn.classes):
        n7 = conn.l7_count(ci)
        via = f" ({n7} filtered at L7: each request decided by a proxy)" if n7 else ""
        lines.append(f"  {cls.label}: {conn.count(ci)} of {total} pairs allowed{via}")
    lines += ["", "groups, by namespace: groups reached (out) and reaching (in) on some port class:"]
    in_rows, in_cols = set(rows), set(cols)
    for head, members in _by_namespace(conn, sorted(in_rows | in_cols)):
        lines.append(f"  {head}: {len(members)} groups, {sum(len(g.pods) for g in members)} pods")
        for g in members:
            out = str(any_rows[g.index].bit_count()) if g.index in in_rows else "-"
            into = str(ins[g.index]) if g.index in in_cols else "-"
            size = f", {len(g.pods)} pods" if len(g.pods) > 1 else ""
            lines.append(f"    [{g.index + 1}] {g.name} (identity {g.identity}{size}): out {out}, in {into}")
    return "\n".join(lines) + "\n"


def render_table(conn: Connectivity) -> str:
    """Plain-text matrices, one per port class; ``✓`` allowed, ``✗`` denied, ``L7`` allowed at L4
    with each request decided by an L7 proxy. The legend groups the rows by namespace."""
    if max(len(conn.rows), len(conn.cols)) > SUMMARY_GROUPS:
        return render_summary(conn)
    width = len(str(len(conn.groups)))
    lines = _legend(conn, width)
    head = "from\\to"
    if conn.l7_count():
        width = max(width, 2)
    cols = " ".join(f"{d + 1:>{width}}" for d in conn.cols)
    label_width = max(len(head), len(str(len(conn.groups))) + 2)
    marks = {"1": "✓".rjust(width), "0": "✗".rjust(width), "7": "L7".rjust(width)}
    total = len(conn.rows) * len(conn.cols)
    # classes whose matrices are equal share one (real repositories cut dozens of classes)
    same: dict[tuple[str, ...], list[int]] = {}
    for ci in range(len(conn.classes)):
        same.setdefault(tuple(conn.row_marks(ci, s) for s in conn.rows), []).append(ci)
    for table, members in same.items():
        lines.append("")
        ci = members[0]
        n7 = conn.l7_count(ci)
        via = f" ({n7} filtered at L7: each request decided by a proxy)" if n7 else ""
        labels = ", ".join(conn.classes[c].label for c in members)
        each = " each" if len(members) > 1 else ""
        text = f"{labels}: {conn.count(ci)} of {total} pairs allowed{each}{via}"
        lines += textwrap.wrap(text, width=100, subsequent_indent="    ", break_on_hyphens=False)
        lines.append(f"  {head:<{label_width}} {cols}")
        for s, row in zip(conn.rows, table, strict=True):
            cells = " ".join(marks[bit] for bit in row)
            lines.append(f"  {f'[{s + 1}]':<{label_width}} {cells}")
    return "\n".join(lines) + "\n"


def _csv_field(value: object) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([value])
    return buf.getvalue()


def write_csv(conn: Connectivity, out: TextIO) -> None:
    """One row per (port class, from, to), streamed: a 10,000-pod matrix has millions of rows, so
    the quoted cells are built once per group and rows are joined as strings."""
    out.write("port_class,from,from_identity,to,to_identity,verdict\n")
    shown = [conn.groups[d] for d in conn.cols]
    tails = {
        bit: [f",{_csv_field(d.name)},{d.identity},{verdict}\n" for d in shown]
        for bit, verdict in (("1", "allow"), ("0", "deny"), ("7", "allow-l7"))
    }
    for ci, cls in enumerate(conn.classes):
        label = _csv_field(cls.label)
        for s in conn.rows:
            g = conn.groups[s]
            head = f"{label},{_csv_field(g.name)},{g.identity}"
            out.write("".join(head + tails[bit][i] for i, bit in enumerate(conn.row_marks(ci, s))))


def render_csv(conn: Connectivity) -> str:
    out = io.StringIO()
    write_csv(conn, out)
    return out.getvalue()
