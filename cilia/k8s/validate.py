"""Strict validation of manifests as ``kubectl apply`` (strict field validation, the CRD schemas) and
Cilium 1.18 would judge them: structure first (unknown fields, wrong types), then the semantic rules
of semantics.md §1.1, §1.4–§1.6 and, for NetworkPolicy, what the API server validates (§6).

Validation never stops at the first problem: every error is collected with file, line, column and
field path. Non-policy kinds are checked only for the fields cilia reads; kinds cilia does not use
are accepted and listed as warnings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from cilia.k8s import api, cidrgroup, ipfamilies, securitycontext
from cilia.k8s.cilium_rules import NO_SECTION, SECTIONS, Flags, rule_findings
from cilia.k8s.duplicates import duplicate_warnings
from cilia.k8s.errors import Error, ValidationReport
from cilia.k8s.kinds import (
    CCNP,
    CNP,
    KNP,
    OBJECT_MODELS,
    POLICY_KINDS,
    DaemonSetModel,
    DeploymentModel,
    StatefulSetModel,
)
from cilia.k8s.knp_rules import spec_findings
from cilia.k8s.l7checks import l7_problems
from cilia.k8s.labelsel import Finding, selector_findings
from cilia.k8s.loader import LoadResult, load_paths
from cilia.k8s.names import (
    annotations_errors,
    dns1123_label_errors,
    labels_errors,
    namespace_errors,
    object_name_errors,
)
from cilia.k8s.netaddr import parse_addr
from cilia.k8s.nodes import node_address_findings
from cilia.k8s.policylog import log_findings
from cilia.k8s.source import Document, FieldPath, format_path
from cilia.k8s.structure import Problem, check_model

# Kinds whose objects have no namespace (a namespace written on them is not checked).
CLUSTER_SCOPED_KINDS = frozenset({"Namespace", "Node", CCNP, cidrgroup.KIND})
_RULE_KEYS = {"endpointSelector", "nodeSelector", *(d.section for d in SECTIONS)}


def is_policy(doc: Document) -> bool:
    """Whether the document is one of the three policy kinds."""
    return doc.kind in POLICY_KINDS


def _error(doc: Document, path: FieldPath, message: str, hint: str | None = None) -> Error:
    line, col = doc.position(path)
    return Error(message, file=doc.file, line=line, column=col, path=format_path(path), hint=hint)


def _rule_paths(data: Any) -> list[FieldPath]:
    paths: list[FieldPath] = []
    if isinstance(data, dict):
        if isinstance(data.get("spec"), dict):
            paths.append(("spec",))
        if isinstance(data.get("specs"), list):
            paths += [("specs", i) for i, r in enumerate(data["specs"]) if isinstance(r, dict)]
    return paths


def _structure_hint(doc: Document, problem: Problem) -> str | None:
    path = problem.path
    if not problem.message.startswith("unknown field") or not path:
        return None
    key = path[-1]
    parent = path[:-1]
    if key == "deny" and doc.kind in (CNP, CCNP) and parent in _rule_paths(doc.data):
        rule = doc.data
        for part in parent:
            rule = rule[part]
        has_sections = any(rule.get(d.section) for d in SECTIONS)
        from cilia.k8s.fix import deny_hint  # here: only a deny: error needs the fixer (start-up)

        return deny_hint(doc.node, parent, has_sections=has_sections)
    if key == "fromPorts":
        return (
            'Cilium has no "fromPorts": ports always name the destination port and go in toPorts '
            "(cilia validate --fix renames it)"
        )
    if key == "auth":
        return "the field was renamed: write authentication: {mode: required}"
    if key == "description" and parent == ("metadata",):
        return "description belongs under spec (spec.description)"
    if isinstance(key, str) and key.lower() in {k.lower() for k in _RULE_KEYS} and key not in _RULE_KEYS:
        right = next(k for k in _RULE_KEYS if k.lower() == key.lower())
        return f'field names are case-sensitive: did you mean "{right}"?'
    return None


# Findings that only say "something is missing": after an invalid field was removed from an object, these
# are usually its consequence (the seed's `deny:` removed leaves a rule with no section).
_MISSING = (
    NO_SECTION,
    "rule must have one of EndpointSelector or NodeSelector",
    "one of cidr, cidrGroupRef, or cidrGroupSelector is required",
    "must validate one and only one schema",
    "Required value",
)


def _consequence(path: FieldPath, message: str, removed: list[FieldPath]) -> bool:
    """A "missing" finding on an object that lost a child to pruning is a consequence, not news."""
    if not message.startswith(_MISSING) and "empty policy" not in message:
        return False
    return any(len(r) > len(path) and r[: len(path)] == path for r in removed)


def _meta_errors(doc: Document, kind: str) -> list[Error]:
    """``metadata`` as the API server checks it for every kind: the name by the kind's rule, the
    namespace (a DNS-1123 label), label keys and values, annotation keys."""
    meta = doc.data.get("metadata")
    if not isinstance(meta, dict):
        return []  # the structure check reports it
    name = meta.get("name")
    generate = meta.get("generateName") if kind not in (CNP, CCNP) else None
    errors: list[Error] = []
    if not name and not generate:
        msg = (
            f"{kind} must have name"
            if kind in (CNP, CCNP)
            else "Required value: name or generateName is required"
        )
        return [_error(doc, ("metadata", "name"), msg)]
    namespace = meta.get("namespace")
    ns_problems = namespace_errors(namespace) if isinstance(namespace, str) and namespace else []
    if ns_problems and kind not in CLUSTER_SCOPED_KINDS:
        errors += [
            _error(doc, ("metadata", "namespace"), f'Invalid value: "{namespace}": {m}') for m in ns_problems
        ]
    elif isinstance(name, str) and name:
        errors += [
            _error(doc, ("metadata", "name"), f'Invalid value: "{name}": {m}')
            for m in object_name_errors(kind, name)
        ]
    elif isinstance(generate, str):
        errors += [
            _error(doc, ("metadata", "generateName"), f'Invalid value: "{generate}": {m}')
            for m in object_name_errors(kind, generate, generate=True)
        ]
    errors += _labels_errors(doc, ("metadata",), meta)
    return errors


def _labels_errors(doc: Document, where: FieldPath, meta: dict[str, Any]) -> list[Error]:
    """Label and annotation problems of one ``metadata`` (or template metadata) at ``where``."""
    errors: list[Error] = []
    for field, check in (("labels", labels_errors), ("annotations", annotations_errors)):
        if field in meta and meta[field] is not None:
            for key, message in check(meta[field]):
                path: FieldPath = (*where, field, key) if key else (*where, field)
                errors.append(_error(doc, path, message))
    return errors


def _workload_errors(doc: Document) -> list[Error]:
    """What the API server checks of a Pod, the pod template of a Deployment, StatefulSet or DaemonSet,
    or a Service beyond metadata: container names (DNS-1123 labels, unique), template labels, a
    Service's selector."""
    data = doc.data
    errors: list[Error] = []
    spec_path: FieldPath = ()
    if doc.kind == "Pod":
        spec_path = ("spec",)
    elif doc.kind in ("Deployment", "StatefulSet", "DaemonSet"):
        spec_path = ("spec", "template", "spec")
        tmpl = (data.get("spec") or {}).get("template") if isinstance(data.get("spec"), dict) else None
        if isinstance(tmpl, dict) and isinstance(tmpl.get("metadata"), dict):
            errors += _labels_errors(doc, ("spec", "template", "metadata"), tmpl["metadata"])
    elif doc.kind == "Service":
        spec = data.get("spec")
        selector = spec.get("selector") if isinstance(spec, dict) else None
        if selector is not None:
            errors += [
                _error(doc, ("spec", "selector", key) if key else ("spec", "selector"), m)
                for key, m in labels_errors(selector)
            ]
        cluster_ip = spec.get("clusterIP") if isinstance(spec, dict) else None
        if isinstance(cluster_ip, str) and cluster_ip not in ("", "None"):
            errors += _ip_errors(doc, ("spec", "clusterIP"), cluster_ip)
        errors += [_error(doc, path, m) for path, m in ipfamilies.findings(spec)]
        return errors
    elif doc.kind in ("Endpoints", "EndpointSlice"):
        return [e for path, ip in _endpoint_ips(data) for e in _ip_errors(doc, path, ip)]
    elif doc.kind == "Node":
        return [_error(doc, path, m) for path, m in node_address_findings(data)]
    status = data.get("status")
    pod_ip = status.get("podIP") if doc.kind == "Pod" and isinstance(status, dict) else None
    if isinstance(pod_ip, str) and pod_ip:
        errors += _ip_errors(doc, ("status", "podIP"), pod_ip)
    pod_ips = status.get("podIPs") if doc.kind == "Pod" and isinstance(status, dict) else None
    for i, item in enumerate(pod_ips if isinstance(pod_ips, list) else []):
        ip = item.get("ip") if isinstance(item, dict) else None
        if isinstance(ip, str) and ip:
            errors += _ip_errors(doc, ("status", "podIPs", i, "ip"), ip)
    if spec_path:
        node: Any = data
        for part in spec_path:
            node = node.get(part) if isinstance(node, dict) else None
        containers = node.get("containers") if isinstance(node, dict) else None
        seen: set[str] = set()
        for i, c in enumerate(containers if isinstance(containers, list) else ()):
            cname = c.get("name") if isinstance(c, dict) else None
            if not isinstance(cname, str):
                continue
            path: FieldPath = (*spec_path, "containers", i, "name")
            errors += [
                _error(doc, path, f'Invalid value: "{cname}": {m}') for m in dns1123_label_errors(cname)
            ]
            if cname in seen:
                errors.append(_error(doc, path, f'Duplicate value: "{cname}"'))
            seen.add(cname)
        errors += _security_errors(doc, spec_path, node, containers)
    return errors


