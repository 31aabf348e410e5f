"""``cilia lint``: pitfalls in policy manifests, each with a stable id (:mod:`cilia.analyze.findings`),
file:line, why it matters and how to fix it.

Three kinds of rules:

* the validator's findings (CL001 fields Cilium does not have, CL002 anything else it would reject);
* object-only rules (:mod:`cilia.analyze.lintraw`);
* rules that need the cluster and the engine: what a policy selects, shadowed allows, default deny
  without DNS, named ports (CL003, CL004, CL005, CL007, CL008). They run over the valid objects only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from cilia.analyze.cluster import Analysis, Options
from cilia.analyze.findings import Finding, Severity
from cilia.analyze.lintgate import silenced
from cilia.analyze.lintgroups import unknown_cidr_groups
from cilia.analyze.lintnodes import unmatched_node_peers, unmatched_node_selectors
from cilia.analyze.lintraw import RAW_RULES
from cilia.analyze.peers import parse_proto
from cilia.analyze.policydocs import KNP, PolicyDoc, parse_policies
from cilia.k8s.cluster import build_cluster
from cilia.k8s.duplicates import find_duplicates, latest_documents, where
from cilia.k8s.errors import Error, Skipped
from cilia.k8s.loader import LoadResult, load_paths
from cilia.k8s.source import Document, FieldPath
from cilia.k8s.validate import validate_document
from cilia.policy.resolve import rule_selects
from cilia.policy.rules import PeerKind, PeerRule, PolicyRule
from cilia.policy.types import Direction, Proto

# The schema of ``cilia lint -o json``; a new version when a field changes meaning or type.
LINT_REPORT_KIND = "cilia.io/LintReport/v1"


@dataclass(frozen=True)
class LintReport:
    """What lint found: the files read, how many objects, every finding."""

    files: tuple[str, ...]
    objects: int
    findings: tuple[Finding, ...]
    unreadable: tuple[Error, ...] = ()
    skipped: tuple[Skipped, ...] = ()

    def count(self, severity: Severity) -> int:
        return sum(f.severity is severity for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """``cilia lint -o json``, marked with its schema (:data:`LINT_REPORT_KIND`); the counts by
        severity are under ``counts`` (``errors`` is a list in validate's report)."""
        return {
            "kind": LINT_REPORT_KIND,
            "files": len(self.files),
            "objects": self.objects,
            "counts": {str(s): self.count(s) for s in Severity},
            "findings": [f.to_dict() for f in self.findings],
            "skipped": [s.to_dict() for s in self.skipped],
        }


# --------------------------------------------------------------------------- validator findings


def _validation_findings(doc: Document, errors: Sequence[Error]) -> Iterator[Finding]:
    what = f"{doc.kind}/{doc.namespace}/{doc.name}" if doc.namespace else f"{doc.kind}/{doc.name}"
    for e in errors:
        unknown = "unknown field" in e.message
        rule = "CL001" if unknown else "CL002"
        why = (
            "kubectl apply (strict) refuses the object; a lenient client lets the API server prune the "
            "field, so Cilium never sees it"
            if unknown
            else "Cilium 1.18 / the API server would reject this object"
        )
        fix = e.hint or "correct the field (see `cilia validate`)"
        if unknown and "--fix" not in fix:
            fix += "\n`cilia validate --fix` writes the corrected manifest"
        yield Finding(rule, e.file, e.line, e.column, what, e.path, f"{e.message}: {why}", fix)


# --------------------------------------------------------------------------- semantic rules


def _rule_prefix(pol: PolicyDoc, rule: PolicyRule) -> FieldPath:
    if pol.kind == KNP:
        return ("spec",)
    return (
        ("spec",)
        if rule.ref.spec_index == 0 and pol.obj.spec is not None
        else (
            "specs",
            rule.ref.spec_index - (1 if pol.obj.spec is not None else 0),
        )
    )


def _finding(rule: str, pol: PolicyDoc, path: FieldPath, message: str, fix: str) -> Finding:
    file, line, col, text = pol.where(path)
    return Finding(rule, file, line, col, pol.describe, text, message, fix)


class _Semantic:
    """The cluster-aware rules, sharing one Analysis."""

    def __init__(self, analysis: Analysis, policies: Sequence[PolicyDoc]) -> None:
        self.a = analysis
        self.policies = policies
        self.by_resource: dict[tuple[str, str, str], list[PolicyRule]] = defaultdict(list)
        for rule in analysis.rules:
            self.by_resource[(rule.ref.kind, rule.ref.namespace, rule.ref.name)].append(rule)
        # Distinct pod identities by namespace: subjects are matched per identity, not per pod.
        self.by_namespace: dict[str, dict[int, Any]] = defaultdict(dict)
        for ep in analysis.endpoints:
            self.by_namespace[ep.pod.namespace].setdefault(ep.identity, ep.labels)

    @cached_property
    def port_numbers(self) -> dict[tuple[str, int], dict[int, list[str]]]:
        """(port name, proto) -> container port number -> pods that give the name that number."""
        numbers: dict[tuple[str, int], dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        for ep in self.a.endpoints:
            for cp in ep.pod.ports:
                if cp.name:
                    key = (cp.name.lower(), int(parse_proto(cp.protocol)))
                    numbers[key][cp.container_port].append(ep.name)
        return numbers

    def rules_of(self, pol: PolicyDoc) -> list[PolicyRule]:
        return self.by_resource.get((pol.kind, pol.namespace, pol.name), [])

    def subjects(self, rule: PolicyRule) -> list[int]:
        """Pod identities the rule's subject selects."""
        namespaces = [rule.namespace] if rule.namespace else list(self.by_namespace)
        return [
            ident
            for ns in namespaces
            for ident, labels in self.by_namespace.get(ns, {}).items()
            if rule_selects(rule, labels, ns)
        ]

    def pods_of(self, identities: Sequence[int]) -> list[str]:
        ids = set(identities)
        return [ep.name for ep in self.a.endpoints if ep.identity in ids]

    # CL003
    def selects_no_pod(self, pol: PolicyDoc) -> Iterator[Finding]:
        for rule in self.rules_of(pol):
            if rule.node_selector or self.subjects(rule):
                continue
            key = "podSelector" if pol.kind == KNP else "endpointSelector"
            yield _finding(
                "CL003",
                pol,
                (*_rule_prefix(pol, rule), key),
                f"the {key} ({rule.subject}) selects no pod in the manifests: this policy has no effect",
                "check the labels against the pods (`cilia connectivity` lists them) and the policy's "
                "namespace (a CiliumNetworkPolicy only selects pods in its own namespace); if pods get "
                "these labels later (`cilia label pod …`), the policy applies from then on",
            )

    # CL004
    def peers_match_nothing(self, pol: PolicyDoc) -> Iterator[Finding]:
        cache = self.a.oracle.cache
        for rule in self.rules_of(pol):
            prefix = _rule_prefix(pol, rule)
            knp_peer_index: dict[tuple[str, int], int] = defaultdict(int)
            for entry in rule.entries:
                ref = entry.ref
                if pol.kind == KNP:
                    # One entry per from/to peer, in order: count them to find the peer's index.
                    j = knp_peer_index[(ref.section, ref.index)]
                    knp_peer_index[(ref.section, ref.index)] += 1
                    field = "from" if entry.direction == Direction.INGRESS else "to"
                    where = [(*prefix, ref.section, ref.index, field, j)] * len(entry.peers)
                else:
                    # ENDPOINTS peers come first, in fromEndpoints/toEndpoints order.
                    field = "fromEndpoints" if entry.direction == Direction.INGRESS else "toEndpoints"
                    where = [(*prefix, ref.section, ref.index, field, j) for j in range(len(entry.peers))]
                endpoint_peers = [p for p in entry.peers if p.kind is PeerKind.ENDPOINTS]
                for path, peer in zip(where, endpoint_peers, strict=False):
                    if cache.selections(peer.selector):
                        continue
                    yield _finding(
                        "CL004",
                        pol,
                        path,
                        f"this peer selector ({peer.selector}) matches no pod or reserved identity in the "
                        "manifests, so the rule allows or denies nothing for it",
                        "check the label keys/values and the namespace: in a CiliumNetworkPolicy a "
                        "selector without a namespace label only matches pods in the policy's namespace "
                        "(add k8s:io.kubernetes.pod.namespace: <ns> for another one)",
                    )

    # CL005
    def shadowed_allows(self, pol: PolicyDoc) -> Iterator[Finding]:
        oracle = self.a.oracle
        for rule in self.rules_of(pol):
            subjects = self.subjects(rule)
            if not subjects:
                continue
            for entry in rule.entries:
                if entry.deny or not self._selects_someone(entry):
                    continue
                if entry.ports and any(p.name for p in entry.ports):
                    continue
                denies: set[str] = set()
                shadowed = True
                for ident in subjects:
                    ms = oracle.endpoint_policy(ident).map_state
                    if any(entry.ref in e.rules for _, e in ms.items()):
                        shadowed = False
                        break
                    denies.update(
                        r.describe()
                        for k, e in ms.items()
                        if e.deny and k.direction == entry.direction
                        for r in e.rules
                    )
                if not shadowed or not denies:
                    continue
                yield _finding(
                    "CL005",
                    pol,
                    (*_rule_prefix(pol, rule), entry.ref.section, entry.ref.index),
                    "this allow is fully shadowed: every flow it allows is denied by "
                    f"{'; '.join(sorted(denies))} "
                    "(a deny always wins, whatever the order or policy kind)",
                    "narrow the deny (e.g. exclude these peers or ports from it) or remove this allow",
                )

    def _selects_someone(self, entry: PeerRule) -> bool:
        cache = self.a.oracle.cache
        return any(cache.selections(p.selector) for p in entry.peers)

    # CL007
    def egress_without_dns(self, pol: PolicyDoc) -> Iterator[Finding]:
        oracle = self.a.oracle
        mine = {r.ref for r in self.rules_of(pol)}
        if not any(r.has_section.get(Direction.EGRESS) for r in self.rules_of(pol)):
            return
        starved: list[int] = []
        for ident in dict.fromkeys(ep.identity for ep in self.a.endpoints):
            side = oracle.side(ident, Direction.EGRESS)
            if not side.enforced or not mine.intersection(side.default_deny_by):
                continue
            if not _allows_dns(side.map_state, self.a.allocator.lookup):
                starved.append(ident)
        if not starved:
            return
        rule = next(r for r in self.rules_of(pol) if r.has_section.get(Direction.EGRESS))
        if pol.kind == KNP:
            # A NetworkPolicy with policyTypes [Egress] and no egress rules is an egress deny-all.
            section = "egress" if pol.obj.spec and pol.obj.spec.egress else "policyTypes"
        else:
            section = "egress" if _has(pol, "egress") else "egressDeny"
        pods = self.pods_of(starved)
        shown = ", ".join(pods[:4]) + (f" and {len(pods) - 4} more" if len(pods) > 4 else "")
        yield _finding(
            "CL007",
            pol,
            (*_rule_prefix(pol, rule), section),
            f"this policy puts {shown} into egress default deny and no policy allows them DNS "
            "(53/UDP): name lookups will time out",
            "add an egress rule to the DNS server, e.g. toEndpoints "
            "{k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns} with toPorts 53/UDP "
            "(and 53/TCP); with toFQDNs also add `rules: {dns: [{matchPattern: '*'}]}`",
        )

    # CL008
    def named_port_conflicts(self, pol: PolicyDoc) -> Iterator[Finding]:
        numbers = self.port_numbers
        for path, name, protocol in _named_ports(pol):
            protos = (
                [Proto.TCP, Proto.UDP, Proto.SCTP] if protocol in ("", "ANY") else [parse_proto(protocol)]
            )
            for proto in protos:
                found = numbers.get((name.lower(), int(proto)), {})
                if len(found) < 2:
                    continue
                where = "; ".join(f"{n} on {', '.join(pods[:3])}" for n, pods in sorted(found.items()))
                yield _finding(
                    "CL008",
                    pol,
                    path,
                    f"named port {name!r} ({Proto(proto).name}) maps to different numbers across pods "
                    f"({where}): "
                    "ingress rules use each pod's own number, but an egress rule cannot resolve an ambiguous "
                    "name and matches nothing",
                    "give the port one number in every pod that names it, or use the number in the policy",
                )
                break


def _has(pol: PolicyDoc, section: str) -> bool:
    return any(getattr(r, section, None) for _, r in pol.rules())


_DNS_APPS = {"kube-dns", "coredns"}


def _allows_dns(ms: Any, labels_of: Any) -> bool:
    """Some egress allow covers 53/UDP: a UDP key on port 53 (any peer), an L3-only allow to every
    peer, or an L3-only allow to a pod that looks like the cluster DNS (k8s-app=kube-dns/coredns)."""
    for key, entry in ms.items():
        if key.direction != Direction.EGRESS or entry.deny:
            continue
        if key.proto == Proto.UDP:
            lo, hi = key.port_range
            if lo <= 53 <= hi:
                return True
        elif key.proto == 0:
            if key.identity == 0:
                return True
            labels = labels_of(key.identity)
            if labels is not None and any(lb.key == "k8s-app" and lb.value in _DNS_APPS for lb in labels):
                return True
    return False


def _named_ports(pol: PolicyDoc) -> Iterator[tuple[FieldPath, str, str]]:
    """(path of the port field, name, protocol) for every named port a policy writes."""
    if pol.kind == KNP:
        spec = pol.obj.spec
        for section in ("ingress", "egress"):
            for i, r in enumerate(getattr(spec, section, None) or ()):
                for k, p in enumerate(r.ports or ()):
                    if isinstance(p.port, str) and not p.port.isdigit():
                        yield ("spec", section, i, "ports", k, "port"), p.port, (p.protocol or "TCP").upper()
        return
    for prefix, rule in pol.rules():
        for attr, section in (("ingress", "ingress"), ("egress", "egress")):
            for i, entry in enumerate(getattr(rule, attr) or ()):
                for j, pr in enumerate(entry.to_ports or ()):
                    for k, pp in enumerate(pr.ports or ()):
                        if isinstance(pp.port, str) and pp.port and not pp.port.isdigit():
                            path = (*prefix, section, i, "toPorts", j, "ports", k, "port")
                            yield path, pp.port, (pp.protocol or "ANY").upper()


def duplicate_objects(documents: Sequence[Document]) -> Iterator[Finding]:
    """CL016: a document replaced by a later one of the same object (kubectl applies both in turn, so
    only the last one exists in the cluster; analysis keeps only that one too)."""
    for dup in find_duplicates(documents):
        doc = dup.earlier
        _, kind, namespace, name = dup.key
        what = f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"
        line, column = doc.position(("metadata", "name"))
        yield Finding(
            "CL016",
            doc.file,
            line,
            column,
            what,
            "metadata.name",
            f"{dup.describe} is defined again at {where(dup.later)}: the later document replaces this one "
            "(kubectl apply -f leaves only the last), so nothing written here takes effect",
            "give one of them another name, or merge them into one document",
        )


# --------------------------------------------------------------------------- entry point


def lint_result(result: LoadResult, options: Options = Options()) -> LintReport:
    """Lint loaded manifests (invalid objects are reported and left out of the cluster rules)."""
    unreadable = tuple(e for e in result.errors if e.unreadable)
    findings: list[Finding] = []
    valid_docs: list[Document] = []
    for e in result.errors:
        if not e.unreadable:
            findings.append(Finding("CL002", e.file, e.line, e.column, "", e.path, e.message, e.hint or ""))
    for doc in result.documents:
        errors, _ = validate_document(doc, options.flags)
        if errors:
            findings.extend(_validation_findings(doc, errors))
        else:
            valid_docs.append(doc)
    policies = parse_policies(valid_docs)
    for pol in policies:
        for rule in RAW_RULES:
            findings.extend(rule(pol))
    findings.extend(duplicate_objects(result.documents))
    valid = LoadResult(result.files, tuple(valid_docs), (), result.warnings)
    analysis = Analysis(build_cluster(valid), options)
    semantic = _Semantic(analysis, policies)
    kept = {id(d) for d in latest_documents(valid_docs)}  # a replaced policy has no rules of its own
    # "Selects no pod" is judged only where the input has workloads to judge by: a repository of
    # policies alone would otherwise warn on every selector (CL003, CL004: pods in the policy's
    # namespace, any pod for a clusterwide policy).
    workloads = {p.namespace for p in analysis.cluster.pods}
    for pol in (p for p in policies if id(p.doc) in kept):
        judged = bool(workloads) and (not pol.namespace or pol.namespace in workloads)
        for check in (
            semantic.selects_no_pod if judged else None,
            semantic.peers_match_nothing if judged else None,
            semantic.shadowed_allows,
            semantic.egress_without_dns,
            semantic.named_port_conflicts,
        ):
            if check is not None:
                findings.extend(check(pol))
        findings.extend(unknown_cidr_groups(pol, analysis.cluster.cidr_groups))
        findings.extend(unmatched_node_selectors(pol, semantic.rules_of(pol), analysis.nodes.declared))
        findings.extend(unmatched_node_peers(pol, semantic.rules_of(pol), analysis.nodes.declared))
    unique = sorted(set(silenced(findings, result.documents)), key=Finding.sort_key)  # lint-ignore
    return LintReport(result.files, len(result.documents), tuple(unique), unreadable, result.skipped)


def lint_paths(
    paths: Sequence[str | Path], options: Options = Options(), stdin: IO[bytes] | None = None
) -> LintReport:
    return lint_result(load_paths(paths, stdin), options)


def render_text(report: LintReport) -> str:
    lines = []
    for f in report.findings:
        lines.append(f"{f.location()}: {f.rule} {f.severity}: {f.policy}: {f.message}")
        if f.path:
            lines.append(f"    field: {f.path}")
        fix_lines = f.fix.splitlines() or [""]
        lines.append(f"    fix: {fix_lines[0]}")
        lines.extend(f"    {line}" if line else "" for line in fix_lines[1:])
    errors, warnings = report.count(Severity.ERROR), report.count(Severity.WARNING)
    lines.append(
        f"{len(report.files)} file(s), {report.objects} object(s): {errors} error(s), {warnings} warning(s)"
    )
    return "\n".join(lines) + "\n"
