"""``@frozen``: an immutable dataclass that is cheaper to define than ``@dataclass(frozen=True)``.

Python 3.11's dataclasses compile six methods one by one for a frozen class (``__init__``, ``__repr__``,
``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``), ~0.6 ms a class here: with ~60 value
classes on the way, that was a third of ``cilia trace``'s start-up (issue 15 item 2). ``@frozen``
lets :func:`dataclasses.dataclass` collect the fields (so :func:`dataclasses.fields`,
:func:`dataclasses.replace` and :func:`dataclasses.asdict` work as before) and compiles ``__init__``
alone, with the body the standard library writes; ``__eq__`` and ``__hash__`` are compiled for a
class at its first comparison or hash (the standard library's bodies: compared as fast), most classes
never are in a short run; ``__repr__``, ``__setattr__`` and ``__delattr__`` are shared by all classes
(the same text and errors). tests/test_frozen.py holds each against ``@dataclass(frozen=True)``.

For a class without dataclass bases and without ``InitVar`` fields; anything else is refused at
definition, so a class that needs more keeps ``@dataclass(frozen=True)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import MISSING, FrozenInstanceError
from reprlib import recursive_repr
from typing import Any, TypeVar

T = TypeVar("T")

_HAS_DEFAULT_FACTORY = type("_HasDefaultFactory", (), {"__repr__": lambda self: "<factory>"})()


@recursive_repr()
def _repr(self: Any) -> str:
    inner = ", ".join(
        f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr
    )
    return f"{self.__class__.__qualname__}({inner})"


def _setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _tuple(names: list[str], of: str) -> str:
    """Source of the tuple of fields ``names`` of ``of`` (``()`` for none)."""
    return f"({''.join(f'{of}.{n},' for n in names)})"


def _compiled(cls: type, name: str) -> Callable[..., Any]:
    """``cls``'s own ``__eq__`` or ``__hash__``, as the standard library writes it, installed on the
    class: made at its first use, as most classes are never compared or hashed in a short run."""
    fields = dataclasses.fields(cls)
    if name == "__eq__":
        names = [f.name for f in fields if f.compare]
        source = (" def __eq__(self, other):\n  if other.__class__ is self.__class__:\n"
                  f"   return {_tuple(names, 'self')} == {_tuple(names, 'other')}\n  return NotImplemented\n")
    else:
        names = [f.name for f in fields if (f.compare if f.hash is None else f.hash)]
        source = f" def __hash__(self):\n  return hash({_tuple(names, 'self')})\n"
    scope: dict[str, Any] = {}
    exec(f"def __create_fn__():\n{source} return {name}\n", {}, scope)
    fn: Callable[..., Any] = scope["__create_fn__"]()
    fn.__qualname__ = f"{cls.__qualname__}.{name}"
    setattr(cls, name, fn)
    return fn


def _eq(self: Any, other: Any) -> Any:
    return _compiled(self.__class__, "__eq__")(self, other)


def _hash(self: Any) -> int:
    return _compiled(self.__class__, "__hash__")(self)  # type: ignore[no-any-return]


def frozen(cls: type[T]) -> type[T]:
    """``@dataclass(frozen=True)``, defined faster (see the module's text)."""
    body = cls.__dict__
    if any(hasattr(base, "__dataclass_fields__") for base in cls.__mro__[1:]):
        raise TypeError(f"@frozen {cls.__qualname__}: a dataclass base needs @dataclass(frozen=True)")
    for name in ("__setattr__", "__delattr__"):
        if name in body:
            raise TypeError(f"@frozen {cls.__qualname__}: a frozen class cannot define {name}")
    dc: Any = dataclasses.dataclass(init=False, repr=False, eq=False)(cls)
    if any(f._field_type is not dataclasses._FIELD for f in dc.__dataclass_fields__.values()  # type: ignore[attr-defined]
           if f._field_type is not dataclasses._FIELD_CLASSVAR):  # type: ignore[attr-defined]
        raise TypeError(f"@frozen {cls.__qualname__}: InitVar fields need @dataclass(frozen=True)")
    fields = dataclasses.fields(dc)
    names: dict[str, Any] = {"__object_setattr": object.__setattr__, "MISSING": MISSING,
                             "_HAS_DEFAULT_FACTORY": _HAS_DEFAULT_FACTORY}
    params, kw_params, lines = [], [], []
    for f in fields:
        default = ""
        if f.init:
            if f.default_factory is not MISSING:
                names[f"__dflt_{f.name}"] = f.default_factory
                default = "=_HAS_DEFAULT_FACTORY"
                value = f"__dflt_{f.name}() if {f.name} is _HAS_DEFAULT_FACTORY else {f.name}"
            else:
                if f.default is not MISSING:
                    names[f"__dflt_{f.name}"] = f.default
                    default = f"=__dflt_{f.name}"
                value = f.name
            (kw_params if f.kw_only else params).append(f"{f.name}{default}")
        elif f.default_factory is not MISSING:
            names[f"__dflt_{f.name}"] = f.default_factory
            value = f"__dflt_{f.name}()"
        elif f.default is not MISSING:
            names[f"__dflt_{f.name}"] = f.default
            value = f"__dflt_{f.name}"
        else:
            continue
        lines.append(f"  __object_setattr(self, {f.name!r}, {value})")
    if hasattr(cls, "__post_init__"):
        lines.append("  self.__post_init__()")
    signature = ", ".join(["self", *params, *(["*", *kw_params] if kw_params else [])])
    source = (
        f"def __create_fn__({', '.join(names)}):\n"
        f" def __init__({signature}):\n" + ("\n".join(f" {line}" for line in lines) or "  pass") + "\n"
        " return __init__\n"
    )
    scope: dict[str, Any] = {}
    exec(source, {}, scope)
    init = scope["__create_fn__"](*names.values())
    # the annotations the standard library's __init__ carries (inspect.signature shows them)
    init.__annotations__ = {f.name: f.type for f in fields if f.init} | {"return": None}
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    explicit_hash = "__hash__" in body and not (body["__hash__"] is None and "__eq__" in body)
    for name, fn in (("__init__", init), ("__eq__", _eq), ("__repr__", _repr)):
        if name not in body:
            setattr(cls, name, fn)
    if not explicit_hash:
        cls.__hash__ = _hash  # type: ignore[assignment]
    cls.__setattr__ = _setattr  # type: ignore[assignment]
    cls.__delattr__ = _delattr  # type: ignore[assignment]
    return cls
