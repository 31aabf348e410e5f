"""Structural (schema) checking of plain manifest data against the API records
(:mod:`cilia.k8s.record`).

Their errors (in pydantic's form) are translated into Kubernetes' vocabulary: YAML-style field paths
(camelCase keys, ``[i]`` indexes; union member tags removed) and the API server's messages
(``unknown field "spec.deny"``, ``Required value``, ``must be of type string``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, TypeVar

from cilia.k8s.frozen import frozen
from cilia.k8s.record import Record, ValidationError
from cilia.k8s.source import FieldPath, PathPart, format_path

M = TypeVar("M", bound=Record)

_JSON_TYPES = {
    "string_type": "string",
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "bool_type": "boolean",
    "float_type": "number",
    "list_type": "array",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
}

MAX_PRUNE_ROUNDS = 8


@frozen
class Problem:
    """A structural problem at a field path (before it is given a file position)."""

    path: FieldPath
    message: str

    def sort_key(self) -> tuple[tuple[int, Any], ...]:
        return tuple((0, p) if isinstance(p, int) else (1, p) for p in self.path)


def json_type(value: Any) -> str:
    """The JSON type name Kubernetes uses in messages for a plain value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _resolve(data: Any, loc: Sequence[Any]) -> tuple[FieldPath, bool, Any]:
    """Keep the parts of an error's ``loc`` that name real keys/indexes in ``data``.

    Returns the cleaned path, whether it reached an existing node, and that node.
    """
    path: list[PathPart] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            path.append(part)
            if part not in node:
                return tuple(path), False, None
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            if not 0 <= part < len(node):
                return tuple(path), False, None
            path.append(part)
            node = node[part]
        # anything else is a union member's tag, not a field
    return tuple(path), True, node


def problems_from(exc: ValidationError, data: Any) -> list[Problem]:
    """Translate a :class:`ValidationError` on ``data`` into de-duplicated problems."""
    order: list[FieldPath] = []
    by_path: dict[FieldPath, dict[str, Any]] = {}
    for err in exc.errors(include_url=False):
        path, exists, node = _resolve(data, err["loc"])
        kind = err["type"]
        entry = by_path.get(path)
        if entry is None:
            entry = {"kinds": [], "node": node, "exists": exists, "msgs": []}
            by_path[path] = entry
            order.append(path)
        entry["kinds"].append(kind)
        entry["msgs"].append(err["msg"])
    out: list[Problem] = []
    for path in order:
        entry = by_path[path]
        kinds: list[str] = entry["kinds"]
        where = format_path(path)
        if "extra_forbidden" in kinds:
            out.append(Problem(path, f'unknown field "{where}"'))
        elif "missing" in kinds and not entry["exists"]:
            out.append(Problem(path, "Required value"))
        elif all(k in _JSON_TYPES for k in kinds):
            wanted = " or ".join(dict.fromkeys(_JSON_TYPES[k] for k in kinds))
            got = json_type(entry["node"])
            out.append(
                Problem(path, f'Invalid value: "{got}": {where} in body must be of type {wanted}: "{got}"')
            )
        else:
            out.append(Problem(path, "; ".join(dict.fromkeys(entry["msgs"]))))
    return out


def prune(data: Any, path: FieldPath) -> bool:
    """Remove what ``path`` names (or, for a missing field, the object that lacks it), in place.

    This mimics the API server pruning what its schema does not allow, so that the remaining
    object can still be checked; returns False when nothing could be removed.
    """
    if not path:
        return False
    parent = data
    for part in path[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = path[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
        del parent[last]
        return True
    # a required field is missing: drop the incomplete object itself
    return prune(data, path[:-1])


def check_model(model: type[M], data: Any, *, strict: bool = True) -> tuple[M | None, list[Problem], Any]:
    """Validate ``data`` against ``model``; on failure prune the bad parts and retry.

    Returns the model built from what survived (``None`` if nothing did), every structural
    problem found, and the pruned data.
    """
    work = copy.deepcopy(data)
    problems: list[Problem] = []
    for round_ in range(MAX_PRUNE_ROUNDS):
        try:
            return model.model_validate(work, strict=strict), problems, work
        except ValidationError as exc:
            found = problems_from(exc, work)
            # Pydantic reports every problem of the original data in the first round; later rounds
            # only see consequences of pruning, whose indexes no longer match the file.
            if round_ == 0:
                problems.extend(found)
            progressed = False
            # deepest and highest-index first, so that earlier siblings keep their indexes
            for p in sorted(found, key=Problem.sort_key, reverse=True):
                progressed = prune(work, p.path) or progressed
            if not progressed:
                break
    return None, problems, work
