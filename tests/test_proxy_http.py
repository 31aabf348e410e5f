"""The HTTP proxy's pure parts: RE2 → PCRE2 equivalence (against google-re2 and the PCRE2 library
HAProxy links), the rules document and the HAProxy configuration (golden files), access log lines."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import pytest

from cilia.policy.l7 import HeaderMatch, HTTPRule, L7Parser, L7PortPolicy, L7Rule, full_match
from cilia.policy.l7 import server_name_matches as sni_matches
from cilia.policy.types import Direction, RuleRef
from cilia.proxy.http.accesslog import AccessLogError, TlsRecord, parse_any, parse_line
from cilia.proxy.http.config import ProxyConfig, ProxyFiles, StaticDestination, render
from cilia.proxy.http.regex import RegexError, to_pcre2
from cilia.proxy.http.rules import (
    PortPolicyAt,
    RulesError,
    decision_map,
    decision_map_text,
    field,
    native_field,
    sni_regex,
    unfield,
)
from cilia.proxy.http.rules import render as render_rules
from tests.helpers_analyze import check_golden

PCRE2_CASELESS = 0x00000008


class Pcre2:
    """The system's libpcre2-8 (the library HAProxy matches with), through ctypes."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("pcre2-8")
        if name is None:
            pytest.skip("libpcre2-8 not installed (apt-get install -y libpcre2-8-0)")
        lib = ctypes.CDLL(name)
        lib.pcre2_compile_8.restype = ctypes.c_void_p
        lib.pcre2_compile_8.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32,
                                        ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_size_t),
                                        ctypes.c_void_p]  # fmt: skip
        lib.pcre2_match_data_create_from_pattern_8.restype = ctypes.c_void_p
        lib.pcre2_match_data_create_from_pattern_8.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.pcre2_match_8.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                      ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
        lib.pcre2_match_data_free_8.argtypes = [ctypes.c_void_p]
        lib.pcre2_code_free_8.argtypes = [ctypes.c_void_p]
        self.lib = lib

    def search(self, pattern: str, subject: str, caseless: bool = False) -> bool:
        err, off = ctypes.c_int(), ctypes.c_size_t()
        p = pattern.encode()
        code = self.lib.pcre2_compile_8(p, len(p), PCRE2_CASELESS if caseless else 0,
                                        ctypes.byref(err), ctypes.byref(off), None)  # fmt: skip
        assert code, f"PCRE2 refused {pattern!r} (error {err.value} at {off.value})"
        md = self.lib.pcre2_match_data_create_from_pattern_8(code, None)
        s = subject.encode()
        rc = self.lib.pcre2_match_8(code, s, len(s), 0, 0, md, None)
        self.lib.pcre2_match_data_free_8(md)
        self.lib.pcre2_code_free_8(code)
        return rc >= 0


@pytest.fixture(scope="module")
def pcre2() -> Pcre2:
    return Pcre2()


# (RE2 pattern, values): each value is decided by RE2 fullmatch and by PCRE2 on the translation
REGEX_CASES = [
    ("/public", ["/public", "/public/", "/publicx", "x/public", "/public\n"]),
    ("/public$", ["/public", "/public\n", "/public/"]),
    ("^/a$|^/b$", ["/a", "/b", "/a\n", "/ab"]),
    ("/api/v[0-9]+/.*", ["/api/v1/x", "/api/v/x", "/api/v12/", "/api/v1"]),
    ("GET|HEAD", ["GET", "HEAD", "GETX", "XGET", "POST"]),
    (".*", ["", "anything", "a\nb"]),
    ("(?s).*", ["a\nb", ""]),
    ("a\\sb", ["a b", "a\tb", "a\x0bb", "a\nb"]),
    ("a\\Sb", ["axb", "a b", "a\x0bb"]),
    ("a[\\s]b", ["a b", "a\x0bb"]),
    ("a\\vb", ["a\x0bb", "a\nb", "a\rb"]),
    ("a\\012b", ["a\nb", "a\x0ab", "a12b"]),
    ("\\0", ["\x00", "0"]),
    ("[]a]+", ["]a]", "a", "b"]),
    ("[^]a]", ["b", "]", "a"]),
    ("[[:alpha:]]+[$]", ["abc$", "abc"]),
    ("(?i)get", ["GET", "get", "GeT", "POST"]),
    ("(?m)a$", ["a", "a\n"]),
    ("\\Q/a$b.c\\E", ["/a$b.c", "/a$bxc"]),
    ("/x\\z", ["/x", "/x\n"]),
    ("a{2,3}", ["a", "aa", "aaa", "aaaa"]),
    ("(?U)a+", ["a", "aaa"]),
    ("\\d+\\.\\w+\\b", ["12.ab", "12.a-", "x.ab"]),
    ("/path(?P<id>[0-9]+)", ["/path12", "/path"]),
    ("foo|", ["foo", "", "fo"]),
]


