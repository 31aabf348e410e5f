"""Corrections for the tutorial's non-Cilium fields, applied to the round-trip YAML tree.

* ``deny:`` in a rule becomes ``egressDeny`` (entries with ``to…`` peers) / ``ingressDeny``
  (entries with ``from…`` peers), plus ``enableDefaultDeny: {<dir>: false}`` when the rule has no
  allow section for that direction: a deny-only section would otherwise put the selected pods into
  default deny for the whole direction (semantics.md §4.2), which is not what "deny A→B" means.
* ``fromPorts`` (not a Cilium field) becomes ``toPorts``: ports always name the destination port.

Comments and key order of the file are kept; each change carries a YAML comment saying why.
ruamel.yaml is imported inside the functions, not with the module (the CLI imports this one at start-up).
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cilia.k8s.errors import Error
from cilia.k8s.frozen import frozen
from cilia.k8s.loader import discover, is_template, new_yaml, read_text
from cilia.k8s.source import FieldPath, format_path

if TYPE_CHECKING:
    from ruamel.yaml.comments import CommentedMap

POLICY_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")
SECTIONS = ("ingress", "ingressDeny", "egress", "egressDeny")
_WHY_DENY = {
    "egressDeny": 'cilia fix: "deny" is not a Cilium field; deny rules with to… peers belong in egressDeny',
    "ingressDeny": (
        'cilia fix: "deny" is not a Cilium field; deny rules with from… peers belong in ingressDeny'
    ),
}
_WHY_DEFAULT = (
    "cilia fix: a deny-only {d} section would put the selected pods into default deny for all {d};\n"
    "{d}: false cuts only the peers named in {d}Deny"
)
_WHY_PORTS = 'cilia fix: "fromPorts" is not a Cilium field; toPorts names the destination port'


@frozen
class Change:
    """One correction: where (field path in the object) and what was done."""

    path: str
    description: str


@frozen
class FixResult:
    """The corrected text of one file and the changes made (empty when nothing needed fixing)."""

    file: str
    text: str
    changes: tuple[Change, ...]


def _direction(entry: Any) -> str:
    keys = entry.keys() if isinstance(entry, dict) else ()
    return "ingressDeny" if any(str(k).startswith("from") for k in keys) else "egressDeny"


def _comment_before(mapping: CommentedMap, key: str, text: str, col: int) -> None:
    mapping.yaml_set_comment_before_after_key(key, before=text, indent=col)


def _rename_from_ports(rule: CommentedMap, base: FieldPath, col: int, changes: list[Change]) -> None:
    from ruamel.yaml.comments import CommentedMap

    for section in (*SECTIONS, "deny"):
        items = rule.get(section)
        if not isinstance(items, list):
            continue
        for i, entry in enumerate(items):
            if isinstance(entry, CommentedMap) and "fromPorts" in entry and "toPorts" not in entry:
                pos = list(entry.keys()).index("fromPorts")
                value = entry.pop("fromPorts")
                entry.insert(pos, "toPorts", value)
                entry_col = col + 2
                with contextlib.suppress(AttributeError):
                    entry_col = entry.lc.col
                _comment_before(entry, "toPorts", _WHY_PORTS, entry_col)
                changes.append(
                    Change(format_path((*base, section, i, "toPorts")), "renamed fromPorts to toPorts")
                )


def fix_rule(rule: CommentedMap, base: FieldPath = ("spec",)) -> list[Change]:
    """Correct one rule mapping in place; returns the changes made."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    changes: list[Change] = []
    if not isinstance(rule, CommentedMap):
        return changes
    col = 0
    try:
        first = next(iter(rule))
        col = rule.lc.key(first)[1]
    except (StopIteration, KeyError, TypeError, AttributeError):
        pass
    _rename_from_ports(rule, base, col, changes)
    if "deny" not in rule:
        return changes
    deny = rule["deny"]
    entries = list(deny) if isinstance(deny, list) else []
    by_dir: dict[str, list[Any]] = {"egressDeny": [], "ingressDeny": []}
    for entry in entries:
        by_dir[_direction(entry)].append(entry)
    pos = list(rule.keys()).index("deny")
    del rule["deny"]
    targets = [d for d in ("egressDeny", "ingressDeny") if by_dir[d]]
    for d in targets:
        if isinstance(rule.get(d), list):
            rule[d].extend(by_dir[d])
            changes.append(Change(format_path((*base, d)), f"moved deny entries into the existing {d}"))
            continue
        seq = deny if len(targets) == 1 and isinstance(deny, CommentedSeq) else CommentedSeq(by_dir[d])
        rule.insert(pos, d, seq)
        pos += 1
        _comment_before(rule, d, _WHY_DENY[d], col)
        changes.append(Change(format_path((*base, d)), f'replaced "deny" with {d}'))
    for d in targets:
        allow = d.removesuffix("Deny")
        edd = rule.get("enableDefaultDeny")
        if rule.get(allow) or (isinstance(edd, dict) and allow in edd):
            continue  # allow rules already decide this direction's default; leave it as written
        if not isinstance(edd, CommentedMap):
            edd = CommentedMap()
            rule["enableDefaultDeny"] = edd
        edd[allow] = False
        edd.yaml_set_comment_before_after_key(allow, before=_WHY_DEFAULT.format(d=allow), indent=col + 2)
        changes.append(
            Change(format_path((*base, "enableDefaultDeny", allow)), f"set enableDefaultDeny.{allow}: false")
        )
    if not targets:
        changes.append(Change(format_path((*base, "deny")), 'removed an empty "deny" field'))
    return changes


