"""Reading manifests: files, directories and stdin; YAML multi-document, JSON, ``kind: List``.

Every object comes back as a :class:`~cilia.k8s.source.Document` that remembers its file,
document index and the line/column of every node (ruamel.yaml round-trip loading; JSON is read by
the same loader since YAML is a superset of JSON). Problems never escape as tracebacks: they are
collected as :class:`~cilia.k8s.errors.Error` values with file:line:col.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from cilia.k8s.errors import Error
from cilia.k8s.source import Document, TooManyNodes, to_plain

MAX_FILE_BYTES = 16 * 1024 * 1024
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# ruamel's parser is quadratic in flow nesting depth and recursive; real manifests nest a few levels.
MAX_FLOW_DEPTH = 100
_BRACKETS = re.compile(r"[\[\]{}]")
STDIN = "-"


@dataclass(frozen=True)
class LoadResult:
    """Everything read from a set of paths: the files, their objects, and what went wrong."""

    files: tuple[str, ...]
    documents: tuple[Document, ...]
    errors: tuple[Error, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def new_yaml() -> YAML:
    """The round-trip YAML instance every cilia component reads and writes manifests with."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=2, offset=0)
    return yaml


def discover(paths: Sequence[str | Path]) -> tuple[list[str], list[Error]]:
    """Expand directories (recursively, sorted, ``*.yaml|*.yml|*.json``); keep files and ``-``."""
    files: list[str] = []
    errors: list[Error] = []
    for raw in paths:
        text = str(raw)
        if text == STDIN:
            files.append(STDIN)
            continue
        path = Path(text)
        if path.is_dir():
            found = sorted(
                str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES
            )
            if not found:
                errors.append(
                    Error(f"no {'/'.join(MANIFEST_SUFFIXES)} files in directory", file=text, unreadable=True)
                )
            files.extend(found)
        elif path.exists():
            files.append(text)
        else:
            errors.append(Error("no such file or directory", file=text, unreadable=True))
    return files, errors


def read_text(file: str, stdin: IO[bytes] | None = None) -> str:
    """The file's text, at most :data:`MAX_FILE_BYTES`; raises :class:`Error` if it is not usable text."""
    try:
        if file == STDIN:
            stream = stdin if stdin is not None else sys.stdin.buffer
            raw = stream.read(MAX_FILE_BYTES + 1)
        else:
            with open(file, "rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise Error(f"cannot read: {exc.strerror or exc}", file=file, unreadable=True) from exc
    if len(raw) > MAX_FILE_BYTES:
        raise Error(f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB", file=file, unreadable=True)
    if b"\x00" in raw:
        raise Error("binary data (NUL bytes), not a YAML or JSON manifest", file=file, unreadable=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise Error(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            file=file,
            line=line,
            unreadable=True,
        ) from exc
    return text.removeprefix("\ufeff")


def _yaml_error(file: str, exc: YAMLError) -> Error:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if isinstance(exc, MarkedYAMLError) and problem:
        message = f"{context}: {problem}" if context else str(problem)
    else:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    line = mark.line + 1 if mark is not None else 0
    col = mark.column + 1 if mark is not None else 0
    return Error(f"invalid YAML: {message}", file=file, line=line, column=col)


def _node_pos(node: object, default: tuple[int, int]) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    if lc is not None and lc.line is not None:
        return lc.line + 1, lc.col + 1
    return default


def _is_list_kind(node: CommentedMap) -> bool:
    kind = node.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and "items" in node


def _too_deep(text: str) -> int | None:
    """Offset where ``[``/``{`` nesting passes :data:`MAX_FLOW_DEPTH` (brackets in strings count too)."""
    depth = 0
    for m in _BRACKETS.finditer(text):
        depth += 1 if m.group() in "[{" else -1
        if depth > MAX_FLOW_DEPTH:
            return m.start()
        depth = max(depth, 0)
    return None


def parse_text(text: str, file: str) -> tuple[list[Document], list[Error], list[str]]:
    """Parse one file's text into documents (``kind: List`` expanded into its items)."""
    docs: list[Document] = []
    errors: list[Error] = []
    warnings: list[str] = []
    deep = _too_deep(text)
    if deep is not None:
        line = text.count("\n", 0, deep) + 1
        col = deep - (text.rfind("\n", 0, deep) + 1) + 1
        return (
            docs,
            [Error(f"nested more than {MAX_FLOW_DEPTH} levels deep", file=file, line=line, column=col)],
            [],
        )
    yaml = new_yaml()
    index = -1
    try:
        for index, node in enumerate(yaml.load_all(text)):
            pos = _node_pos(node, (1, 1))
            if node is None:
                warnings.append(f"{file}: document {index + 1} is empty; skipped")
                continue
            if not isinstance(node, CommentedMap):
                what = "a list" if isinstance(node, CommentedSeq) else f"a {type(to_plain(node)).__name__}"
                errors.append(
                    Error(
                        f"document {index + 1} is {what}, not an object (a mapping with apiVersion and kind)",
                        file=file,
                        line=pos[0],
                        column=pos[1],
                    )
                )
                continue
            if _is_list_kind(node):
                items = node["items"]
                if items is None:
                    continue
                if not isinstance(items, CommentedSeq):
                    vl, vc = node.lc.value("items")
                    line, col = vl + 1, vc + 1
                    errors.append(
                        Error("items must be a list", file=file, line=line, column=col, path="items")
                    )
                    continue
                for i, item in enumerate(items):
                    ipos = items.lc.item(i)
                    line, col = ipos[0] + 1, ipos[1] + 1
                    if not isinstance(item, CommentedMap):
                        errors.append(
                            Error(
                                "list item is not an object",
                                file=file,
                                line=line,
                                column=col,
                                path=f"items[{i}]",
                            )
                        )
                        continue
                    docs.append(
                        Document(file, index, item, to_plain(item), *_node_pos(item, (line, col)), item=i)
                    )
                continue
            docs.append(Document(file, index, node, to_plain(node), *pos))
    except YAMLError as exc:
        errors.append(_yaml_error(file, exc))
    except TooManyNodes as exc:
        errors.append(Error(f"document {index + 1}: {exc}", file=file))
    except RecursionError:
        errors.append(Error(f"document {index + 2}: nested too deeply", file=file))
    except (ValueError, TypeError) as exc:  # ruamel raises these for some malformed input
        errors.append(Error(f"invalid YAML in document {index + 2}: {exc}", file=file))
    if not docs and not errors:
        errors.append(Error("no objects in file", file=file))
    return docs, errors, warnings


def load_paths(paths: Sequence[str | Path], stdin: IO[bytes] | None = None) -> LoadResult:
    """Read every manifest under ``paths`` (``-`` is stdin)."""
    files, errors = discover(paths)
    docs: list[Document] = []
    warnings: list[str] = []
    for file in files:
        try:
            text = read_text(file, stdin)
        except Error as exc:
            errors.append(exc)
            continue
        d, e, w = parse_text(text, file)
        docs.extend(d)
        errors.extend(e)
        warnings.extend(w)
    return LoadResult(tuple(files), tuple(docs), tuple(errors), tuple(warnings))


def load_text(text: str, file: str = "<input>") -> LoadResult:
    """Parse manifest text that did not come from a file (tests, API callers)."""
    docs, errors, warnings = parse_text(text, file)
    return LoadResult((file,), tuple(docs), tuple(errors), tuple(warnings))


def iter_documents(result: LoadResult, kinds: Iterable[str]) -> list[Document]:
    """The documents of the given kinds, in load order."""
    wanted = set(kinds)
    return [d for d in result.documents if d.kind in wanted]
