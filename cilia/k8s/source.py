"""Loaded YAML documents with their source positions, YAML-style field paths, and :func:`new_yaml`
(ruamel.yaml's round-trip instance, imported only when a file is rewritten).

A field path is a tuple of keys (str) and list indexes (int); :func:`format_path` writes it as
``spec.egress[0].toPorts[0]`` and :func:`parse_path` reads that form back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeAlias

from cilia.k8s.errors import K8sError

if TYPE_CHECKING:
    from ruamel.yaml import YAML

PathPart = str | int
FieldPath = tuple[PathPart, ...]
# Where every node of a document is: a mapping's keys to (key line, key column, the value's positions,
# value line, value column), a list's items as (line, column, the item's positions); None for a scalar.
# Lines and columns are 1-based.
Positions: TypeAlias = (
    "dict[Any, tuple[int, int, Positions, int, int]] | list[tuple[int, int, Positions]] | None"
)

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


def new_yaml() -> YAML:
    """The round-trip YAML instance cilia rewrites manifests with (``--fix``, rendering): imported
    here, when first needed, since ruamel costs start-up time that reading manifests does without."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=2, offset=0)
    return yaml


def _tree(value: Any, positions: Positions, line: int, column: int) -> Any:
    """Plain data as a round-trip tree with the positions of its nodes (but no comments)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        tree = CommentedMap()
        tree._yaml_set_line_col(line - 1, column - 1)
        for k, v in value.items():
            kl, kc, pos, vl, vc = positions[k] if isinstance(positions, dict) and k in positions else (
                line, column, None, line, column)
            tree[k] = _tree(v, pos, vl, vc)
            tree._yaml_set_kv_line_col(k, [kl - 1, kc - 1, vl - 1, vc - 1])
        return tree
    if isinstance(value, list):
        seq = CommentedSeq()
        seq._yaml_set_line_col(line - 1, column - 1)
        for i, v in enumerate(value):
            known = isinstance(positions, list) and i < len(positions)
            il, ic, pos = positions[i] if known else (line, column, None)
            seq.append(_tree(v, pos, il, ic))
            seq._yaml_set_idx_line_col(i, [il - 1, ic - 1])
        return seq
    return value


MAX_NODES = 1_000_000


class TooManyNodes(K8sError, ValueError):
    """A document expands (through YAML aliases) into more nodes than any real manifest has."""


@dataclass(frozen=True, eq=False)
class Document:
    """One object from a manifest: its plain data and the positions of its nodes.

    ``index`` is the 0-based YAML document number in the file; ``item`` the 0-based position in
    a ``kind: List`` (``None`` for a top-level object). ``line``/``column`` (1-based) locate the
    object's first key. ``source`` is the file's text (for :attr:`node`).
    """

    file: str
    index: int
    positions: Positions = field(repr=False)
    data: Any
    line: int
    column: int
    item: int | None = None
    source: str | None = field(default=None, repr=False)

    @cached_property
    def node(self) -> Any:
        """The object as ruamel.yaml's round-trip tree (comments, order and styles kept), read again
        from :attr:`source` on first use: only the rewriting of files needs it (:mod:`cilia.k8s.fix`),
        and ruamel costs start-up time every other command does without. ``None`` without a source."""
        if self.source is None:
            return None
        from ruamel.yaml.error import YAMLError

        try:
            for i, tree in enumerate(new_yaml().load_all(self.source)):
                if i == self.index:
                    return tree if self.item is None else tree["items"][self.item]
        except YAMLError:  # ruamel refuses what libyaml reads (a tab between tokens): the data's tree
            return _tree(self.data, self.positions, self.line, self.column)
        return None

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
        pos = self.positions
        for part in path:
            if isinstance(pos, dict) and isinstance(part, str) and part in pos:
                line, col, pos = pos[part][:3]
            elif isinstance(pos, list) and isinstance(part, int) and 0 <= part < len(pos):
                line, col, pos = pos[part]
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