@pytest.mark.parametrize(("pattern", "values"), REGEX_CASES)
def test_regex_translation_decides_as_re2(pcre2: Pcre2, pattern: str, values: list[str]) -> None:
    translated = to_pcre2(pattern)
    for value in values:
        assert pcre2.search(translated, value) == full_match(pattern, value), (pattern, translated, value)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("\\pL+", "Unicode classes"),
        ("\\p{Greek}", "Unicode classes"),
        ("[\\S]", "inside"),
        ("(a", "not a valid RE2 regex"),
        ("a{1001}", "not a valid RE2 regex"),
        ("(?=a)", "not a valid RE2 regex"),
        ("\\1", "not a valid RE2 regex"),
    ],
)
def test_regex_refused(pattern: str, message: str) -> None:
    with pytest.raises(RegexError, match=message.replace("(", "\\(")):
        to_pcre2(pattern)


@pytest.mark.parametrize(
    ("pattern", "names"),
    [
        ("www.example.com", ["www.example.com", "WWW.Example.COM", "example.com", "xwww.example.com"]),
        ("*.example.com", ["a.example.com", "example.com", "a.b.example.com", ".example.com"]),
        ("**.example.com", ["a.example.com", "a.b.example.com", "example.com"]),
        ("api-*.example.com", ["api-1.example.com", "api-.example.com", "api.example.com"]),
        ("*", ["a", "a.b", ""]),
    ],
)
def test_sni_regex_decides_as_the_engine(pcre2: Pcre2, pattern: str, names: list[str]) -> None:
    rx = sni_regex(pattern)
    for name in names:
        assert pcre2.search(rx, name, caseless=True) == sni_matches(pattern, name), (pattern, rx, name)


def test_fields_round_trip() -> None:
    for text in ["", "a b", "100%", "x\ty\n", "é/ü", "-", "=", "&"]:
        f = field(text)
        assert " " not in f and "\n" not in f and "&" not in f[1:]
        assert unfield(f) == text
    assert field(None) == "-" and unfield("-") is None


def _ref(name: str, section: str = "ingress", index: int = 0) -> RuleRef:
    return RuleRef("CiliumNetworkPolicy", "default", name, section, index)


def sample_policies() -> list[PortPolicyAt]:
    """Ingress and egress HTTP, a port range, header rules (with actions and a missing Secret), TLS."""
    http_in = L7PortPolicy(
        Direction.INGRESS, 6, 80, L7Parser.HTTP, 15001,
        (
            L7Rule(frozenset({1001, 1002}), (HTTPRule(method="GET", path="/public(/.*)?"),
                                             HTTPRule(method="POST", path="/submit",
                                                      headers=(HeaderMatch("X-Token", "s3cr3t value"),))),
                   refs=frozenset({_ref("allow-get")})),
            L7Rule(frozenset({1003}), None, refs=frozenset({_ref("l4-only")})),
            L7Rule(None, (HTTPRule(host="api\\.example\\.com", headers=(
                HeaderMatch("X-Debug"),
                HeaderMatch("X-Env", "prod", mismatch="REPLACE"),
                HeaderMatch("X-Key", None, secret=("default", "gone"), unresolved=True),
            )),), refs=frozenset({_ref("any-peer", index=1)})),
        ),
    )  # fmt: skip
    http_out = L7PortPolicy(
        Direction.EGRESS, 6, 8000, L7Parser.HTTP, 15002,
        (L7Rule(frozenset({1004}), (HTTPRule(method="GET", path="/v[0-9]+/items$"),),
                refs=frozenset({_ref("egress-get", "egress")})),),
        end_port=8080,
    )  # fmt: skip
    tls_out = L7PortPolicy(
        Direction.EGRESS, 6, 443, L7Parser.TLS, 15004,
        (L7Rule(None, None, server_names=("*.example.com", "www.cilium.io"),
                refs=frozenset({_ref("tls", "egress")})),),
    )  # fmt: skip
    return [PortPolicyAt("198.18.0.12", http_in), PortPolicyAt("198.18.0.11", http_out),
            PortPolicyAt("198.18.0.11", tls_out)]  # fmt: skip