def _security_errors(doc: Document, spec_path: FieldPath, spec: Any, containers: Any) -> list[Error]:
    """The pod's and each container's ``securityContext`` (:mod:`cilia.k8s.securitycontext`)."""
    found = securitycontext.pod_problems(
        spec.get("securityContext") if isinstance(spec, dict) else None, (*spec_path, "securityContext"))
    for i, c in enumerate(containers if isinstance(containers, list) else ()):
        if isinstance(c, dict):
            found += securitycontext.container_problems(
                c.get("securityContext"), (*spec_path, "containers", i, "securityContext"))
    return [_error(doc, path, message) for path, message in found]


def _ip_errors(doc: Document, path: FieldPath, value: str) -> list[Error]:
    """An address field: an IP as Go parses it (no zones, no leading zeros, no surrounding text)."""
    if parse_addr(value) is not None:
        return []
    message = f'Invalid value: "{value}": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)'
    return [_error(doc, path, message)]


def _endpoint_ips(data: dict[str, Any]) -> list[tuple[FieldPath, str]]:
    """(path, address) of every address of an Endpoints or EndpointSlice object."""
    out: list[tuple[FieldPath, str]] = []
    for i, subset in enumerate(data.get("subsets") or () if isinstance(data.get("subsets"), list) else ()):
        for j, a in enumerate(subset.get("addresses") or () if isinstance(subset, dict) else ()):
            if isinstance(a, dict) and isinstance(a.get("ip"), str):
                out.append((("subsets", i, "addresses", j, "ip"), a["ip"]))
    for i, ep in enumerate(data.get("endpoints") or () if isinstance(data.get("endpoints"), list) else ()):
        for j, addr in enumerate(ep.get("addresses") or () if isinstance(ep, dict) else ()):
            if isinstance(addr, str):
                out.append((("endpoints", i, "addresses", j), addr))
    return out


