"""``@frozen`` behaves as ``@dataclass(frozen=True)``: construction, defaults, equality, hashing, repr,
immutability, replace/asdict/fields, pickling — each class checked against its stdlib twin, and every
@frozen class cilia defines is defined again with the stdlib decorator and compared."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pickle
import sys
from dataclasses import FrozenInstanceError, field
from typing import Any, ClassVar

import pytest

from cilia.k8s.frozen import frozen


def _both(body: str) -> tuple[type, type]:
    """The class ``C`` of ``body`` under @frozen and under @dataclass(frozen=True)."""
    out = []
    for deco in ("frozen", "dataclasses.dataclass(frozen=True)"):
        scope: dict[str, Any] = {"frozen": frozen, "dataclasses": dataclasses, "field": field,
                                 "ClassVar": ClassVar}
        exec(f"@{deco}\nclass C:\n" + body, scope)
        out.append(scope["C"])
    return out[0], out[1]


CASES = {
    "plain": ("    a: int\n    b: str = 'x'\n", [(1,), (1, "y"), ((), {"a": 2, "b": "z"})]),
    "factory and no-compare": (
        "    a: int\n    items: list = field(default_factory=list)\n"
        "    note: str = field(default='n', compare=False)\n    hidden: int = field(default=0, repr=False)\n",
        [(1,), (1, [2]), (1, [2], "m", 3)],
    ),
    "kw_only and init=False": (
        "    a: int\n    b: int = field(default=5, kw_only=True)\n    c: int = field(default=7, init=False)\n"
        "    k: ClassVar[int] = 3\n",
        [(1,), ((1,), {"b": 2})],
    ),
    "post_init": (
        "    a: int\n    def __post_init__(self):\n        object.__setattr__(self, 'a', self.a * 2)\n",
        [(1,), (3,)],
    ),
    "no fields": ("    '''nothing'''\n", [()]),
    "hash=False": ("    a: int\n    b: int = field(default=0, hash=False)\n", [(1, 2), (1, 3)]),
}


def _call(cls: type, args: Any) -> Any:
    if len(args) == 2 and isinstance(args[0], tuple) and isinstance(args[1], dict):
        return cls(*args[0], **args[1])
    return cls(*args)


@pytest.mark.parametrize("case", sorted(CASES))
def test_behaves_as_a_frozen_dataclass(case: str) -> None:
    body, calls = CASES[case]
    ours, theirs = _both(body)
    made = [(_call(ours, a), _call(theirs, a)) for a in calls]
    for o, t in made:
        assert repr(o) == repr(t)
        assert dataclasses.asdict(o) == dataclasses.asdict(t)
        assert [f.name for f in dataclasses.fields(o)] == [f.name for f in dataclasses.fields(t)]
        try:
            expected = hash(t)
        except TypeError:
            with pytest.raises(TypeError):
                hash(o)
        else:
            assert hash(o) == expected
        assert repr(dataclasses.replace(o)) == repr(dataclasses.replace(t))
        for name in [f.name for f in dataclasses.fields(o)] or ["x"]:
            with pytest.raises(FrozenInstanceError):
                setattr(o, name, 1)
            with pytest.raises(FrozenInstanceError):
                delattr(o, name)
    for (o1, t1) in made:
        for (o2, t2) in made:
            assert (o1 == o2) == (t1 == t2)
    assert str(inspect.signature(ours)) == str(inspect.signature(theirs))
    assert ours.__match_args__ == theirs.__match_args__  # type: ignore[attr-defined]


def test_refuses_what_it_does_not_do() -> None:
    @dataclasses.dataclass(frozen=True)
    class Base:
        a: int

    with pytest.raises(TypeError, match="dataclass base"):
        frozen(type("Sub", (Base,), {"__annotations__": {"b": "int"}}))
    with pytest.raises(TypeError, match="__setattr__"):
        frozen(type("S", (), {"__setattr__": lambda self, n, v: None}))


def _frozen_classes() -> list[type]:
    """Every @frozen class in cilia's modules that are imported by now, and those of the CLI's paths."""
    for mod in ("cilia.cli.tracing", "cilia.cli.validating", "cilia.analyze.cluster", "cilia.k8s.objects"):
        importlib.import_module(mod)
    found = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("cilia.") or module is None:
            continue
        for obj in vars(module).values():
            if (isinstance(obj, type) and obj.__module__ == name and "__dataclass_fields__" in obj.__dict__
                    and obj.__dict__.get("__setattr__") is frozen.__globals__["_setattr"]):
                found.append(obj)
    return found


def _copy(f: dataclasses.Field[Any]) -> dataclasses.Field[Any]:
    return field(default=f.default, default_factory=f.default_factory, init=f.init,  # type: ignore[call-overload]
                 repr=f.repr, hash=f.hash, compare=f.compare, kw_only=f.kw_only)


def test_cilia_classes_are_the_same_under_dataclass() -> None:
    classes = _frozen_classes()
    assert len(classes) > 20
    for cls in classes:
        fields = dataclasses.fields(cls)
        spec = [(f.name, f.type, _copy(f)) for f in fields]
        twin = dataclasses.make_dataclass(cls.__name__, spec, frozen=True)
        assert str(inspect.signature(cls)) == str(inspect.signature(twin)), cls
        assert [(f.name, f.compare, f.hash, f.repr) for f in fields] == [
            (f.name, f.compare, f.hash, f.repr) for f in dataclasses.fields(twin)], cls
        assert cls.__match_args__ == twin.__match_args__  # type: ignore[attr-defined]


def test_a_cilia_value_pickles_and_replaces() -> None:
    from cilia.k8s.objects import Namespace

    ns = Namespace("web", (("team", "a"),))
    assert pickle.loads(pickle.dumps(ns)) == ns and hash(pickle.loads(pickle.dumps(ns))) == hash(ns)
    assert dataclasses.replace(ns, name="db").name == "db" and ns.name == "web"
    assert repr(ns).startswith("Namespace(name='web', labels=(('team', 'a'),), declared=True, source=")