def test_rules_document_golden() -> None:
    text = render_rules(sample_policies(), 7, both_at_egress=True)
    check_golden("proxy", "rules.txt", text)
    # deterministic: the order of the inputs does not matter
    assert render_rules(list(reversed(sample_policies())), 7, True) == text


def test_decision_map_golden() -> None:
    """Native patterns for the ingress policy without header matches would be here; this one has
    header matches (Lua decides it), the egress one a port range (Lua, after every single port)."""
    entries = decision_map(sample_policies())
    check_golden("proxy", "decide.map", decision_map_text(entries))
    assert decision_map(list(reversed(sample_policies()))) == entries


def native_policy() -> L7PortPolicy:
    return L7PortPolicy(
        Direction.INGRESS, 6, 80, L7Parser.HTTP, 15001,
        (
            L7Rule(frozenset({1001, 1002}), (HTTPRule(method="GET", path="/public(/.*)?"),
                                             HTTPRule(method="POST|PUT", path="^/v[0-9]+/items$"),
                                             HTTPRule(host="(?i)API\\.example\\.com", path="/a b/[^/]*"))),
            L7Rule(frozenset({1003}), None),
            L7Rule(None, (HTTPRule(method="HEAD"),)),
            L7Rule(frozenset(), (HTTPRule(),)),
        ),
    )  # fmt: skip


REQUESTS = [
    (1001, "GET", "app", "/public"), (1001, "GET", "app", "/public/x?y=1"), (1001, "GET", "app", "/publicx"),
    (1002, "POST", "app", "/v2/items"), (1002, "PUT", "app", "/v2/items/"), (1002, "POST", "app", "/v/items"),
    (1001, "GET", "api.EXAMPLE.com", "/a b/c"), (1001, "GET", "api.example.com", "/a b/c/d"),
    (1001, "DELETE", "api.example.com", "/a b/"), (1003, "DELETE", "x", "/anything"), (1004, "HEAD", "", "/"),
    (1004, "GET", "", "/public"), (7, "GET", "app", "/public"), (1001, "GETX", "app", "/public"),
]  # fmt: skip


def native_verdict(pcre2: Pcre2, entries: list[tuple[str, str]], key: str) -> str:
    """What ``map_reg`` answers: the first matching pattern's value (``deny`` when none)."""
    return next((v for pattern, v in entries if pcre2.search(pattern, key)), "deny")


@pytest.mark.parametrize("remote,method,host,path", REQUESTS)
def test_decision_map_decides_as_the_engine(
    pcre2: Pcre2, remote: int, method: str, host: str, path: str
) -> None:
    pol = native_policy()
    entries = decision_map([PortPolicyAt("198.18.0.12", pol)])
    assert all(v != "lua" for _, v in entries)
    key = f"ingress|198.18.0.12|80|{remote}\x01{method}\x01{host}\x01{path}"
    want = "allow" if pol.decide_http(remote, method, path, host, {"host": host}).allowed else "deny"
    assert native_verdict(pcre2, entries, key) == want
    # another endpoint or port has no policy: the map's default
    assert native_verdict(pcre2, entries, key.replace("|80|", "|81|")) == "deny"


def test_decision_map_sends_to_lua_what_it_cannot_compose() -> None:
    assert native_field("\\Qa b\\E") is None  # a space inside \Q...\E cannot be written in a map file
    assert native_field("a b") == "(?:a\\x{20}b)"
    assert native_field("[^$]^x$") == "(?:[^$](?<=\\x01)x(?=\\x01|\\z))"
    pol = L7PortPolicy(Direction.INGRESS, 6, 80, L7Parser.HTTP, 15001,
                       (L7Rule(None, (HTTPRule(path="\\Qa b\\E"),)),))  # fmt: skip
    assert decision_map([PortPolicyAt("198.18.0.5", pol)]) == [("^ingress\\|198\\.18\\.0\\.5\\|80\\|", "lua")]


