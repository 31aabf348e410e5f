"""Loaded YAML documents with their source positions, and YAML-style field paths.

A field path is a tuple of keys (str) and list indexes (int); :func:`format_path` writes it as
``spec.egress[0].toPorts[0]`` and :func:`parse_path` reads that form back.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from cilia.k8s.errors import K8sError

PathPart = str | int
FieldPath = tuple[PathPart, ...]

_PATH_TOKEN = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def format_path(path: Sequence[PathPart]) -> str:
    """``("spec", "egress", 0, "toPorts")`` → ``spec.egress[0].toPorts``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def parse_path(text: str) -> FieldPath:
    """``spec.egress[0].toPorts`` → ``("spec", "egress", 0, "toPorts")``."""
    parts: list[PathPart] = []
    for index, key in _PATH_TOKEN.findall(text):
        parts.append(int(index) if index else key)
    return tuple(parts)


MAX_NODES = 1_000_000


class TooManyNodes(K8sError, ValueError):
    """A document expands (through YAML aliases) into more nodes than any real manifest has."""


def to_plain(node: Any, budget: list[int] | None = None) -> Any:
    """The ruamel round-trip tree as plain dict/list/str/int/float/bool/None.

    Models validate the plain form (ruamel's scalar subclasses would confuse strict type checks);
    YAML timestamps become the ISO strings Kubernetes would see after its YAML→JSON conversion.
    Raises :class:`TooManyNodes` past :data:`MAX_NODES` (an alias "billion laughs" document).
    """
    if budget is None:
        budget = [MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise TooManyNodes(f"document expands to more than {MAX_NODES} nodes (YAML aliases?)")
    if isinstance(node, Mapping):
        return {to_plain(k, budget): to_plain(v, budget) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [to_plain(v, budget) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime.datetime | datetime.date):
        return node.isoformat()
    return node


@dataclass(frozen=True, eq=False)
class Document:
    """One object from a manifest: its ruamel tree (with positions) and its plain data.

    ``index`` is the 0-based YAML document number in the file; ``item`` the 0-based position in
    a ``kind: List`` (``None`` for a top-level object). ``line``/``column`` (1-based) locate the
    object's first key.
    """

    file: str
    index: int
    node: Any
    data: Any
    line: int
    column: int
    item: int | None = None

    @property
    def kind(self) -> str:
        return self.data.get("kind", "") if isinstance(self.data, dict) else ""

    @property
    def api_version(self) -> str:
        v = self.data.get("apiVersion", "") if isinstance(self.data, dict) else ""
        return v if isinstance(v, str) else ""  # a list or number here is validation's to report

    @property
    def name(self) -> str:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        return str(meta.get("name") or "") if isinstance(meta, dict) else ""

    @property
    def namespace(self) -> str:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        return str(meta.get("namespace") or "") if isinstance(meta, dict) else ""

    def position(self, path: Sequence[PathPart] | str) -> tuple[int, int]:
        """1-based (line, column) of the deepest existing node on ``path``
        (a tuple, or text such as ``spec.egress[0].toPorts[0].ports[0].port``).

        A mapping entry is located at its key, a list item at the item, so an unknown field points
        at the offending key and a missing field at its parent.
        """
        if isinstance(path, str):
            path = parse_path(path)
        line, col = self.line, self.column
        node = self.node
        for part in path:
            if isinstance(node, CommentedMap) and isinstance(part, str) and part in node:
                try:
                    kl, kc = node.lc.key(part)
                except (KeyError, TypeError, AttributeError):
                    break
                line, col = kl + 1, kc + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                try:
                    il, ic = node.lc.item(part)
                except (KeyError, TypeError, AttributeError):
                    break
                line, col = il + 1, ic + 1
                node = node[part]
            else:
                break
        return line, col

    def describe(self) -> str:
        """``Kind/namespace/name`` for messages."""
        parts = [self.kind or "<no kind>"]
        if self.namespace:
            parts.append(self.namespace)
        parts.append(self.name or "<no name>")
        return "/".join(parts)
