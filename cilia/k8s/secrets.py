"""Secrets in manifests, for what cilia reads of them: the value an HTTP ``headerMatches`` entry
with a ``secret`` reference compares a header with.

Cilium's proxy uses a Secret's value only when the Secret holds exactly one item (its ``data``,
base64, or ``stringData``); other Secrets give no value, and the header match then falls back to
its inline ``value`` or never matches (fail closed).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

from cilia.k8s.kinds import DEFAULT_NAMESPACE, Lenient, Meta
from cilia.k8s.record import Field

KIND = "Secret"


class SecretModel(Lenient):
    metadata: Meta
    data: dict[str, str] | None = None
    string_data: dict[str, str] | None = Field(default=None, alias="stringData")


def secret_value(model: SecretModel) -> str | None:
    """The Secret's single value (None: not exactly one item, or not base64/UTF-8)."""
    items: dict[str, str] = {}
    for k, v in (model.data or {}).items():
        try:
            items[k] = base64.b64decode(v, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
    items.update(model.string_data or {})
    if len(items) != 1:
        return None
    return next(iter(items.values()))


def secret_values(docs: Iterable[Any]) -> tuple[tuple[tuple[str, str], str], ...]:
    """``((namespace, name), value)`` of every Secret document with a usable value (a later
    document for the same Secret wins), sorted."""
    out: dict[tuple[str, str], str] = {}
    for doc in docs:
        if doc.kind != KIND:
            continue
        model = SecretModel.model_validate(doc.data)
        value = secret_value(model)
        key = (model.metadata.namespace or DEFAULT_NAMESPACE, model.metadata.name or "")
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return tuple(sorted(out.items()))


def secret_keys(obj: dict[str, Any]) -> list[str]:
    """The item names of a Secret object (``data`` and ``stringData``), sorted."""
    return sorted({*(obj.get("data") or {}), *(obj.get("stringData") or {})})


def redacted(obj: dict[str, Any]) -> dict[str, Any]:
    """A Secret object to print: every value replaced by its size, as ``kubectl describe secret``
    shows it (values never leave the store through cilia's output)."""
    out = {k: v for k, v in obj.items() if k not in ("data", "stringData")}
    data: dict[str, str] = {}
    for k, v in (obj.get("data") or {}).items():
        try:
            size = len(base64.b64decode(str(v), validate=True))
        except (binascii.Error, ValueError):
            size = len(str(v))
        data[k] = f"<redacted: {size} bytes>"
    for k, v in (obj.get("stringData") or {}).items():
        data[k] = f"<redacted: {len(str(v).encode())} bytes>"
    if data:
        out["data"] = dict(sorted(data.items()))
    return out
