"""Selector keys, matching (sources, operators, CIDR prefixes) and value semantics (§2.2)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cilia.identity.labels import Label, Labels, prefix_to_cidr_key
from cilia.identity.selector import (
    Operator,
    Requirement,
    Selector,
    SelectorError,
    extended_key,
    split_extended_key,
)
from cilia.k8s import api


def sel(obj: dict) -> Selector:
    return Selector.from_api(api.LabelSelector.model_validate(obj))


def expr(key: str, op: str, *values: str) -> dict:
    return {"matchExpressions": [{"key": key, "operator": op, "values": list(values)}]}


def labels(*texts: str) -> Labels:
    return Labels.parse(texts)


@pytest.mark.parametrize(
    ("written", "extended"),
    [
        ("app", "any.app"),
        ("k8s:app", "k8s.app"),
        ("any:app", "any.app"),
        ("reserved:host", "reserved.host"),
        ("$host", "reserved.host"),
        ("reserved.host", "reserved.host"),
        ("io.kubernetes.pod.namespace", "any.io.kubernetes.pod.namespace"),
        ("k8s:io.cilium.k8s.namespace.labels.team", "k8s.io.cilium.k8s.namespace.labels.team"),
        ("k8s:a:b", "k8s.a:b"),  # only the first ':' separates the source
        ("cidr:10.0.0.0/8", "cidr.10.0.0.0/8"),
        ("app=web", "any.app"),  # a value written into the key is dropped, as Cilium does
    ],
)
def test_extended_key(written: str, extended: str) -> None:
    assert extended_key(written) == extended


@pytest.mark.parametrize(
    ("extended", "parts"),
    [
        ("any.app", ("any", "app")),
        ("k8s.io.kubernetes.pod.namespace", ("k8s", "io.kubernetes.pod.namespace")),
        ("cidr.10.0.0.0/8", ("cidr", "10.0.0.0/8")),
        ("app", ("any", "app")),
    ],
)
def test_split_extended_key(extended: str, parts: tuple[str, str]) -> None:
    assert split_extended_key(extended) == parts


def test_from_api_normalizes_match_labels_and_expressions() -> None:
    s = sel(
        {
            "matchLabels": {"app": "web", "k8s:tier": "fe"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev", "prod"]},
                {"key": "k8s:debug", "operator": "DoesNotExist"},
            ],
        }
    )
    assert s.requirements == (
        Requirement("any.app", Operator.IN, ("web",)),
        Requirement("any.env", Operator.IN, ("dev", "prod")),
        Requirement("k8s.debug", Operator.DOES_NOT_EXIST),
        Requirement("k8s.tier", Operator.IN, ("fe",)),
    )
    assert str(s) == "any:app=web, any:env in (dev, prod), !k8s:debug, k8s:tier=fe"


def test_selectors_compare_and_hash_by_content() -> None:
    a = sel({"matchLabels": {"app": "web", "k8s:tier": "fe"}})
    b = Selector.from_match({"k8s.tier": "fe"}).with_requirement(Requirement.equals("any.app", "web"))
    c = sel(
        {
            "matchExpressions": [
                {"key": "app", "operator": "In", "values": ["web"]},
                {"key": "k8s:tier", "operator": "In", "values": ["fe"]},
            ]
        }
    )
    assert a == b == c
    assert len({a, b, c}) == 1
    assert a != sel({"matchLabels": {"app": "web"}})


def test_pickle_and_copy_round_trip() -> None:
    import copy
    import pickle

    s = sel(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "cidr:10.0.0.0/8", "operator": "Exists"}],
        }
    )
    for other in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s)):
        assert other == s and hash(other) == hash(s)
        assert other.matches(labels("k8s:app=web", "cidr:10.1.0.0/16"))
    assert pickle.loads(pickle.dumps(Selector.none())) == Selector.none()


def test_wildcard_none_and_empty() -> None:
    everything = labels("k8s:app=x", "reserved:world")
    assert sel({}) == Selector.wildcard() == Selector.from_api(None)
    assert Selector.wildcard().is_wildcard
    assert Selector.wildcard().matches(everything)
    assert Selector.wildcard().matches(Labels())
    assert not Selector.none().is_wildcard
    assert not Selector.none().matches(everything)
    assert not Selector.none().matches(Labels())
    assert Selector.none() != Selector.wildcard()
    assert Selector.none().and_(Selector.wildcard()) == Selector.none()
    assert str(Selector.wildcard()) == "<all>"
    assert str(Selector.none()) == "<none>"


def test_and_and_with_match() -> None:
    a = sel({"matchLabels": {"k8s:app": "a", "k8s:io.kubernetes.pod.namespace": "x"}})
    b = sel(expr("k8s:io.kubernetes.pod.namespace", "Exists"))
    assert str(a.and_(b)) == "k8s:app=a, k8s:io.kubernetes.pod.namespace, k8s:io.kubernetes.pod.namespace=x"
    assert str(a.with_match("k8s.io.kubernetes.pod.namespace", "y")) == (
        "k8s:app=a, k8s:io.kubernetes.pod.namespace=y"
    )
    assert a.has_key("k8s.app") and not a.has_key("any.app")
    assert a.has_key_prefix("k8s.io.kubernetes")
    assert a.match_values("k8s.app") == ("a",)
    assert a.match_values("k8s.nope") is None


@pytest.mark.parametrize(
    ("selector", "identity", "expected"),
    [
        # source any: a label of that key from any source
        ({"matchLabels": {"app": "web"}}, ("k8s:app=web",), True),
        ({"matchLabels": {"app": "web"}}, ("container:app=web",), True),
        ({"matchLabels": {"app": "web"}}, ("k8s:app=db",), False),
        # concrete source: only that source
        ({"matchLabels": {"k8s:app": "web"}}, ("container:app=web",), False),
        ({"matchLabels": {"k8s:app": "web"}}, ("k8s:app=web",), True),
        ({"matchLabels": {"container:app": "web"}}, ("container:app=web",), True),
        # reserved labels have empty values
        ({"matchLabels": {"reserved:host": ""}}, ("reserved:host",), True),
        ({"matchLabels": {"$host": ""}}, ("reserved:host",), True),
        ({"matchLabels": {"reserved:host": ""}}, ("k8s:host",), False),
        ({"matchLabels": {"host": ""}}, ("reserved:host",), True),
        # operators
        (
            expr("env", "In", "a", "b"),
            ("k8s:env=b",),
            True,
        ),
        (
            expr("env", "In", "a", "b"),
            ("k8s:env=c",),
            False,
        ),
        (expr("env", "In", "a"), (), False),
        (expr("env", "NotIn", "a"), ("k8s:env=a",), False),
        (expr("env", "NotIn", "a"), ("k8s:env=b",), True),
        (expr("env", "NotIn", "a"), (), True),
        (expr("env", "Exists"), ("k8s:env=",), True),
        (expr("env", "Exists"), ("k8s:other=x",), False),
        (expr("env", "DoesNotExist"), ("k8s:env=x",), False),
        (expr("env", "DoesNotExist"), (), True),
        (expr("k8s:env", "DoesNotExist"), ("container:env=x",), True),
        # all requirements must hold
        ({"matchLabels": {"a": "1", "b": "2"}}, ("k8s:a=1",), False),
        ({"matchLabels": {"a": "1", "b": "2"}}, ("k8s:a=1", "k8s:b=2", "k8s:c=3"), True),
    ],
)
def test_matches(selector: dict, identity: tuple[str, ...], expected: bool) -> None:
    assert sel(selector).matches(labels(*identity)) is expected


@pytest.mark.parametrize(
    ("selector_prefix", "identity_prefix", "expected"),
    [
        ("10.0.0.0/8", "10.1.2.3/32", True),
        ("10.0.0.0/8", "10.0.0.0/8", True),
        ("10.0.0.0/8", "10.0.0.0/7", False),  # broader label is not inside the selector
        ("10.1.2.3/32", "10.0.0.0/8", False),
        ("10.0.0.0/8", "11.0.0.1/32", False),
        ("0.0.0.0/1", "10.0.0.0/8", True),
        ("2001:db8::/32", "2001:db8:1::5/128", True),
        ("2001:db8::/32", "2001:db9::/48", False),
        ("::/1", "::1/128", True),
        ("10.0.0.0/8", "::a00:1/128", False),  # families never mix
        ("fe80::/10", "fe80::1/128", True),
    ],
)
def test_cidr_prefix_aware_matching(selector_prefix: str, identity_prefix: str, expected: bool) -> None:
    s = Selector((Requirement.exists(f"cidr.{prefix_to_cidr_key(selector_prefix)}"),))
    identity = Labels([Label("cidr", prefix_to_cidr_key(identity_prefix)), Label("reserved", "world")])
    assert s.matches(identity) is expected
    # DoesNotExist is the exact complement (except rules rely on it)
    s_not = Selector((Requirement.does_not_exist(f"cidr.{prefix_to_cidr_key(selector_prefix)}"),))
    assert s_not.matches(identity) is not expected


def test_cidr_matching_needs_cidr_source() -> None:
    # an `any` key is not prefix-aware: only the exact key matches
    s = Selector((Requirement.exists("any.10.0.0.0/8"),))
    assert not s.matches(labels("cidr:10.1.2.3/32"))
    assert s.matches(labels("cidr:10.0.0.0/8"))


def test_bad_operator_and_values() -> None:
    with pytest.raises(SelectorError, match=r"'Gt' is not a valid label selector operator for key 'any\.x'"):
        sel(expr("x", "Gt", "1"))
    with pytest.raises(SelectorError, match="values set must be non-empty for In"):
        Requirement("any.x", Operator.IN, ())
    with pytest.raises(SelectorError, match="values set must be empty for Exists"):
        Requirement("any.x", Operator.EXISTS, ("a",))


# ---------------------------------------------------------------------- property test

SOURCES = ("k8s", "container", "reserved")
KEYS = ("app", "env", "tier")
VALUES = ("", "a", "b")

identities = st.lists(
    st.tuples(st.sampled_from(SOURCES), st.sampled_from(KEYS), st.sampled_from(VALUES)),
    max_size=5,
    unique_by=lambda t: t[1],  # one label per key, as in Cilium's identity label map
).map(lambda ts: Labels(Label(*t) for t in ts))

requirements = st.builds(
    lambda src, key, op, vals: Requirement(
        f"{src}.{key}", op, tuple(vals) if op in (Operator.IN, Operator.NOT_IN) else ()
    ),
    st.sampled_from((*SOURCES, "any")),
    st.sampled_from(KEYS),
    st.sampled_from(list(Operator)),
    st.lists(st.sampled_from(VALUES), min_size=1, max_size=3),
)


def reference_match(reqs: tuple[Requirement, ...], identity: Labels) -> bool:
    """Plain Kubernetes semantics over (source, key, value) triples, written independently."""
    triples = [(lb.source, lb.key, lb.value) for lb in identity]
    for r in reqs:
        source, _, key = r.key.partition(".")
        hits = [v for s, k, v in triples if k == key and (source == "any" or s == source)]
        present = bool(hits)
        if r.operator == "Exists" and not present:
            return False
        if r.operator == "DoesNotExist" and present:
            return False
        if r.operator == "In" and not (present and hits[0] in r.values):
            return False
        if r.operator == "NotIn" and present and hits[0] in r.values:
            return False
    return True


@settings(max_examples=400, deadline=None)
@given(st.lists(requirements, max_size=4), identities)
def test_matches_agrees_with_reference(reqs: list[Requirement], identity: Labels) -> None:
    s = Selector(tuple(reqs))
    assert s.matches(identity) is reference_match(s.requirements, identity)


def prefixes(version: int) -> st.SearchStrategy[str]:
    bits = 32 if version == 4 else 128
    return st.builds(
        lambda addr, plen: str(
            (ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network)((addr, plen), strict=False)
        ),
        st.integers(0, 2**bits - 1),
        st.integers(1, bits),
    )


any_prefix = st.one_of(prefixes(4), prefixes(6))


@settings(max_examples=400, deadline=None)
@given(any_prefix, any_prefix)
def test_cidr_matching_is_prefix_containment(selector_prefix: str, identity_prefix: str) -> None:
    s = Selector((Requirement.exists(f"cidr.{prefix_to_cidr_key(selector_prefix)}"),))
    identity = Labels([Label("cidr", prefix_to_cidr_key(identity_prefix)), Label("reserved", "world")])
    a, b = ipaddress.ip_network(selector_prefix), ipaddress.ip_network(identity_prefix)
    assert s.matches(identity) is (a.version == b.version and b.subnet_of(a))  # type: ignore[arg-type]
