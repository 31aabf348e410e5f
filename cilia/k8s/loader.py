"""Reading manifests: files, directories and stdin; YAML multi-document, JSON, ``kind: List``.

What is read is what ``kubectl apply -f`` would send: a directory gives its own ``*.yaml|*.yml|*.json``
files (all of its tree with ``-R``), ``--exclude`` globs leave files out, and a document without a
``kind`` (a CI workflow, Helm values, ``Chart.yaml``; not one with ``metadata`` or a mis-cased
``kind``/``apiVersion``, which validation reports), a list or scalar document, an empty file, a Go
template (Helm's ``{{ … }}``) and a kustomize ``Kustomization`` are skipped and listed
(:class:`~cilia.k8s.errors.Skipped`) — refused with ``--strict``. The command line sets these
choices once for every reader it calls (:func:`using_selection`).

Every object comes back as a :class:`~cilia.k8s.source.Document` that remembers its file,
document index and the line/column of every node (:mod:`cilia.k8s.yamlread`, libyaml; JSON is read by
the same reader since YAML is a superset of JSON). Problems never escape as tracebacks: they are
collected as :class:`~cilia.k8s.errors.Error` values with file:line:col.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import field
from pathlib import Path
from typing import IO, Any

from cilia.k8s.errors import Error, Skipped
from cilia.k8s.frozen import frozen
from cilia.k8s.source import Document
from cilia.k8s.source import new_yaml as new_yaml  # where fix.py and tests have it
from cilia.k8s.yamlread import RawDocument, ReadError, read_documents

MAX_FILE_BYTES = 16 * 1024 * 1024
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# Building values is recursive (and ruamel's parser, used by --fix, quadratic in flow nesting depth);
# real manifests nest a few levels.
MAX_FLOW_DEPTH = 100
_BRACKETS = re.compile(r"[\[\]{}]")
# A Go/Helm template action: ``{{ .Values.x }}``, ``{{- if … }}``, ``{{ include "…" . }}``.
_TEMPLATE = re.compile(r"\{\{-?\s*(?:[.$\"(/]|[a-z]+\b)[^\n]*?\}\}")
STDIN = "-"
KUSTOMIZE_GROUP = "kustomize.config.k8s.io"  # kustomization.yaml: build input, never sent to the API server


@frozen
class Selection:
    """Which files and documents are read: the command line's ``-R``, ``--exclude`` and ``--strict``.

    ``notify`` is told about every skipped document once a set of paths has been read (the CLI
    lists them on stderr); ``progress`` is called after each file with (files read, files, file)
    (the CLI draws a progress bar on a terminal).
    """

    recursive: bool = False
    exclude: tuple[str, ...] = ()
    strict: bool = False
    notify: Callable[[Sequence[Skipped]], None] | None = None
    progress: Callable[[int, int, str], None] | None = None


_SELECTION: ContextVar[Selection | None] = ContextVar("cilia_manifest_selection", default=None)


def current_selection() -> Selection:
    """The selection in force (:func:`using_selection`), else kubectl's defaults."""
    return _SELECTION.get() or Selection()


@contextlib.contextmanager
def using_selection(selection: Selection) -> Iterator[None]:
    """Read manifests with ``selection`` inside the ``with`` block (every reader below a command)."""
    token = _SELECTION.set(selection)
    try:
        yield
    finally:
        _SELECTION.reset(token)


