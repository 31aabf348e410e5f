"""Frozen records for the Kubernetes objects cilia reads, checked against their declared shape.

The API models (:mod:`cilia.k8s.api`, :mod:`cilia.k8s.objects`) are pure structure: field names,
aliases, types, defaults, a few bounds. Building them with pydantic cost ~150 ms at every start
(importing pydantic and its core, creating ~80 classes, building their schemas), five times Python's
own start-up, on the commands run most (issue 15 item 2). A :class:`Record` declares its fields the
same way (annotations, :func:`Field` with ``alias``/``default``/``default_factory``/``ge``/``le``) and
checks input as pydantic does for such models, in strict and lax mode, reporting errors with the same
``type``/``loc``/``msg`` (tests/test_record.py compares both on the corpus and on generated input):
fields in declaration order, then unknown keys; a union's members each tagged in ``loc``.

Annotations are read from their text (``from __future__ import annotations``) by a small parser
that knows the few forms the models use — ``str``, ``int``, ``bool``, ``float``, ``Any``, ``None``,
``list[T]``, ``dict[str, T]``, ``A | B`` and record classes (names or ``module.Name``) — and each
class's checker is compiled on first use.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from cilia.k8s.errors import K8sError

Loc = tuple[str | int, ...]
ErrorList = list[dict[str, Any]]
Check = Callable[[Any, Loc, ErrorList], Any]

_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<missing>"})()
_BAD: Any = type("_Bad", (), {"__repr__": lambda self: "<bad>"})()

_MESSAGES = {
    "string_type": "Input should be a valid string",
    "int_type": "Input should be a valid integer",
    "int_parsing": "Input should be a valid integer, unable to parse string as an integer",
    "int_from_float": "Input should be a valid integer, got a number with a fractional part",
    "bool_type": "Input should be a valid boolean",
    "bool_parsing": "Input should be a valid boolean, unable to interpret input",
    "float_type": "Input should be a valid number",
    "float_parsing": "Input should be a valid number, unable to parse string as a number",
    "list_type": "Input should be a valid list",
    "dict_type": "Input should be a valid dictionary",
    "missing": "Field required",
    "extra_forbidden": "Extra inputs are not permitted",
}
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


class ValidationError(K8sError, ValueError):
    """Input that does not fit a record: every problem, as ``errors()`` lists them (pydantic's form)."""

    def __init__(self, title: str, errors: ErrorList) -> None:
        self.title = title
        self._errors = errors
        super().__init__(str(self))

    def errors(self, *, include_url: bool = False) -> ErrorList:
        """Each problem: ``type``, ``loc`` (keys and indexes; a union member's name as a tag),
        ``msg`` and ``input``."""
        return [dict(e) for e in self._errors]

    def error_count(self) -> int:
        return len(self._errors)

    def __str__(self) -> str:
        n = len(self._errors)
        lines = [f"{n} validation error{'s' if n != 1 else ''} for {self.title}"]
        for e in self._errors:
            lines.append(".".join(str(p) for p in e["loc"]) or "<root>")
            lines.append(f"  {e['msg']} [type={e['type']}, input_value={e['input']!r}]")
        return "\n".join(lines)


class FieldSpec:
    """One declared field: its name, the key users write (``alias``), default and bounds."""

    __slots__ = ("alias", "annotation", "default", "default_factory", "ge", "le", "module", "name", "parsed")

    def __init__(self, default: Any, alias: str | None, default_factory: Callable[[], Any] | None,
                 ge: int | None, le: int | None) -> None:
        self.name = ""
        self.annotation = ""
        self.module = ""  # where the annotation's names are looked up
        self.parsed: _Type | None = None  # the annotation, read at the first check
        self.alias = alias
        self.default = default
        self.default_factory = default_factory
        self.ge = ge
        self.le = le

    @property
    def key(self) -> str:
        return self.alias or self.name

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.default_factory is None

    def make_default(self) -> Any:
        return self.default_factory() if self.default_factory is not None else self.default


def Field(
    default: Any = _MISSING,
    *,
    alias: str | None = None,
    default_factory: Callable[[], Any] | None = None,
    ge: int | None = None,
    le: int | None = None,
) -> Any:
    """A field's alias (the key in YAML), default or default factory, and integer bounds."""
    return FieldSpec(default, alias, default_factory, ge, le)


# --------------------------------------------------------------------------- types


class _Type:
    """A parsed annotation: ``kind`` is any/str/int/bool/float/none/list/dict/union/record."""

    __slots__ = ("args", "kind", "record", "tag")

    def __init__(self, kind: str, args: tuple[_Type, ...] = (), record: type[Record] | None = None,
                 tag: str = "") -> None:
        self.kind = kind
        self.args = args
        self.record = record
        self.tag = tag  # the name pydantic gives a union member in an error's loc


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside brackets."""
    if "[" not in text:
        return [part.strip() for part in text.split(sep)]
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


_SCALARS = {"Any": "any", "str": "str", "int": "int", "bool": "bool", "float": "float", "None": "none"}


def _parse(text: str, scope: Mapping[str, Any]) -> _Type:
    members = _split(text, "|")
    if len(members) > 1:
        return _Type("union", tuple(_parse(m, scope) for m in members))
    text = members[0]
    if text in _SCALARS:
        return _Type(_SCALARS[text], tag=text)
    if text.endswith("]"):
        head, inner = text[:-1].split("[", 1)
        args = tuple(_parse(a, scope) for a in _split(inner, ","))
        if head == "list" and len(args) == 1:
            return _Type("list", args, tag="list")
        if head == "dict" and len(args) == 2:
            return _Type("dict", args, tag="dict")
        raise TypeError(f"record field type {text!r}: only list[T] and dict[K, V] are known")
    obj: Any = scope.get(text.split(".")[0])
    for attr in text.split(".")[1:]:
        obj = getattr(obj, attr, None)
    if not (isinstance(obj, type) and issubclass(obj, Record)):
        raise TypeError(f"record field type {text!r} is not a Record class")
    return _Type("record", record=obj, tag=obj.__name__)


# --------------------------------------------------------------------------- checkers


def _error(errors: ErrorList, kind: str, loc: Loc, value: Any, msg: str = "") -> Any:
    errors.append({"type": kind, "loc": loc, "msg": msg or _MESSAGES[kind], "input": value})
    return _BAD


def _check_str(strict: bool) -> Check:
    def check(v: Any, loc: Loc, errors: ErrorList) -> Any:
        return v if isinstance(v, str) else _error(errors, "string_type", loc, v)
    return check


def _check_int(strict: bool) -> Check:
    def check(v: Any, loc: Loc, errors: ErrorList) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if strict:
            return _error(errors, "int_type", loc, v)
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, float):
            return int(v) if v.is_integer() else _error(errors, "int_from_float", loc, v)
        if isinstance(v, str):
            try:
                return int(v.strip())
            except ValueError:
                return _error(errors, "int_parsing", loc, v)
        return _error(errors, "int_type", loc, v)
    return check


def _check_bool(strict: bool) -> Check:
    def check(v: Any, loc: Loc, errors: ErrorList) -> Any:
        if isinstance(v, bool):
            return v
        if strict:
            return _error(errors, "bool_type", loc, v)
        if isinstance(v, int | float) and v in (0, 1):
            return bool(v)
        if isinstance(v, str):
            low = v.strip().lower()
            if low in _TRUE or low in _FALSE:
                return low in _TRUE
            return _error(errors, "bool_parsing", loc, v)
        return _error(errors, "bool_type", loc, v)
    return check


def _check_float(strict: bool) -> Check:
    def check(v: Any, loc: Loc, errors: ErrorList) -> Any:
        if isinstance(v, float | int) and not (strict and isinstance(v, bool)):
            return float(v)
        if not strict and isinstance(v, str):
            try:
                return float(v.strip())
            except ValueError:
                return _error(errors, "float_parsing", loc, v)
        return _error(errors, "float_type", loc, v)
    return check


def _check_none(strict: bool) -> Check:
    def check(v: Any, loc: Loc, errors: ErrorList) -> Any:
        return None if v is None else _error(errors, "none_required", loc, v, "Input should be None")
    return check


def _compile(t: _Type, strict: bool) -> Check:
    kind = t.kind
    if kind == "any":
        return lambda v, loc, errors: v
    if kind in _SIMPLE:
        return _SIMPLE[kind](strict)
    if kind == "list":
        item = _compile(t.args[0], strict)

        def check_list(v: Any, loc: Loc, errors: ErrorList) -> Any:
            if not isinstance(v, list) and (strict or not isinstance(v, tuple)):
                return _error(errors, "list_type", loc, v)
            out = [item(x, (*loc, i), errors) for i, x in enumerate(v)]
            return _BAD if any(x is _BAD for x in out) else out
        return check_list
    if kind == "dict":
        key, value = _compile(t.args[0], strict), _compile(t.args[1], strict)

        def check_dict(v: Any, loc: Loc, errors: ErrorList) -> Any:
            if not isinstance(v, dict):
                return _error(errors, "dict_type", loc, v)
            out, bad = {}, False
            for k, x in v.items():
                kk = key(k, (*loc, k, "[key]"), errors)
                xx = value(x, (*loc, k), errors)
                bad = bad or kk is _BAD or xx is _BAD
                if not bad:
                    out[kk] = xx
            return _BAD if bad else out
        return check_dict
    if kind == "record":
        record = t.record
        assert record is not None
        return lambda v, loc, errors: record._checker(strict)(v, loc, errors)
    return _compile_union(t, strict)


_SIMPLE: dict[str, Callable[[bool], Check]] = {
    "str": _check_str, "int": _check_int, "bool": _check_bool, "float": _check_float, "none": _check_none,
}


def _compile_union(t: _Type, strict: bool) -> Check:
    nullable = any(m.kind == "none" for m in t.args)
    members = [m for m in t.args if m.kind != "none"]
    if len(members) == 1:  # Optional[X]: pydantic's nullable schema, no tag in loc
        only = _compile(members[0], strict)
        return lambda v, loc, errors: None if v is None else only(v, loc, errors)
    strict_checks = [(m.tag, _compile(m, True)) for m in members]
    lax_checks = [] if strict else [(m.tag, _compile(m, False)) for m in members]

    def check_union(v: Any, loc: Loc, errors: ErrorList) -> Any:
        if v is None and nullable:
            return None
        # smart mode, as pydantic: the first member that takes the value strictly, then laxly
        for _tag, check in strict_checks:
            out = check(v, loc, [])
            if out is not _BAD:
                return out
        for _tag, check in lax_checks:
            out = check(v, loc, [])
            if out is not _BAD:
                return out
        for tag, check in lax_checks or strict_checks:
            check(v, (*loc, tag), errors)
        return _BAD
    return check_union


# --------------------------------------------------------------------------- records


class Record:
    """Base of the API models: immutable, compared by value, built from checked input.

    Subclasses name the handling of unknown keys: ``class X(Record, extra="forbid")`` (the default)
    refuses them as the API server's strict field validation does; ``extra="ignore"`` drops them.
    """

    __record_extra__: ClassVar[str] = "forbid"
    __record_fields__: ClassVar[tuple[FieldSpec, ...]] = ()
    __record_checkers__: ClassVar[dict[bool, Check]]

    def __init_subclass__(cls, extra: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if extra is not None:
            if extra not in ("forbid", "ignore"):
                raise TypeError(f"{cls.__name__}: extra must be 'forbid' or 'ignore'")
            cls.__record_extra__ = extra
        fields = {f.name: f for f in cls.__record_fields__}
        # not inspect.get_annotations: importing inspect costs more than all of this module (issue 15)
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
            if annotation.startswith("ClassVar"):
                continue
            value = cls.__dict__.get(name, _MISSING)
            spec = value if isinstance(value, FieldSpec) else FieldSpec(value, None, None, None, None)
            spec.name, spec.annotation, spec.module = name, annotation, cls.__module__
            fields[name] = spec  # a redeclared field keeps its place, as in pydantic
            if value is not _MISSING:
                delattr(cls, name)
        cls.__record_fields__ = tuple(fields.values())
        cls.__record_checkers__ = {}

    # ----------------------------------------------------------------- checking

    @classmethod
    def _checker(cls, strict: bool) -> Check:
        """The compiled check of this class (built on first use: field types may name classes
        defined after this one)."""
        check = cls.__record_checkers__.get(strict)
        if check is None:
            check = cls._compile(strict)
            cls.__record_checkers__[strict] = check
        return check

    @classmethod
    def _compile(cls, strict: bool) -> Check:
        plan: list[tuple[str, str, Check, FieldSpec]] = []
        for f in cls.__record_fields__:
            if f.parsed is None:  # read once for the strict and the lax checker
                f.parsed = _parse(f.annotation, vars(sys.modules[f.module]))
            check = _compile(f.parsed, strict)
            if f.ge is not None or f.le is not None:
                check = _bounded(check, f.ge, f.le)
            plan.append((f.name, f.key, check, f))
        forbid = cls.__record_extra__ == "forbid"
        title = cls.__name__

        def check_record(v: Any, loc: Loc, errors: ErrorList) -> Any:
            if isinstance(v, cls):
                return v
            if not isinstance(v, dict):
                return _error(errors, "model_type", loc, v,
                              f"Input should be a valid dictionary or instance of {title}")
            values: dict[str, Any] = {}
            used: set[Any] = set()
            bad = False
            for name, key, check, f in plan:
                if key in v:
                    raw, where = v[key], key
                elif name in v:
                    raw, where = v[name], name
                elif f.required:
                    _error(errors, "missing", (*loc, key), v)
                    bad = True
                    continue
                else:
                    values[name] = f.make_default()
                    continue
                used.add(where)
                out = check(raw, (*loc, key), errors)
                bad = bad or out is _BAD
                values[name] = out
            if forbid:
                for k, x in v.items():
                    if k not in used:
                        _error(errors, "extra_forbidden", (*loc, k), x)
                        bad = True
            if bad:
                return _BAD
            obj = object.__new__(cls)
            object.__setattr__(obj, "__dict__", values)
            return obj

        return check_record

    @classmethod
    def model_validate(cls, obj: Any, *, strict: bool | None = None) -> Any:
        """``obj`` (a mapping as read from YAML/JSON, or an instance) checked and built; raises
        :class:`ValidationError` naming every problem. ``strict``: no conversions (a string is not
        a number), as ``cilia validate`` checks manifests."""
        errors: ErrorList = []
        out = cls._checker(bool(strict))(obj, (), errors)
        if out is _BAD:
            raise ValidationError(cls.__name__, errors)
        return out

    def __init__(self, **data: Any) -> None:
        built = type(self).model_validate(data)
        object.__setattr__(self, "__dict__", built.__dict__)

    # ----------------------------------------------------------------- values

    @classmethod
    def fields(cls) -> tuple[FieldSpec, ...]:
        """The declared fields, in order (inherited ones first)."""
        return cls.__record_fields__

    def __setattr__(self, name: str, value: Any) -> None:
        raise ValidationError(type(self).__name__, [
            {"type": "frozen_instance", "loc": (name,), "msg": "Instance is frozen", "input": value}])

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self), *self.__dict__.values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({inner})"

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        yield from self.__dict__.items()

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        import copy

        return _rebuild(type(self), copy.deepcopy(self.__dict__, memo))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__))

    def model_dump(
        self, *, by_alias: bool = False, exclude_none: bool = False, mode: str = "python"
    ) -> dict[str, Any]:
        """The record as plain data (``by_alias``: the YAML keys; ``exclude_none``: unset fields left out)."""
        out: dict[str, Any] = {}
        for f in self.__record_fields__:
            value = self.__dict__[f.name]
            if exclude_none and value is None:
                continue
            out[f.key if by_alias else f.name] = _dump(value, by_alias, exclude_none)
        return out


def _rebuild(cls: type[Record], values: dict[str, Any]) -> Record:
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", dict(values))
    return obj


def _dump(value: Any, by_alias: bool, exclude_none: bool) -> Any:
    if isinstance(value, Record):
        return value.model_dump(by_alias=by_alias, exclude_none=exclude_none)
    if isinstance(value, list):
        return [_dump(v, by_alias, exclude_none) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v, by_alias, exclude_none) for k, v in value.items()}
    return value


def _bounded(check: Check, ge: int | None, le: int | None) -> Check:
    def check_bounds(v: Any, loc: Loc, errors: ErrorList) -> Any:
        out = check(v, loc, errors)
        if out is _BAD:
            return out
        if ge is not None and out < ge:
            msg = f"Input should be greater than or equal to {ge}"
            return _error(errors, "greater_than_equal", loc, v, msg)
        if le is not None and out > le:
            return _error(errors, "less_than_equal", loc, v, f"Input should be less than or equal to {le}")
        return out
    return check_bounds