def _policy_errors(doc: Document, flags: Flags) -> list[Error]:
    kind = doc.kind
    model_type = api.NetworkPolicy if kind == KNP else api.CiliumNetworkPolicy
    model, problems, _ = check_model(model_type, doc.data)
    errors = [_error(doc, p.path, p.message, _structure_hint(doc, p)) for p in problems]
    removed = [p.path for p in problems]
    if model is None:
        return errors
    errors += _meta_errors(doc, kind)
    findings: list[Finding] = []
    if isinstance(model, api.CiliumNetworkPolicy):
        if model.spec is None and model.specs is None:
            findings.append(((), f"Invalid {kind} spec(s): empty policy"))
        if model.spec is not None:
            findings += [
                (("spec", *p), m)
                for p, m in rule_findings(model.spec, kind=kind, flags=flags, where=("spec",))
            ]
        for i, rule in enumerate(model.specs or ()):
            base: FieldPath = ("specs", i)
            findings += [(base + p, m) for p, m in rule_findings(rule, kind=kind, flags=flags, where=base)]
        # spec.log (Cilium 1.18): its value's CRD limits
        for base, rule in ([(("spec",), model.spec)] if model.spec is not None else []) + [
            (("specs", i), r) for i, r in enumerate(model.specs or ())
        ]:
            findings += [(base + p, m) for p, m in log_findings(rule, base)]
    elif model.spec is not None:
        findings += [(("spec", *p), m) for p, m in spec_findings(model.spec)]
    errors += [_error(doc, p, m) for p, m in findings if not _consequence(p, m, removed)]
    return errors


