"""The L7 matchers against Cilium's own tables: the HTTP policies and requests of cilium/proxy's
tests/cilium_http_integration_test.cc (BASIC_POLICY and the expressible part of
HEADER_ACTION_POLICY), the SniPattern examples of cilium/proxy's network_policy.h, and the header
translation of pkg/envoy/server.go getHTTPRule (``headers`` "Name: value" / bare name)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cilia.policy.l7 import (
    HeaderAction,
    HeaderMatch,
    HTTPRule,
    L7Parser,
    L7PortPolicy,
    L7Rule,
    full_match,
    re2_error,
    server_name_error,
    server_name_matches,
)
from cilia.policy.l7resolve import http_rule
from cilia.policy.types import Direction, RuleRef

R1 = RuleRef("CiliumNetworkPolicy", "default", "one", "ingress", 0)
R2 = RuleRef("CiliumNetworkPolicy", "default", "two", "ingress", 0)

BASIC = (
    HTTPRule(path="/allowed"),
    HTTPRule(path=".*public$"),
    HTTPRule(host="allowedHOST"),
    HTTPRule(host=".*REGEX.*"),
    HTTPRule(method="PUT", path="/public/opinions"),
)
BASIC_POLICY = L7PortPolicy(
    Direction.INGRESS,
    6,
    80,
    L7Parser.HTTP,
    15001,
    (
        L7Rule(frozenset({1}), BASIC, refs=frozenset({R1})),
        L7Rule(frozenset({2}), (HTTPRule(path="/only-2-allowed"),), refs=frozenset({R2})),
    ),
)

# (test name in cilium_http_integration_test.cc, method, path, authority, allowed)
BASIC_REQUESTS = [
    ("DeniedPathPrefix", "GET", "/prefix", "host", False),
    ("AllowedPathPrefix", "GET", "/allowed", "host", True),
    ("AllowedPathRegex", "GET", "/maybe/public", "host", True),
    ("DeniedPath", "GET", "/maybe/private", "host", False),
    ("AllowedHostString", "GET", "/maybe/private", "allowedHOST", True),
    ("AllowedHostRegex", "GET", "/maybe/private", "hostREGEXname", True),
    ("DeniedMethod", "POST", "/maybe/private", "host", False),
    ("AcceptedMethod", "PUT", "/public/opinions", "host", True),
    ("L3DeniedPath", "GET", "/only-2-allowed", "host", False),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "host", "allowed"), BASIC_REQUESTS, ids=[r[0] for r in BASIC_REQUESTS]
)
def test_cilium_proxy_basic_policy(name: str, method: str, path: str, host: str, allowed: bool) -> None:
    d = BASIC_POLICY.decide_http(1, method, path, host, {})
    assert d.allowed is allowed
    assert d.by == (frozenset({R1}) if allowed else frozenset())
    assert d.refused_by == (frozenset() if allowed else frozenset({R1}))


def test_remote_scoping() -> None:
    assert BASIC_POLICY.decide_http(2, "GET", "/only-2-allowed", "host", {}).allowed
    assert not BASIC_POLICY.decide_http(2, "GET", "/allowed", "host", {}).allowed
    d = BASIC_POLICY.decide_http(3, "GET", "/allowed", "host", {})  # no rule for this peer at all
    assert not d.allowed and d.refused_by == frozenset() and "no rule for this peer" in d.reason


HEADER_ACTIONS = (
    HTTPRule(path="/allowed", headers=(HeaderMatch("header1", "value1", "REPLACE"),)),
    HTTPRule(path=".*public$", headers=(HeaderMatch("user-agent", "CuRL", "DELETE"),)),
    HTTPRule(host="allowedHOST", headers=(HeaderMatch("header2", "value2", "ADD"),)),
    HTTPRule(host=".*REGEX.*", headers=(HeaderMatch("header42", "42", "DELETE"),)),
    HTTPRule(method="PUT", path="/public/opinions"),
)
HEADER_POLICY = L7PortPolicy(
    Direction.INGRESS,
    6,
    80,
    L7Parser.HTTP,
    15001,
    (L7Rule(frozenset({1}), HEADER_ACTIONS, refs=frozenset({R1})),),
)

# (test name, method, path, authority, headers, allowed, header actions)
HEADER_REQUESTS: list[tuple[str, str, str, str, dict[str, str], bool, set[HeaderAction]]] = [
    ("DeniedPathPrefix", "GET", "/prefix", "host", {}, False, set()),
    ("AllowedPathPrefix", "GET", "/allowed", "host", {"header1": "value1"}, True, set()),
    (
        "AllowedPathPrefixStrippedHeader",
        "GET",
        "/allowed",
        "host",
        {"header1": "value2"},
        True,
        {HeaderAction("REPLACE", "header1", "value1")},
    ),
    (
        "AllowedPathRegexDeleteHeader",
        "GET",
        "/maybe/public",
        "host",
        {"User-Agent": "test"},
        True,
        {HeaderAction("DELETE", "user-agent")},
    ),
    (
        "AllowedHostRegexDeleteHeader",
        "GET",
        "/maybe/private",
        "hostREGEXname",
        {"header42": "test"},
        True,
        {HeaderAction("DELETE", "header42")},
    ),
    (
        "AllowedReplaced",
        "GET",
        "/allowed",
        "allowedHOST",
        {},
        True,
        {HeaderAction("REPLACE", "header1", "value1"), HeaderAction("ADD", "header2", "value2")},
    ),
    ("DeniedMethod", "POST", "/maybe/private", "host", {}, False, set()),
    ("AcceptedMethod", "PUT", "/public/opinions", "host", {}, True, set()),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "host", "headers", "allowed", "actions"),
    HEADER_REQUESTS,
    ids=[r[0] for r in HEADER_REQUESTS],
)
def test_cilium_proxy_header_action_policy(
    name: str, method: str, path: str, host: str, headers: dict[str, str], allowed: bool, actions: set[Any]
) -> None:
    d = HEADER_POLICY.decide_http(1, method, path, host, headers)
    assert d.allowed is allowed
    # With header matches every matching rule runs its actions (no short circuit), as the proxy does.
    assert set(d.actions) == actions


def test_mismatch_actions_semantics() -> None:
    def check(h: HeaderMatch, headers: dict[str, str]) -> tuple[bool, tuple[HeaderAction, ...]]:
        return HTTPRule(headers=(h,)).check("GET", "/", "h", headers)

    # no action: exact value, or presence for an empty value; names are case-insensitive
    assert check(HeaderMatch("X-Token", "abc"), {"x-token": "abc"}) == (True, ())
    assert check(HeaderMatch("X-Token", "abc"), {"x-token": "abd"}) == (False, ())
    assert check(HeaderMatch("X-Token"), {"X-TOKEN": ""}) == (True, ())
    assert check(HeaderMatch("X-Token"), {}) == (False, ())
    # LOG lets the request through and logs
    assert check(HeaderMatch("X-Token", "abc", "LOG"), {}) == (True, (HeaderAction("LOG", "X-Token", None),))
    # DELETE of a presence match does nothing; of a missing header does nothing
    assert check(HeaderMatch("X-Token", None, "DELETE"), {}) == (True, ())
    assert check(HeaderMatch("X-Token", "abc", "DELETE"), {}) == (True, ())
    # a Secret that does not exist and no inline value: the rule never matches, whatever the action
    missing = HeaderMatch("X-Token", None, "ADD", ("default", "nope"), unresolved=True)
    assert check(missing, {"X-Token": "x"}) == (False, ())


def test_headers_and_secrets_translated_as_cilium_does() -> None:
    def secret(ns: str | None, name: str) -> SimpleNamespace:
        return SimpleNamespace(namespace=ns, name=name)

    api_rule = SimpleNamespace(
        method="GET",
        path="/p",
        host="",
        headers=["X-My-Header: true", "X-Present", "X-Two: a b"],
        header_matches=[
            SimpleNamespace(name="X-Secret", value="fallback", mismatch=None, secret=secret(None, "s")),
            SimpleNamespace(name="X-Inline", value="v", mismatch="REPLACE", secret=None),
            SimpleNamespace(name="X-Gone", value=None, mismatch="ADD", secret=secret("x", "none")),
        ],
    )
    r = http_rule(api_rule, "default", {("default", "s"): "sekrit"})
    assert r.headers == (
        HeaderMatch("X-My-Header", "true"),
        HeaderMatch("X-Present"),
        HeaderMatch("X-Two", "a b"),
        HeaderMatch("X-Secret", "sekrit", "", ("default", "s")),
        HeaderMatch("X-Inline", "v", "REPLACE"),
        HeaderMatch("X-Gone", None, "ADD", ("x", "none"), unresolved=True),
    )
    # the Secret missing: the inline value is used (Cilium's getSecretString)
    r = http_rule(api_rule, "default", {})
    assert r.headers[3] == HeaderMatch("X-Secret", "fallback", "", ("default", "s"))


def test_regexes_match_the_whole_value_in_re2_syntax() -> None:
    assert full_match("/public", "/public") and not full_match("/public", "/public/x")
    assert not full_match("/public", "/x/public")
    assert full_match("GET|HEAD", "HEAD") and not full_match("GET|HEAD", "GETX")
    # the query string is part of :path
    assert not full_match("/public", "/public?a=1") and full_match("/public.*", "/public?a=1")
    # RE2 refuses what Go's regexp refuses (lookarounds, backreferences)
    assert re2_error("(?=x)") is not None and re2_error(r"(a)\1") is not None
    assert re2_error("/api/v[0-9]+/.*") is None


# SniPattern examples from cilium/proxy (network_policy.h), and exact names case-insensitively.
SNI = [
    ("*.cilium.io", "www.cilium.io", True),
    ("*.cilium.io", "blog.cilium.io", True),
    ("*.cilium.io", "cilium.io", False),
    ("*.cilium.io", "foo.bar.cilium.io", False),
    ("*.cilium.io", "kubernetes.io", False),
    ("*cilium.io", "cilium.io", True),
    ("*cilium.io", "sub-cilium.io", True),
    ("*cilium.io", "subcilium.io", True),
    ("*cilium.io", "www.cilium.io", False),
    ("sub*.cilium.io", "sub.cilium.io", True),
    ("sub*.cilium.io", "subdomain.cilium.io", True),
    ("sub*.cilium.io", "www.cilium.io", False),
    ("sub*.cilium.io", "blog-sub.cilium.io", False),
    ("sub*.cilium.io", "blog.sub.cilium.io", False),
    ("**.cilium.io", "www.cilium.io", True),
    ("**.cilium.io", "test.app.cilium.io", True),
    ("**.cilium.io", "cilium.io", False),
    ("*", "any.valid.name", True),
    ("www.Example.com", "WWW.example.COM", True),
    ("www.example.com", "", False),
]


@pytest.mark.parametrize(("pattern", "sni", "match"), SNI)
def test_server_name_patterns(pattern: str, sni: str, match: bool) -> None:
    assert server_name_matches(pattern, sni) is match


def test_server_name_validation() -> None:
    for ok in ("www.example.com", "*.example.com", "**.example.com", "sub*.x.io", "*", "a_b.io"):
        assert server_name_error(ok) is None, ok
    for bad in ("", "a..b", "example.com.", "***.a", "a b.com", "ex*ample*.c*m**"):
        assert server_name_error(bad) is not None, bad
