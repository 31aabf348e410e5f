"""``apply`` / ``delete -f`` as library calls: read, validate everything, then one store transaction.

Nothing is stored unless every document of every input validates (as ``cilia validate`` judges it);
with ``fix`` the inputs are first corrected as ``cilia validate --fix`` would (the seed's ``deny:``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cilia.k8s.errors import Error, ValidationReport
from cilia.k8s.fix import FixResult, fix_text
from cilia.k8s.l7checks import L4_ONLY_ANNOTATION, document_l7_errors
from cilia.k8s.loader import LoadResult, discover, load_text, read_text
from cilia.k8s.names import namespace_errors
from cilia.k8s.validate import validate_result
from cilia.store import API_KINDS, Delete, Put, Store, key_for_object
from cilia.store.keys import ObjectKey

# Kinds accepted in manifests that a node has no use for (kubectl users expect them to pass).
IGNORED_KINDS = frozenset({"ServiceAccount", "EndpointSlice", "ConfigMap", "Secret"})


@dataclass(frozen=True)
class ObjectResult:
    key: ObjectKey
    kind: str
    action: str  # created | configured | unchanged | deleted | not found

    def describe(self) -> str:
        group = {"Deployment": "deployment.apps", "CiliumNetworkPolicy": "ciliumnetworkpolicy.cilium.io",
                 "CiliumClusterwideNetworkPolicy": "ciliumclusterwidenetworkpolicy.cilium.io",
                 "NetworkPolicy": "networkpolicy.networking.k8s.io",
                 "CiliumCIDRGroup": "ciliumcidrgroup.cilium.io"}.get(self.kind, self.kind.lower())
        return f"{group}/{self.key.name} {self.action}"


@dataclass(frozen=True)
class ApplyOutcome:
    """What an apply/delete did (``revision`` 0: nothing was written)."""

    report: ValidationReport
    results: tuple[ObjectResult, ...] = ()
    revision: int = 0
    fixes: tuple[FixResult, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    objects: tuple[tuple[ObjectKey, dict[str, Any]], ...] = ()  # dry run: what would be stored

    @property
    def ok(self) -> bool:
        return self.report.valid

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.report.valid,
            "revision": self.revision,
            "errors": [e.to_dict() for e in self.report.errors],
            "objects": [{"kind": r.kind, "namespace": r.key.namespace, "name": r.key.name, "action": r.action}
                        for r in self.results],
            "fixes": [{"file": f.file, "changes": [c.description for c in f.changes]} for f in self.fixes
                      if f.changes],
            "warnings": list(self.warnings),
        }


def load_manifests(
    paths: Sequence[str | Path], *, fix: bool = False, stdin: IO[bytes] | None = None
) -> tuple[ValidationReport, LoadResult, tuple[FixResult, ...]]:
    """Read and validate every input (applying the ``--fix`` corrections first if asked)."""
    files, errors = discover(paths)
    fixes: list[FixResult] = []
    documents = []
    warnings: list[str] = []
    all_errors: list[Error] = list(errors)
    for file in files:
        try:
            text = read_text(file, stdin if stdin is not None else sys.stdin.buffer)
        except Error as e:
            all_errors.append(e)
            continue
        if fix:
            try:
                fixed = fix_text(text, file)
                fixes.append(fixed)
                text = fixed.text
            except Error:
                pass  # unreadable YAML: the loader below reports it with its position
        loaded = load_text(text, file)
        documents.extend(loaded.documents)
        all_errors.extend(loaded.errors)
        warnings.extend(loaded.warnings)
    result = LoadResult(tuple(files), tuple(documents), tuple(all_errors), tuple(warnings))
    return validate_result(result), result, tuple(fixes)


def _namespace_report(namespace: str) -> ValidationReport | None:
    """A report with one error when the default namespace (``-n``) is not a valid namespace name."""
    problems = namespace_errors(namespace)
    if not problems:
        return None
    errors = tuple(Error(f'Invalid value: "{namespace}": {m}', path="--namespace") for m in problems)
    return ValidationReport((), 0, errors)


def _l7_check(result: LoadResult, allow_l4_only: bool) -> tuple[list[Error], set[int]]:
    """L7 refusals of every document, and the documents (by index) stored as L4-only L7."""
    errors: list[Error] = []
    l4_only: set[int] = set()
    for i, doc in enumerate(result.documents):
        errs, marked = document_l7_errors(doc, allow_l4_only=allow_l4_only)
        errors += errs
        if marked:
            l4_only.add(i)
    return errors, l4_only


def _objects(
    result: LoadResult, default_namespace: str, l4_only: set[int] | frozenset[int] = frozenset()
) -> tuple[list[dict[str, Any]], list[str]]:
    objs, notes = [], []
    for i, doc in enumerate(result.documents):
        if doc.kind in API_KINDS:
            obj = dict(doc.data)
            meta = dict(obj.get("metadata") or {})
            if i in l4_only:  # the user accepted L4-only enforcement of these L7 rules: say so on the object
                meta["annotations"] = {**(meta.get("annotations") or {}), L4_ONLY_ANNOTATION: "true"}
            if API_KINDS[doc.kind].namespaced and not meta.get("namespace"):
                meta["namespace"] = default_namespace
            obj["metadata"] = meta
            objs.append(obj)
        else:
            notes.append(f"{doc.file}:{doc.line}: {doc.kind} {doc.name}: not used by a cilia node; skipped")
    return objs, notes


def apply(
    store: Store, paths: Sequence[str | Path], *, fix: bool = False, namespace: str = "default",
    stdin: IO[bytes] | None = None, allow_l4_only_l7: bool = False, dry_run: bool = False,
    check: Callable[[Mapping[ObjectKey, dict[str, Any]]], list[str]] | None = None,
) -> ApplyOutcome:
    """Validate every input, then store every object in one transaction (or nothing at all).
    L7 rules cilia cannot enforce are refused (:mod:`cilia.k8s.l7checks`); with ``allow_l4_only_l7``
    Kafka/l7proto/listener rules and host policies' DNS rules are stored, marked with the L4-only
    annotation. ``dry_run``: store nothing; the outcome's ``objects`` are what would be stored.
    ``check(objects)`` says why the objects must not be stored (e.g.
    :func:`cilia.agent.hostsafety.store_lockouts`): refused then."""
    bad = _namespace_report(namespace)
    if bad is not None:
        return ApplyOutcome(bad)
    report, result, fixes = load_manifests(paths, fix=fix, stdin=stdin)
    if not report.valid:
        return ApplyOutcome(report, fixes=fixes)
    l7_errors, l4_only = _l7_check(result, allow_l4_only_l7)
    if l7_errors:
        return ApplyOutcome(ValidationReport(report.files, report.objects, tuple(l7_errors)), fixes=fixes)
    objs, notes = _objects(result, namespace, l4_only)
    latest: dict[ObjectKey, dict[str, Any]] = {}
    for obj in objs:  # a later document for the same object wins, as with kubectl
        latest[key_for_object(obj, namespace)] = obj
    problems = check(latest) if check is not None else []
    if problems:
        errors = tuple(Error(p, path="host firewall") for p in problems)
        return ApplyOutcome(ValidationReport(report.files, report.objects, errors), fixes=fixes)
    results, ops = [], []
    for key, obj in latest.items():
        old = store.get(key)
        action = "created" if old is None else ("unchanged" if old.value == obj else "configured")
        results.append(ObjectResult(key, obj["kind"], action))
        if action != "unchanged":
            ops.append(Put(key, obj))
    if dry_run:
        warnings = tuple(report.warnings) + tuple(notes)
        return ApplyOutcome(report, tuple(results), 0, fixes, warnings, tuple(latest.items()))
    revision = store.txn(ops) if ops else store.revision
    return ApplyOutcome(report, tuple(results), revision, fixes, tuple(report.warnings) + tuple(notes))


def delete(
    store: Store, paths: Sequence[str | Path], *, namespace: str = "default", ignore_not_found: bool = False,
    stdin: IO[bytes] | None = None,
) -> ApplyOutcome:
    """Delete every object the manifests name, in one transaction."""
    bad = _namespace_report(namespace)
    if bad is not None:
        return ApplyOutcome(bad)
    report, result, _ = load_manifests(paths, stdin=stdin)
    if not report.valid:
        return ApplyOutcome(report)
    objs, notes = _objects(result, namespace)
    results, ops = [], []
    for obj in objs:
        key = key_for_object(obj, namespace)
        exists = store.get(key) is not None
        results.append(ObjectResult(key, obj["kind"], "deleted" if exists else "not found"))
        if exists:
            ops.append(Delete(key, missing_ok=True))
    missing = [r for r in results if r.action == "not found"]
    if missing and not ignore_not_found:
        errors = tuple(Error(f'{r.kind} "{r.key.name}" not found', path=str(r.key)) for r in missing)
        return ApplyOutcome(ValidationReport(report.files, report.objects, errors), tuple(results))
    revision = store.txn(ops) if ops else store.revision
    return ApplyOutcome(report, tuple(results), revision, warnings=tuple(notes))


def delete_keys(store: Store, keys: Sequence[ObjectKey]) -> ApplyOutcome:
    """Delete these objects in one transaction."""
    kinds = {v: k for k, v in API_KINDS.items()}
    results = tuple(ObjectResult(k, kinds.get(k.kind, k.kind.value), "deleted") for k in keys)
    revision = store.txn([Delete(k, missing_ok=True) for k in keys]) if keys else store.revision
    return ApplyOutcome(ValidationReport((), len(keys), ()), results, revision)