def validate_document(doc: Document, flags: Flags = Flags()) -> tuple[list[Error], list[str]]:
    """The errors and warnings of one object."""
    data = doc.data
    missing = [k for k in ("apiVersion", "kind") if not isinstance(data.get(k), str) or not data.get(k)]
    if missing:
        errors = []
        for k in missing:
            wrong = next(
                (key for key in data if isinstance(key, str) and key.lower() == k.lower() and key != k), None
            )
            hint = f'found "{wrong}": field names are case-sensitive' if wrong else None
            if data.get(k) not in (None, "") and not wrong:
                got = type(data[k]).__name__
                errors.append(_error(doc, (k,), f"{k} must be a string, got {got}", f"write it as {k}: TEXT"))
                continue
            errors.append(_error(doc, (wrong,) if wrong else (), f"{k} not set", hint))
        return errors, []
    kind, version = doc.kind, doc.api_version
    if kind in POLICY_KINDS:
        if version != POLICY_KINDS[kind]:
            return [
                _error(
                    doc,
                    ("apiVersion",),
                    f'no matches for kind "{kind}" in version "{version}"',
                    f"use apiVersion: {POLICY_KINDS[kind]}",
                )
            ], []
        errors = _policy_errors(doc, flags)
        return errors, ([] if errors else _l7_warnings(doc))
    if kind == cidrgroup.KIND:
        errors, warnings = cidrgroup.document_errors(doc)
        if version in cidrgroup.API_VERSIONS:
            errors += _meta_errors(doc, kind)
        return errors, warnings
    if kind in OBJECT_MODELS:
        model_type, versions = OBJECT_MODELS[kind]
        if version not in versions:
            return [_error(doc, ("apiVersion",), f'no matches for kind "{kind}" in version "{version}"')], []
        model, problems, _ = check_model(model_type, data)
        errors = [_error(doc, p.path, p.message) for p in problems]
        if model is not None:
            errors += _meta_errors(doc, kind) + _workload_errors(doc)
        if isinstance(model, DeploymentModel | StatefulSetModel | DaemonSetModel):
            errors += [_error(doc, p, m) for p, m in _deployment_findings(model)]
        return errors, []
    if kind == "Secret" and version == "v1":
        return [], []  # read for HTTP headerMatches secrets (cilia.k8s.secrets)
    near = _near_policy_kind(kind)
    if near:
        # a misspelt policy kind must not pass as "some other object": kubectl would refuse it too
        return [
            _error(
                doc,
                ("kind",),
                f'no matches for kind "{kind}" in version "{version}"',
                f'did you mean "{near}"?',
            )
        ], []
    where = f"{doc.file}:{doc.line}"
    return [], [f"{where}: {kind} {doc.name or '<no name>'} is not used by cilia; ignored"]


def _l7_warnings(doc: Document) -> list[str]:
    """What ``cilia apply`` will refuse in a valid policy: L7 parts cilia cannot enforce
    (:mod:`cilia.k8s.l7checks`; Cilium accepts them, so they are warnings here)."""
    if doc.kind not in (CNP, CCNP):
        return []
    return [
        f"{doc.file}:{doc.position(p.path)[0]}: {format_path(p.path)}: {p.message}; `cilia apply` "
        + ("needs --allow-l4-only-l7 for it" if p.l4_only else "refuses it")
        for p in l7_problems(doc.data)
    ]


def _near_policy_kind(kind: str) -> str | None:
    """The policy kind that ``kind`` is probably a misspelling of, if any."""
    for known in POLICY_KINDS:
        if kind.lower() == known.lower():
            return known
    import difflib  # here: only a misspelt kind needs it (start-up, issue 15)

    close = difflib.get_close_matches(kind, list(POLICY_KINDS), n=1, cutoff=0.85)
    return close[0] if close else None


def _deployment_findings(model: DeploymentModel | StatefulSetModel | DaemonSetModel) -> list[Finding]:
    """apps/v1 requires a selector (Deployment, StatefulSet, DaemonSet), and it must select the
    template's own labels."""
    selector = model.spec.selector
    if selector is None:
        return [(("spec", "selector"), "Required value")]
    bad = selector_findings(selector, cilium=False)
    if bad:
        return [(("spec", "selector", *p), m) for p, m in bad]
    labels = model.spec.template.metadata.labels or {}
    ok = all(labels.get(k) == (v or "") for k, v in (selector.match_labels or {}).items())
    for req in selector.match_expressions or ():
        has, value = req.key in labels, labels.get(req.key)
        ok = ok and {
            "In": has and value in (req.values or ()),
            "NotIn": not has or value not in (req.values or ()),
            "Exists": has,
            "DoesNotExist": not has,
        }.get(req.operator, False)
    if not ok:
        return [
            (
                ("spec", "template", "metadata", "labels"),
                "Invalid value: `selector` does not match template `labels`",
            )
        ]
    return []


def validate_result(result: LoadResult, flags: Flags = Flags()) -> ValidationReport:
    """Validate everything a loader returned (load errors included)."""
    errors = list(result.errors)
    warnings = list(result.warnings)
    for doc in result.documents:
        e, w = validate_document(doc, flags)
        errors += e
        warnings += w
    warnings += duplicate_warnings(result.documents)  # the later one is what kubectl would leave
    return ValidationReport(result.files, len(result.documents), tuple(errors), tuple(warnings))


def validate_paths(
    paths: Sequence[str | Path], *, stdin: IO[bytes] | None = None, flags: Flags = Flags()
) -> ValidationReport:
    """Load and validate files, directories and ``-`` (stdin)."""
    return validate_result(load_paths(paths, stdin), flags)