@frozen
class LoadResult:
    """Everything read from a set of paths: the files, their objects, and what went wrong."""

    files: tuple[str, ...]
    documents: tuple[Document, ...]
    errors: tuple[Error, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    skipped: tuple[Skipped, ...] = field(default=())


def _excluded(path: Path, root: Path, patterns: Sequence[str]) -> bool:
    """``path`` (found under ``root``) matches a pattern: by its path below ``root``, its name, or the
    name of a directory on the way (``--exclude .github`` leaves out the whole tree)."""
    rel = path.relative_to(root).as_posix()
    names = rel.split("/")
    return any(
        fnmatch.fnmatchcase(rel, pat) or any(fnmatch.fnmatchcase(n, pat) for n in names) for pat in patterns
    )


def discover(
    paths: Sequence[str | Path], selection: Selection | None = None
) -> tuple[list[str], list[Error]]:
    """Expand directories (sorted ``*.yaml|*.yml|*.json``: the directory's own files, its whole tree
    with ``selection.recursive``, less the ``selection.exclude`` matches); keep files and ``-``."""
    sel = selection or current_selection()
    files: list[str] = []
    errors: list[Error] = []
    for raw in paths:
        text = str(raw)
        if text == STDIN:
            files.append(STDIN)
            continue
        path = Path(text)
        if path.is_dir():
            candidates = path.rglob("*") if sel.recursive else path.iterdir()
            found = sorted(
                str(p)
                for p in candidates
                if p.suffix.lower() in MANIFEST_SUFFIXES
                and p.is_file()
                and not _excluded(p, path, sel.exclude)
            )
            if not found:
                nested = not sel.recursive and any(p.is_dir() for p in path.iterdir())
                errors.append(
                    Error(
                        f"no {'/'.join(MANIFEST_SUFFIXES)} files in directory"
                        + (" (-R reads its subdirectories)" if nested else ""),
                        file=text,
                        unreadable=True,
                    )
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


def _is_list_kind(data: dict[Any, Any]) -> bool:
    kind = data.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and "items" in data


def _too_deep(text: str) -> int | None:
    """Offset where ``[``/``{`` nesting passes :data:`MAX_FLOW_DEPTH` (brackets in strings count too)."""
    depth = 0
    for m in _BRACKETS.finditer(text):
        depth += 1 if m.group() in "[{" else -1
        if depth > MAX_FLOW_DEPTH:
            return m.start()
        depth = max(depth, 0)
    return None


def _parse(text: str, file: str) -> tuple[list[Document], list[Error], list[str], list[Skipped]]:
    """Parse one file's text into documents (``kind: List`` expanded into its items); documents that
    are not mappings come back as skipped."""
    docs: list[Document] = []
    errors: list[Error] = []
    warnings: list[str] = []
    skipped: list[Skipped] = []
    deep = _too_deep(text)
    if deep is not None:
        line = text.count("\n", 0, deep) + 1
        col = deep - (text.rfind("\n", 0, deep) + 1) + 1
        return (
            docs,
            [Error(f"nested more than {MAX_FLOW_DEPTH} levels deep", file=file, line=line, column=col)],
            [],
            [],
        )
    try:
        for index, raw in enumerate(read_documents(text)):
            _add_document(raw, file, index, text, docs, errors, warnings, skipped)
    except ReadError as exc:
        errors.append(Error(exc.message, file=file, line=exc.line, column=exc.column))
    if not docs and not errors and not skipped:
        skipped.append(Skipped(file, 0, "empty file"))
    return docs, errors, warnings, skipped


def _add_document(
    raw: RawDocument,
    file: str,
    index: int,
    text: str,
    docs: list[Document],
    errors: list[Error],
    warnings: list[str],
    skipped: list[Skipped],
) -> None:
    """File one YAML document: an object, the items of a ``kind: List``, or a skip/warning/error."""
    data = raw.value
    if data is None:
        warnings.append(f"{file}: document {index + 1} is empty; skipped")
        return
    if not isinstance(data, dict):
        what = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        skipped.append(
            Skipped(
                file,
                raw.line,
                f"document {index + 1} is {what}, not an object (a mapping with apiVersion and kind)",
            )
        )
        return
    if not _is_list_kind(data):
        docs.append(Document(file, index, raw.positions, data, raw.line, raw.column, source=text))
        return
    items = data["items"]
    if items is None:
        return
    # (items merged in with "<<" have no positions of their own: the document's stand in)
    entry: Any = raw.positions.get("items") if isinstance(raw.positions, dict) else None
    vline, vcol, item_pos = (entry[3], entry[4], entry[2]) if entry else (raw.line, raw.column, None)
    if not isinstance(items, list):
        errors.append(Error("items must be a list", file=file, line=vline, column=vcol, path="items"))
        return
    for i, item in enumerate(items):
        line, col, positions = item_pos[i] if isinstance(item_pos, list) else (vline, vcol, None)
        if not isinstance(item, dict):
            errors.append(
                Error("list item is not an object", file=file, line=line, column=col, path=f"items[{i}]")
            )
            continue
        docs.append(Document(file, index, positions, item, line, col, item=i, source=text))


def parse_text(text: str, file: str) -> tuple[list[Document], list[Error], list[str]]:
    """Parse one file's text into documents (``kind: List`` expanded into its items); a document that
    is not a mapping, or no document at all, is an error (a file that must hold objects)."""
    docs, errors, warnings, skipped = _parse(text, file)
    errors += [Error("no objects in file" if s.line == 0 else s.reason, file=file, line=s.line,
                     column=1 if s.line else 0) for s in skipped]
    return docs, errors, warnings


def is_template(text: str) -> bool:
    """The text holds a Go/Helm template action (``{{ … }}``): a chart's template, not a manifest."""
    return _template_line(text) > 0


def _template_line(text: str) -> int:
    """The 1-based line of the first Go/Helm template action in ``text`` (0: none)."""
    m = _TEMPLATE.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else 0


def _meant_as_object(data: dict[object, object]) -> bool:
    """A document without ``kind`` that still reads as a Kubernetes object with a mistake in it: it has
    ``metadata``, or ``kind``/``apiVersion`` in the wrong case (validation says so; it is not skipped)."""
    return "metadata" in data or any(
        isinstance(k, str) and k.lower() in ("kind", "apiversion") and k not in ("kind", "apiVersion")
        for k in data
    )


def _read_one(text: str, file: str) -> tuple[list[Document], list[Error], list[str], list[Skipped]]:
    """One file's objects; what kubectl would not send (see the module docstring) is skipped."""
    template = _template_line(text)
    if template:
        return [], [], [], [Skipped(file, template, "a Go/Helm template ({{ … }}), not a manifest")]
    docs, errors, warnings, skipped = _parse(text, file)
    kept = []
    for doc in docs:
        if isinstance(doc.data, dict) and "kind" not in doc.data and not _meant_as_object(doc.data):
            what = "no apiVersion and kind" if "apiVersion" not in doc.data else "no kind"
            where = f"item {doc.item + 1} of document {doc.index + 1}" if doc.item is not None else (
                f"document {doc.index + 1}")
            skipped.append(Skipped(file, doc.line, f"{where} has {what}: not a Kubernetes object"))
        elif doc.api_version.startswith(KUSTOMIZE_GROUP + "/"):
            skipped.append(Skipped(file, doc.line, f"a kustomize {doc.kind or 'file'}, not a cluster object "
                                   "(kubectl apply -k reads it)"))
        else:
            kept.append(doc)
    return kept, errors, warnings, sorted(skipped, key=lambda s: s.line)


def _finish(
    files: Sequence[str],
    docs: list[Document],
    errors: list[Error],
    warnings: list[str],
    skipped: list[Skipped],
    sel: Selection,
    *,
    require_objects: bool,
) -> LoadResult:
    """Apply ``--strict``, refuse input with nothing in it at all, and tell ``sel.notify`` the skips."""
    if sel.strict:
        errors += [Error(f"{s.reason} (refused by --strict)", file=s.file, line=s.line) for s in skipped]
        skipped = []
    if require_objects and not docs and not errors:
        shown = [str(s) for s in skipped[:5]] + ([f"… {len(skipped) - 5} more"] if len(skipped) > 5 else [])
        hint = "skipped:\n" + "\n".join(shown) if skipped and (len(files) > 1 or skipped[0].line) else None
        if len(files) == 1:
            errors.append(Error("no objects in file", file=files[0], hint=hint))
        else:
            errors.append(Error(f"no Kubernetes objects in the {len(files)} files read", hint=hint))
        skipped = []
    if skipped and sel.notify is not None:
        sel.notify(skipped)
    return LoadResult(tuple(files), tuple(docs), tuple(errors), tuple(warnings), tuple(skipped))


def load_paths(paths: Sequence[str | Path], stdin: IO[bytes] | None = None) -> LoadResult:
    """Read every manifest under ``paths`` (``-`` is stdin) with the selection in force; finding no
    object at all is an error (as ``kubectl apply`` has it)."""
    sel = current_selection()
    files, errors = discover(paths, sel)
    docs: list[Document] = []
    warnings: list[str] = []
    skipped: list[Skipped] = []
    for done, file in enumerate(files, 1):
        try:
            d, e, w, s = _read_one(read_text(file, stdin), file)
        except Error as exc:
            errors.append(exc)
        else:
            docs.extend(d)
            errors.extend(e)
            warnings.extend(w)
            skipped.extend(s)
        if sel.progress is not None:
            sel.progress(done, len(files), file)
    return _finish(files, docs, errors, warnings, skipped, sel, require_objects=bool(files))


def load_text(text: str, file: str = "<input>") -> LoadResult:
    """Parse manifest text that did not come from a file (tests, API callers, one file of several):
    skips as :func:`load_paths`, but no object at all is no error here."""
    docs, errors, warnings, skipped = _read_one(text, file)
    return _finish((file,), docs, errors, warnings, skipped, current_selection(), require_objects=False)




def iter_documents(result: LoadResult, kinds: Iterable[str]) -> list[Document]:
    """The documents of the given kinds, in load order."""
    wanted = set(kinds)
    return [d for d in result.documents if d.kind in wanted]