def test_rules_document_refuses_a_regex_pcre2_cannot_match_as_re2() -> None:
    pol = L7PortPolicy(Direction.INGRESS, 6, 80, L7Parser.HTTP, 15001,
                       (L7Rule(None, (HTTPRule(path="/\\pL+"),)),))  # fmt: skip
    with pytest.raises(RulesError, match=r"ingress 198.18.0.5:80 rules\[0\].http\[0\].path"):
        render_rules([PortPolicyAt("198.18.0.5", pol)], 1, False)


def test_haproxy_config_golden() -> None:
    files = ProxyFiles(Path("/run/cilia/proxy"))
    node = ProxyConfig(files, lua_path=Path("/usr/lib/cilia/cilia.lua"))
    check_golden("proxy", "haproxy.cfg", render(node))
    test_mode = ProxyConfig(
        files,
        transparent=False,
        static={
            (L7Parser.HTTP.value, Direction.INGRESS): StaticDestination(
                "127.0.0.1:18001", "127.0.0.1:18080", ("198.18.0.12", 80)
            )
        },
        lua_path=Path("/usr/lib/cilia/cilia.lua"),
    )  # fmt: skip
    check_golden("proxy", "haproxy-static.cfg", render(test_mode))


def test_access_log_line() -> None:
    line = (
        "1796595269.057 198.18.0.11 37928 ingress 198.18.0.12 80 1001 1005 403 0 -1 HTTP/1.1 deny "
        "ingress- GET %2Fprivate%3Fa%3D1 app-b%3A80 host%3A%20app-b%3A80%0D%0Ax-a%3A%201%202%0D%0A"
        "X-A%3A%203%0D%0A%0D%0A"
    )
    r = parse_line(line)
    assert r.time_ns == 1796595269057000000
    assert (r.listener, r.client, r.server) == ("ingress", ("198.18.0.11", 37928), ("198.18.0.12", 80))
    assert (r.client_identity, r.server_identity, r.status, r.allowed) == (1001, 1005, 403, False)
    assert r.decided == (("ingress", False),)
    assert (r.method, r.path, r.host) == ("GET", "/private?a=1", "app-b:80")
    assert r.headers == (("X-A", "3"), ("host", "app-b:80"), ("x-a", "1 2"))
    assert r.latency_ns == 0
    # a request the listener's rules never saw (its variables absent) still parses, refused
    r = parse_line("1.000 198.18.0.11 1 egress 198.18.0.12 80 1 2 403 0 -1 HTTP/1.1 - - GET - - -")
    assert (r.allowed, r.decided, r.path, r.headers) == (False, (), "", ())
    with pytest.raises(AccessLogError):
        parse_line("[ALERT] haproxy: something else")


def test_tls_log_line_and_its_flow() -> None:
    from cilia.observe.flow import L7Type, TlsInfo, flow_from_json
    from cilia.observe.pipeline import FlowPipeline
    from cilia.observe.render import compact

    r = parse_any("1796595269.057 198.18.0.11 41000 egress 198.18.0.12 443 1001 1005 tls deny egress- "
                  "evil.example%2Eorg")  # fmt: skip
    assert isinstance(r, TlsRecord)
    assert (r.listener, r.client, r.server, r.allowed, r.sni) == (
        "egress", ("198.18.0.11", 41000), ("198.18.0.12", 443), False, "evil.example.org")
    assert r.decided == (("egress", False),)
    ref = _ref("tls", "egress")
    flow = FlowPipeline(clock_offset_ns=0).ingest_tls(r, Direction.EGRESS, False, (), (ref,))
    assert flow.l7 == TlsInfo(L7Type.REQUEST, "evil.example.org") and flow.dropped
    assert flow.egress_denied_by[0].name == "tls"
    assert flow_from_json(flow.to_json()) == flow
    want = "tls-client-hello DENIED (TLS ClientHello SNI evil.example.org) no serverNames of Cilium"
    assert want in compact(flow)
    with pytest.raises(AccessLogError):
        parse_any("1.0 a 1 egress b 2 3 4 http deny egress- x")
