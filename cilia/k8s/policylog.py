"""``spec.log`` of a Cilium rule (Cilium 1.18, cilium/cilium#39902): ``log: {value: STRING}``, a
free-form string that Hubble shows as ``policy_log`` on the flows the rule decides.

The CRD limits ``value`` to 32 characters matching ``^\\PC*$`` (no character of Unicode category
"other": control, format, surrogate, private use), both checked by the API server.
"""

from __future__ import annotations

from cilia.k8s import api
from cilia.k8s.source import FieldPath, format_path

MAX_LENGTH = 32
PATTERN = r"^\PC*$"
# Go's unicode.C (what \pC means in the API server's regexp): Cc, Cf, Co, Cs — not unassigned code points
_OTHER = frozenset({"Cc", "Cf", "Co", "Cs"})


def log_findings(rule: api.Rule, where: FieldPath) -> list[tuple[FieldPath, str]]:
    """The API server's findings on ``log.value`` (paths relative to the rule at ``where``)."""
    if rule.log is None or not rule.log.value:
        return []
    import unicodedata  # here: only rules with a log value need it (start-up, issue 15)

    value = rule.log.value
    path: FieldPath = ("log", "value")
    out: list[tuple[FieldPath, str]] = []
    if len(value) > MAX_LENGTH:
        out.append((path, f"Too long: may not be longer than {MAX_LENGTH}"))
    if any(unicodedata.category(ch) in _OTHER for ch in value):
        shown = value.encode("unicode_escape").decode("ascii")
        out.append(
            (path, f'Invalid value: "{shown}": {format_path((*where, *path))} in body should match '
             f"'{PATTERN}'")
        )
    return out


def rule_log(rule: api.Rule) -> str:
    """The rule's log value ("" when it has none)."""
    return rule.log.value if rule.log is not None and rule.log.value else ""