def fix_document(node: Any) -> list[Change]:
    """Correct every rule of one CNP/CCNP tree in place (other kinds are left alone)."""
    from ruamel.yaml.comments import CommentedMap

    if not isinstance(node, CommentedMap) or node.get("kind") not in POLICY_KINDS:
        return []
    changes: list[Change] = []
    if isinstance(node.get("spec"), CommentedMap):
        changes += fix_rule(node["spec"], ("spec",))
    specs = node.get("specs")
    if isinstance(specs, list):
        for i, rule in enumerate(specs):
            changes += fix_rule(rule, ("specs", i))
    return changes


def dump(node: Any) -> str:
    """Round-trip YAML text of one node."""
    out = io.StringIO()
    new_yaml().dump(node, out)
    return out.getvalue()


def fix_text(text: str, file: str = "<input>") -> FixResult:
    """Correct every document of one file's text (``kind: List`` items included)."""
    from ruamel.yaml.comments import CommentedMap

    yaml = new_yaml()
    try:
        docs = list(yaml.load_all(text))
    except Exception as exc:  # the loader reports YAML errors with positions; here just refuse
        # ruamel.yaml (kept for rewriting: it keeps comments) is stricter than the reader (libyaml) on
        # tabs between tokens: say where, so that the user can fix what the reader accepted
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        tab = "'\\t'" in str(problem)
        raise Error(
            f"cannot fix: the YAML rewriter (ruamel.yaml, keeping comments) cannot read the file: {problem}",
            file=file,
            line=mark.line + 1 if mark is not None else 0,
            column=mark.column + 1 if mark is not None else 0,
            hint="replace the tab with spaces" if tab else None,
        ) from exc
    changes: list[Change] = []
    for node in docs:
        if isinstance(node, CommentedMap) and str(node.get("kind", "")).endswith("List"):
            for item in node.get("items") or ():
                changes += fix_document(item)
        else:
            changes += fix_document(node)
    if not changes:
        return FixResult(file, text, ())
    out = io.StringIO()
    yaml.dump_all(docs, out)
    return FixResult(file, out.getvalue(), tuple(changes))


def fix_paths(paths: list[str | Path], *, write: bool = False) -> list[FixResult]:
    """Fix every file under ``paths``; with ``write`` the changed files are rewritten in place."""
    files, errors = discover(paths)
    if errors:
        raise errors[0]
    results = []
    for file in files:
        text = read_text(file)
        if is_template(text):
            continue  # a Helm/Go template is no manifest (the loader skips it too)
        result = fix_text(text, file)
        if write and result.changes and file != "-":
            Path(file).write_text(result.text, encoding="utf-8")
        results.append(result)
    return results


def deny_hint(node: Any, rule_path: FieldPath, *, has_sections: bool) -> str:
    """The explanation and corrected YAML shown with an ``unknown field "…deny"`` error (``node``: the
    object's round-trip tree, :attr:`~cilia.k8s.source.Document.node`)."""
    from ruamel.yaml.comments import CommentedMap

    rule = node
    for part in rule_path:
        rule = rule[part]
    fixed = copy.deepcopy(rule)
    fix_rule(fixed, rule_path)
    name = format_path(rule_path)
    snippet = dump(CommentedMap([(rule_path[-1] if isinstance(rule_path[-1], str) else "spec", fixed)]))
    fate = (
        "its deny rules are silently lost;\nonly the other sections are enforced"
        if has_sections
        else "the rule has no section left,\nwhich Cilium 1.18 rejects (VALID=False): nothing is denied"
    )
    return (
        'Cilium has no "deny" field: deny rules are egressDeny (to… peers) or ingressDeny (from… peers).\n'
        "kubectl apply (strict field validation) refuses this object. A client that does not validate\n"
        f"strictly lets the API server prune the field, and then {fate}.\n"
        f"Corrected {name} (cilia validate --fix):\n" + _indent(snippet.rstrip(), "  ")
    )


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())
