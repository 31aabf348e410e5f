"""Label selector validation: Kubernetes ``ValidateLabelSelector`` and the CRD schema's checks.

Cilium validates its EndpointSelectors with the Kubernetes function after rewriting each key to its
extended form ``<source>.<key>`` (``k8s:app`` → ``k8s.app``, ``app`` → ``any.app``;
``pkg/labels/labels.go GetExtendedKeyFrom``), so the key syntax is judged on that form.
"""

from __future__ import annotations

from cilia.k8s import api
from cilia.k8s.names import SELECTOR_OPERATORS, label_value_errors, qualified_name_errors
from cilia.k8s.source import FieldPath

Finding = tuple[FieldPath, str]


def cilium_extended_key(key: str) -> str:
    """Cilium's ``GetExtendedKeyFrom``."""
    if not key:
        return "any."
    if key.startswith("$"):
        src, rest = "reserved", key[1:]
    elif ":" in key:
        src, rest = key.split(":", 1)
    else:
        src, rest = "", key
    rest = rest.split("=", 1)[0]
    return f"{src or 'any'}.{rest}"


def selector_findings(sel: api.LabelSelector, *, cilium: bool) -> list[Finding]:
    """Problems of one selector, with paths relative to the selector."""
    out: list[Finding] = []
    for key, value in (sel.match_labels or {}).items():
        path: FieldPath = ("matchLabels", key)
        check_key = cilium_extended_key(key) if cilium else key
        out.extend((path, f'Invalid value: "{key}": {m}') for m in qualified_name_errors(check_key))
        out.extend((path, f'Invalid value: "{value}": {m}') for m in label_value_errors(value or ""))
    for i, req in enumerate(sel.match_expressions or ()):
        base: FieldPath = ("matchExpressions", i)
        if req.operator not in SELECTOR_OPERATORS:
            supported = ", ".join(f'"{o}"' for o in SELECTOR_OPERATORS)
            out.append(
                ((*base, "operator"), f'Unsupported value: "{req.operator}": supported values: {supported}')
            )
        elif req.operator in ("In", "NotIn") and not req.values:
            out.append(
                ((*base, "values"), "Required value: must be specified when `operator` is 'In' or 'NotIn'")
            )
        elif req.operator in ("Exists", "DoesNotExist") and req.values:
            out.append(
                (
                    (*base, "values"),
                    "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
            )
        check_key = cilium_extended_key(req.key) if cilium else req.key
        out.extend(
            ((*base, "key"), f'Invalid value: "{req.key}": {m}') for m in qualified_name_errors(check_key)
        )
        for j, v in enumerate(req.values or ()):
            out.extend(((*base, "values", j), f'Invalid value: "{v}": {m}') for m in label_value_errors(v))
    return out
