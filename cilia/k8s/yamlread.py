"""Reading YAML (and JSON) text into plain data and source positions with libyaml.

The C parser of PyYAML (``yaml.CParser``) produces the events; one pass over them builds, for every
document, plain ``dict``/``list``/``str``/``int``/``float``/``bool``/``None`` values and a
:data:`Positions` tree (the 1-based line and column of every mapping key and list item). Scalars are
resolved as YAML 1.2 core schema, the way ruamel.yaml's round-trip loader resolves them (what cilia
read manifests with before; it stays in use only to rewrite files, :mod:`cilia.k8s.fix`):
``yes``/``on`` stay strings, ``0777`` is decimal 777, ``0o17``/``0x1F``/``0b1`` and ``1_000`` are
numbers, timestamps become the ISO strings Kubernetes sees. A ``%YAML 1.1`` directive switches to the
1.1 rules for the rest of the stream (as ruamel does). Merge keys (``<<``) are applied; aliases are
expanded into fresh copies, counted against :data:`~cilia.k8s.source.MAX_NODES`; a duplicate key is
an error at the second key.

Scalars with an explicit tag (``!!str 123``, ``!custom x``) read as their plain value (ruamel
returned an opaque tagged object there).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cilia.k8s import source
from cilia.k8s.errors import K8sError
from cilia.k8s.libyaml import (
    AliasEvent,
    CParser,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingStartEvent,
    MarkedYAMLError,
    ScalarEvent,
    SequenceStartEvent,
    StreamEndEvent,
    YAMLError,
)
from cilia.k8s.source import Positions, TooManyNodes

_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"

# The implicit resolvers of ruamel.yaml (YAML 1.2, and 1.1 after a %YAML 1.1 directive), in its order:
# bool, float, int, merge, null, timestamp, value. Verbose patterns (re.X); compiled when first needed
# (start-up time: most scalars of a manifest are settled by _COMMON or their first character).
_BOOL_12 = r"^(?:true|True|TRUE|false|False|FALSE)$"
_BOOL_11 = (
    r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"
)
_FLOAT_12 = (
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$"""
)
_FLOAT_11 = (
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
    r"|\.[0-9_]+(?:[eE][-+][0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*"
    r"|[-+]?\.(?:inf|Inf|INF)"
    r"|\.(?:nan|NaN|NAN))$"
)
_INT_12 = r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)$"
_INT_11 = (
    r"^(?:[-+]?0b[0-1_]+|[-+]?0?[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"
)
_MERGE_RE = r"^(?:<<)$"
_NULL = r"^(?:~|null|Null|NULL|)$"
_TIMESTAMP = (
    r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
    |[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?
    (?:[Tt]|[ \t]+)[0-9][0-9]?
    :[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?
    (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$"""
)
_VALUE = r"^(?:=)$"
_TIMESTAMP_PARTS = (
    r"""^(?P<year>[0-9][0-9][0-9][0-9])
    -(?P<month>[0-9][0-9]?)
    -(?P<day>[0-9][0-9]?)
    (?:(?:(?P<t>[Tt])|[ \t]+)
    (?P<hour>[0-9][0-9]?)
    :(?P<minute>[0-9][0-9])
    :(?P<second>[0-9][0-9])
    (?:\.(?P<fraction>[0-9]*))?
    (?:[ \t]*(?P<tz>Z|(?P<tz_sign>[-+])(?P<tz_hour>[0-9][0-9]?)
    (?::(?P<tz_minute>[0-9][0-9]))?))?)?$"""
)


def _resolvers(v11: bool) -> dict[str, list[tuple[str, re.Pattern[str]]]]:
    """The resolvers of one YAML version, keyed by the first character of the scalars they can match."""
    table: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
    order = [
        ("bool", _BOOL_11 if v11 else _BOOL_12, "yYnNtTfFoO" if v11 else "tTfF"),
        ("float", _FLOAT_11 if v11 else _FLOAT_12, "-+0123456789."),
        ("int", _INT_11 if v11 else _INT_12, "-+0123456789"),
        ("merge", _MERGE_RE, "<"),
        ("null", _NULL, "~nN"),
        ("timestamp", _TIMESTAMP, "0123456789"),
        ("value", _VALUE, "="),
    ]
    for tag, pattern, first in order:
        regexp = re.compile(pattern, re.X)
        for ch in first:
            table.setdefault(ch, []).append((tag, regexp))
    table[""] = [("null", re.compile(_NULL, re.X))]
    return table


_TABLES: dict[bool, dict[str, list[tuple[str, re.Pattern[str]]]]] = {}
# YAML 1.2 scalars whose tag needs no pattern; any other one starting with none of _PATTERNED is a string.
_COMMON = {
    **dict.fromkeys(("true", "True", "TRUE", "false", "False", "FALSE"), "bool"),
    **dict.fromkeys(("null", "Null", "NULL", "~", ""), "null"),
    "<<": "merge",
    "=": "value",
}
_PATTERNED = frozenset("-+0123456789.")
_BOOL_VALUES = {"yes": True, "no": False, "y": True, "n": False, "true": True, "false": False,
                "on": True, "off": False}


class ReadError(K8sError):
    """The text is not YAML cilia can read: ``message`` as shown to the user, 1-based ``line`` and
    ``column`` (0 when the problem has no single place)."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass(frozen=True, slots=True)
class RawDocument:
    """One YAML document: its plain value, positions, and the 1-based line/column where it starts."""

    value: Any
    positions: Positions
    line: int
    column: int


def _resolve(value: str, v11: bool) -> str:
    """The tag ruamel.yaml resolves a plain scalar to (without the ``tag:yaml.org,2002:`` prefix)."""
    if not v11:
        tag = _COMMON.get(value)
        if tag is not None:
            return tag
        if value[0] not in _PATTERNED:
            return "str"
        if value.isdigit() and value.isascii():
            return "int"
    table = _TABLES.get(v11)
    if table is None:
        table = _TABLES[v11] = _resolvers(v11)
    for tag, regexp in table.get(value[:1], ()):
        if regexp.match(value):
            return tag
    return "str"


def _int(text: str, v11: bool) -> int:
    """An int scalar's value, by the steps of ruamel's round-trip constructor (odd input such as ``0b_``
    or ``-_`` fails as it did: an error without a position)."""
    value = text.replace("_", "")
    sign = 1
    if value[0] in "+-":
        if value[0] == "-":
            sign = -1
        value = value[1:]
    for prefix, base in (("0b", 2), ("0x", 16), ("0o", 8)):
        if value.startswith(prefix):
            if not v11 and len(value) == 2:
                raise IndexError("string index out of range")
            return sign * int(value[2:], base)
    if not value:
        raise IndexError("string index out of range")
    if v11 and len(value) > 1 and value[0] == "0":
        return sign * int(value, 8)
    if v11 and ":" in value:  # sexagesimal, 1.1 only
        total, unit = 0, 1
        for digit in reversed([int(part) for part in value.split(":")]):
            total += digit * unit
            unit *= 60
        return sign * total
    return sign * int(value)  # 1.2: a leading zero is no octal (0777 is 777)


def _float(text: str, v11: bool) -> float:
    """A float scalar's value (``.inf``, ``.nan``, underscores; 1.1's sexagesimal ``1:30.5``)."""
    value = text.replace("_", "").lower()
    sign = -1 if value[0] == "-" else 1
    if value[0] in "+-":
        value = value[1:]
    if value == ".inf":
        return sign * math.inf
    if value == ".nan":
        return math.nan
    if v11 and ":" in value:
        total, unit = 0.0, 1
        for digit in reversed([float(part) for part in value.split(":")]):
            total += digit * unit
            unit *= 60
        return sign * total
    return sign * float(value)


def _timestamp(text: str) -> str:
    """A timestamp's ISO text, as ruamel's datetime gave it (fraction rounded to microseconds)."""
    m = re.match(_TIMESTAMP_PARTS, text, re.X)  # compiled on first use (re keeps it)
    if m is None:
        raise ValueError(f'failed to construct timestamp from "{text}"')
    g = m.groupdict()
    year, month, day = int(g["year"]), int(g["month"]), int(g["day"])
    if g["hour"] is None:
        return datetime.date(year, month, day).isoformat()
    frac = 0
    carry = False
    if g["fraction"]:
        digits = g["fraction"]
        frac = int(digits[:6].ljust(6, "0"))
        if len(digits) > 6 and int(digits[6]) > 4:
            frac += 1
        if frac > 999_999:
            frac, carry = 0, True
    tzinfo = None
    if g["tz_sign"]:
        delta = datetime.timedelta(hours=int(g["tz_hour"]), minutes=int(g["tz_minute"] or 0))
        tzinfo = datetime.timezone(-delta if g["tz_sign"] == "-" else delta)
    elif g["tz"] == "Z":
        tzinfo = datetime.timezone(datetime.timedelta(0))
    hour, minute, second = int(g["hour"]), int(g["minute"]), int(g["second"])
    stamp = datetime.datetime(year, month, day, hour, minute, second, frac, tzinfo)
    if carry:
        stamp += datetime.timedelta(seconds=1)
    return stamp.isoformat()


def _scalar(tag: str, text: str, v11: bool) -> Any:
    """The plain value of a scalar whose (resolved or explicit) tag is ``tag``."""
    if tag == "str":
        return text
    if tag == "null":
        return None
    if tag == "bool":
        return _BOOL_VALUES[text.lower()]
    if tag == "int":
        return _int(text, v11)
    if tag == "float":
        return _float(text, v11)
    if tag == "timestamp":
        return _timestamp(text)
    if tag == "binary":
        try:
            return base64.decodebytes(text.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise ValueError(f"failed to convert base64 data: {exc}") from exc
    return text  # merge/value as a value, any other tag: the text


def _is_merge_key(event: Any) -> bool:
    if not isinstance(event, ScalarEvent):
        return False
    return event.tag == _MERGE or (event.tag is None and event.implicit[0] and event.value == "<<")


class _Builder:
    """Plain values and positions from one stream's events (one instance per text)."""

    def __init__(self, text: str) -> None:
        self.parser = CParser(text)
        self.v11 = False
        self.budget = source.MAX_NODES
        self.document = 0
        self.anchors: dict[str, tuple[Any, Positions, int, int]] = {}
        self.open: dict[str, tuple[int, int]] = {}  # anchors of the nodes being built: where they start

    def spend(self, count: int = 1) -> None:
        self.budget -= count
        if self.budget < 0:
            raise TooManyNodes(f"document expands to more than {source.MAX_NODES} nodes (YAML aliases?)")

    def documents(self) -> Iterator[RawDocument]:
        parser = self.parser
        try:
            parser.get_event()  # stream start
            while not parser.check_event(StreamEndEvent):
                start = parser.get_event()
                assert isinstance(start, DocumentStartEvent)
                if start.version is not None:
                    self.v11 = tuple(start.version) < (1, 2)
                self.document += 1
                self.budget = source.MAX_NODES
                self.anchors = {}
                try:
                    value, pos, line, col = self.node(parser.get_event())
                except (ReadError, ValueError, IndexError, KeyError, RecursionError):
                    # ruamel parsed a whole document before building it: a syntax error further on in
                    # this document is the one to report
                    while not isinstance(parser.get_event(), DocumentEndEvent):
                        pass
                    raise
                parser.get_event()  # document end
                yield RawDocument(value, pos, line, col)
        finally:
            parser.dispose()

    def node(self, event: Any) -> tuple[Any, Positions, int, int]:
        """(value, positions, line, column) of the node that ``event`` starts."""
        if isinstance(event, AliasEvent):
            anchor = event.anchor
            if anchor in self.open:  # an alias inside its own anchor's node: ruamel reads None there
                return None, None, *self.open[anchor]
            if anchor not in self.anchors:
                mark = event.start_mark
                line, col = mark.line + 1, mark.column + 1
                raise ReadError(f"invalid YAML: found undefined alias {anchor!r}", line, col)
            value, pos, line, col = self.anchors[anchor]
            return self.copy(value), pos, line, col
        mark = event.start_mark
        line, col = mark.line + 1, mark.column + 1
        anchor = event.anchor
        self.spend()
        if isinstance(event, ScalarEvent):
            value = self.scalar(event)
            pos: Positions = None
        else:
            if anchor is not None:
                self.open[anchor] = (line, col)
            if isinstance(event, SequenceStartEvent):
                value, pos = self.sequence(event)
            else:
                assert isinstance(event, MappingStartEvent)
                value, pos = self.mapping(event)
            if anchor is not None:
                del self.open[anchor]
        if anchor is not None:
            self.anchors[anchor] = (value, pos, line, col)
        return value, pos, line, col

    def scalar(self, event: Any) -> Any:
        tag = event.tag
        text = event.value
        if (tag is None and event.implicit[0]) or tag == "!":  # ruamel resolves "! 12" as a plain 12
            return _scalar(_resolve(text, self.v11), text, self.v11)
        if tag is None or not tag.startswith(_TAG):
            return text
        return _scalar(tag[len(_TAG):], text, self.v11)

    def sequence(self, event: Any) -> tuple[list[Any], list[tuple[int, int, Positions]]]:
        parser = self.parser
        values: list[Any] = []
        positions: list[tuple[int, int, Positions]] = []
        while True:
            child = parser.get_event()
            if not isinstance(child, ScalarEvent | SequenceStartEvent | MappingStartEvent | AliasEvent):
                break  # sequence end
            value, pos, line, col = self.node(child)
            values.append(value)
            positions.append((line, col, pos))
        return values, positions

    def mapping(self, event: Any) -> tuple[Any, dict[Any, tuple[int, int, Positions, int, int]]]:
        parser = self.parser
        result: dict[Any, Any] = {}
        positions: dict[Any, tuple[int, int, Positions, int, int]] = {}
        merges: list[dict[Any, Any]] | None = None
        while True:
            key_event = parser.get_event()
            if not isinstance(key_event, ScalarEvent | SequenceStartEvent | MappingStartEvent | AliasEvent):
                break  # mapping end
            if _is_merge_key(key_event):
                kmark = key_event.start_mark
                if merges is not None:
                    raise ReadError(
                        'invalid YAML: while constructing a mapping: found duplicate merge key "<<"',
                        kmark.line + 1,
                        kmark.column + 1,
                    )
                merges = self.merge_sources(parser.get_event())
                continue
            key, _, kl, kc = self.node(key_event)
            value_event = parser.get_event()
            value, pos, vl, vc = self.node(value_event)
            if isinstance(key, list | dict | set):
                raise ReadError(f"invalid YAML in document {self.document}: unhashable type: "
                                f"'{type(key).__name__}'")
            if key in result:
                raise ReadError(
                    "invalid YAML: while constructing a mapping: found duplicate key "
                    f'"{key}" with value "{value}" (original value: "{result[key]}")',
                    kl,
                    kc,
                )
            result[key] = value
            positions[key] = (kl, kc, pos, vl, vc)
        if merges:
            for merged in merges:
                for key, value in merged.items():
                    if key not in result:
                        self.spend()
                        result[key] = self.copy(value)
        tag = event.tag
        if tag == _TAG + "set":
            return set(result), positions
        return result, positions

    def merge_sources(self, event: Any) -> list[dict[Any, Any]]:
        """The mappings a ``<<`` value names, in order (earlier ones win)."""
        if isinstance(event, AliasEvent) and event.anchor in self.anchors:
            value, pos, line, col = self.anchors[event.anchor]  # not copied: only the entries taken are
        else:
            before = self.budget
            value, pos, line, col = self.node(event)
            self.budget = before  # counted again as the entries are taken
        if isinstance(value, dict):
            return [value]
        if isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    il, ic = (pos[i][0], pos[i][1]) if isinstance(pos, list) else (line, col)
                    kind = "sequence" if isinstance(item, list) else "scalar"
                    raise ReadError(
                        "invalid YAML: while constructing a mapping: expected a mapping for merging, "
                        f"but found {kind}",
                        il,
                        ic,
                    )
            return value
        raise ReadError(
            "invalid YAML: while constructing a mapping: expected a mapping or list of mappings for merging, "
            "but found scalar",
            line,
            col,
        )

    def copy(self, value: Any) -> Any:
        """A fresh copy of an anchored value (an alias is a copy, as after a YAML→JSON conversion)."""
        self.spend()
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                self.spend()
                out[k] = self.copy(v)
            return out
        if isinstance(value, list):
            return [self.copy(v) for v in value]
        if isinstance(value, set):
            return set(value)
        return value


def read_documents(text: str) -> Iterator[RawDocument]:
    """Every document of ``text`` in order. Where the text stops being readable (after the documents
    before that point were yielded) raises :class:`ReadError` with the message for the user."""
    builder = _Builder(text)
    try:
        yield from builder.documents()
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        if isinstance(exc, MarkedYAMLError) and exc.problem:
            message = f"{exc.context}: {exc.problem}" if exc.context else str(exc.problem)
        else:  # e.g. a control character (the reader's error, without a line)
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        raise ReadError(f"invalid YAML: {_as_before(message, text, line, col)}", line, col) from exc
    except TooManyNodes as exc:
        raise ReadError(f"document {builder.document}: {exc}") from exc
    except RecursionError as exc:
        raise ReadError(f"document {builder.document}: nested too deeply") from exc
    except (ValueError, IndexError, KeyError) as exc:  # a malformed scalar ("0b_", "!!int x", 2001-02-30)
        detail = f"'{exc.args[0]}'" if isinstance(exc, KeyError) else str(exc)
        raise ReadError(f"invalid YAML in document {builder.document}: {detail}") from exc


def _as_before(message: str, text: str, line: int, col: int) -> str:
    """libyaml's words for a problem, as ruamel.yaml put it where the meaning is the same (users and
    documentation quote these); libyaml words others its own way (``did not find expected key``)."""
    message = message.replace("are not allowed in this context", "are not allowed here")
    message = message.replace("control characters are not allowed", "special characters are not allowed")
    if message.endswith("found character that cannot start any token") and line:
        lines = text.split("\n", line)
        if len(lines) >= line and 0 < col <= len(lines[line - 1]):
            char = lines[line - 1][col - 1]
            message = message.replace("found character that", f"found character {char!r} that")
    return message
