"""cilia.k8s.record checks input exactly as pydantic checks the same declarations.

Each Record class gets a pydantic twin built from its own field declarations (same types, aliases,
defaults, bounds, extra handling); both must give the same errors (type, loc, msg) or the same
values, in strict and lax mode, on the corpus, the examples, and generated mutations of them.
"""

from __future__ import annotations

import copy
import pickle
import sys
from pathlib import Path
from typing import Any, Union

import pydantic
import pytest
import yaml
from conftest import REPO, SEED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cilia.k8s import api, cidrgroup, kinds, secrets
from cilia.k8s.record import Field, Record, ValidationError, _parse, _Type

_TWINS: dict[type[Record], type[pydantic.BaseModel]] = {}
_SCALAR_HINTS: dict[str, Any] = {"str": str, "int": int, "bool": bool, "float": float, "any": Any,
                                 "none": type(None)}


def _hint(t: _Type) -> Any:
    if t.kind in _SCALAR_HINTS:
        return _SCALAR_HINTS[t.kind]
    if t.kind == "list":
        return list[_hint(t.args[0])]  # type: ignore[misc]
    if t.kind == "dict":
        return dict[_hint(t.args[0]), _hint(t.args[1])]  # type: ignore[misc]
    if t.kind == "union":
        return Union[tuple(_hint(m) for m in t.args)]  # noqa: UP007 - built from a runtime tuple
    assert t.record is not None
    return twin(t.record)


def twin(cls: type[Record]) -> type[pydantic.BaseModel]:
    """The pydantic model the declarations of ``cls`` describe."""
    if cls not in _TWINS:
        fields: dict[str, Any] = {}
        for f in cls.fields():
            kw: dict[str, Any] = {}
            if f.alias:
                kw["alias"] = f.alias
            if f.ge is not None:
                kw["ge"] = f.ge
            if f.le is not None:
                kw["le"] = f.le
            if f.default_factory is not None:
                kw["default_factory"] = f.default_factory
            elif not f.required:
                kw["default"] = f.default
            fields[f.name] = (_hint(_parse(f.annotation, vars(sys.modules[f.module]))), pydantic.Field(**kw))
        config = pydantic.ConfigDict(extra=cls.__record_extra__, populate_by_name=True, frozen=True)  # type: ignore[typeddict-item]
        _TWINS[cls] = pydantic.create_model(cls.__name__, __config__=config, **fields)
    return _TWINS[cls]


def _records() -> list[type[Record]]:
    out, todo = [], list(Record.__subclasses__())
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo += cls.__subclasses__()
    return sorted({c for c in out if c.__module__.startswith("cilia.")}, key=lambda c: c.__qualname__)


def _outcome(model: Any, data: Any, strict: bool) -> tuple[str, Any]:
    try:
        value = model.model_validate(data, strict=strict)
    except (ValidationError, pydantic.ValidationError) as exc:
        return "errors", [(e["type"], e["loc"], e["msg"]) for e in exc.errors(include_url=False)]
    return "value", value.model_dump(by_alias=True)


def assert_same(cls: type[Record], data: Any) -> None:
    for strict in (True, False):
        ours, theirs = _outcome(cls, data, strict), _outcome(twin(cls), data, strict)
        assert ours == theirs, f"{cls.__name__} strict={strict}: {data!r}"


# --------------------------------------------------------------------------- documents

_KIND_MODELS: dict[str, type[Record]] = {
    "CiliumNetworkPolicy": api.CiliumNetworkPolicy,
    "CiliumClusterwideNetworkPolicy": api.CiliumNetworkPolicy,
    "NetworkPolicy": api.NetworkPolicy,
    "CiliumCIDRGroup": cidrgroup.CIDRGroupModel,
    "Secret": secrets.SecretModel,
    **{kind: model for kind, (model, _) in kinds.OBJECT_MODELS.items()},
}


def _documents(root: Path) -> list[tuple[type[Record], Any]]:
    out = []
    for path in sorted(root.rglob("*.y*ml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") in _KIND_MODELS:
                out.append((_KIND_MODELS[doc["kind"]], doc))
    return out


EXAMPLES = _documents(REPO / "examples") + _documents(REPO / "tests")


def test_every_record_has_a_twin() -> None:
    records = _records()
    assert api.Rule in records and kinds.PodModel in records and len(records) > 60
    for cls in records:
        assert twin(cls).model_fields.keys() == {f.name for f in cls.fields()}


def test_examples_agree() -> None:
    assert len(EXAMPLES) > 20
    for cls, doc in EXAMPLES:
        assert_same(cls, doc)


def test_corpus_agrees(corpus: Path) -> None:
    docs = _documents(corpus)
    assert len(docs) > 150
    for cls, doc in docs:
        assert_same(cls, doc)


# --------------------------------------------------------------------------- generated input

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 70000) | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "80", " 7 ", "yes", "TCP", "1.5", "a"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["name", "port", "matchLabels", "app", "x", "toPorts", "ports", "cidr"]), inner, max_size=3),
    max_leaves=8,
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_documents_agree(data: st.DataObject) -> None:
    cls, doc = data.draw(st.sampled_from(EXAMPLES))
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        if not path:
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = data.draw(_JSON)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["deny", "matchName", "mv", "name"]))] = data.draw(_JSON)
        break
    assert_same(cls, doc)


# --------------------------------------------------------------------------- the record itself


class _Inner(Record, extra="forbid"):
    key: str
    value: str | None = Field(default=None, alias="matchValue")


class _Outer(Record, extra="ignore"):
    inner: _Inner | None = None
    items: list[_Inner] = Field(default_factory=list)
    port: int = Field(default=1, ge=1, le=65535)
    either: str | int | None = None


def test_synthetic_records_agree() -> None:
    for data in [
        {}, {"inner": {"key": "a"}}, {"inner": {"key": 1, "mv": 2, "matchValue": 3}}, {"items": [{}, 3]},
        {"port": 0}, {"port": "70000"}, {"port": True}, {"port": 2.0}, {"port": 2.5}, {"either": True},
        {"either": 1.0}, {"either": "x"}, {"inner": "x"}, {"inner": None}, {"unknown": 1}, 3, None,
        {"items": ({"key": "a"},)}, {"inner": {"key": "a", "value": "v"}},
    ]:
        assert_same(_Outer, data)


def test_values_behave_as_frozen_models() -> None:
    one = _Outer(inner=_Inner(key="a"), port=8)
    assert one == _Outer.model_validate({"inner": {"key": "a"}, "port": 8})
    assert one != _Outer(port=8)
    assert one.items == [] and one.inner is not None and one.inner.value is None
    with pytest.raises(ValidationError):
        one.port = 9  # type: ignore[misc]
    assert hash(_Inner(key="a")) == hash(_Inner(key="a", value=None))
    assert pickle.loads(pickle.dumps(one)) == one
    deep = copy.deepcopy(one)
    assert deep == one and deep.items is not one.items
    assert one.model_dump(by_alias=True, exclude_none=True) == {
        "inner": {"key": "a"}, "items": [], "port": 8}
    assert repr(_Inner(key="a")) == "_Inner(key='a', value=None)"
    with pytest.raises(ValidationError, match="port"):
        _Outer(port="x")


def test_seed_policy_round_trips() -> None:
    data = yaml.safe_load((SEED / "deny-a-to-b-fixed.yaml").read_text())
    model = api.CiliumNetworkPolicy.model_validate(data, strict=True)
    assert model.to_yaml_obj() == data
    assert model.spec is not None and model.spec.endpoint_selector is not None
    assert model.spec.endpoint_selector.match_labels == {"app": "app-a"}
