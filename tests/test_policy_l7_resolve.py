"""L7 rules resolved into per-port proxy policies and proxy ports on MapState entries, merged across
rules as Cilium 1.18 merges them. The cases follow Cilium's own table in pkg/policy/l4_filter_test.go
(cases 1-12: wildcard/selected peers, with and without HTTP rules on the same port), its TLS SNI
merge test, and the toMapState rules (an L3/L4 key is skipped under an L4-only key only when the
redirects agree; deny entries never redirect)."""

from __future__ import annotations

from typing import Any

import pytest

from cilia.identity.podlabels import pod_identity_labels
from cilia.identity.reserved import RESERVED_LABELS
from cilia.k8s import api
from cilia.policy.engine import PolicyEngine
from cilia.policy.l7 import HTTPRule, L7Parser
from cilia.policy.l7resolve import L7Spec, merge_spec
from cilia.policy.repository import ResourceKey
from cilia.policy.resolve import EngineOptions, resolve_policy
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.translate import translate
from cilia.policy.types import Direction, Key

IN, EG = Direction.INGRESS, Direction.EGRESS
TCP, UDP = 6, 17
A, C, D = 300, 301, 302  # app=a (the subject), app=c, app=d
HOST = 1
HTTP_IN, HTTP_EG, TLS_EG, DNS_EG = 15001, 15002, 15004, 15053

IDENTITIES = {int(r): lbls for r, lbls in RESERVED_LABELS.items()}
IDENTITIES.update(
    {
        A: pod_identity_labels({"app": "a"}, "default"),
        C: pod_identity_labels({"app": "c"}, "default"),
        D: pod_identity_labels({"app": "d"}, "default"),
    }
)
SEL_A = {"matchLabels": {"app": "a"}}
SEL_C = {"matchLabels": {"app": "c"}}
GET_ROOT = {"method": "GET", "path": "/"}
P80 = [{"port": "80", "protocol": "TCP"}]
P443 = [{"port": "443", "protocol": "TCP"}]
DNS_RULE = {"dns": [{"matchPattern": "*.example.com"}]}


def cnp(
    *ingress: dict[str, Any], egress: list[dict[str, Any]] | None = None, name: str = "p",
    deny_c: bool = False,
) -> Any:
    spec: dict[str, Any] = {"endpointSelector": SEL_A}
    if deny_c:
        name = "d"
        spec["ingressDeny"] = [{"fromEndpoints": [SEL_C], "toPorts": [{"ports": P80}]}]
    if ingress:
        spec["ingress"] = list(ingress)
    if egress is not None:
        spec["egress"] = egress
    return api.CiliumNetworkPolicy.model_validate(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }
    )


def rule(peers: list[dict[str, Any]] | None, http: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    pr: dict[str, Any] = {"ports": P80}
    if http is not None:
        pr["rules"] = {"http": http}
    out: dict[str, Any] = {"toPorts": [pr]}
    if peers is not None:
        out["fromEndpoints"] = peers
    return out


def resolve(*objs: Any, options: EngineOptions | None = None) -> Any:
    rules = [r for o in objs for r in translate(o)]
    cache = SelectorCache(IDENTITIES)
    return resolve_policy(A, IDENTITIES[A], rules, cache, options=options or EngineOptions())


def port80(pol: Any) -> dict[int, int]:
    """identity -> proxy port of the ingress TCP/80 keys."""
    return {k.identity: e.proxy_port for k, e in pol.map_state.items() if k[1:] == (IN, TCP, 80, 16)}


def decide(pol: Any, remote: int, method: str, path: str = "/") -> bool:
    (pp,) = [p for p in pol.l7 if p.port == 80]
    return pp.decide_http(remote, method, path, "a", {}).allowed


# (case, policies, {identity: proxy port} on ingress TCP/80, [(remote, method, path, allowed)])
CASES = [
    ("1A: wildcard L4 twice, no L7: no redirect", [cnp(rule(None), rule(None))], {0: 0}, []),
    (
        "2A: wildcard L4-only then wildcard GET /: every request passes, through the proxy",
        [cnp(rule(None), rule(None, [GET_ROOT]))],
        {0: HTTP_IN},
        [(C, "POST", "/x", True), (C, "GET", "/", True)],
    ),
    (
        "2B: the same in reverse order",
        [cnp(rule(None, [GET_ROOT]), rule(None))],
        {0: HTTP_IN},
        [(C, "POST", "/x", True)],
    ),
    (
        "3: identical GET / twice",
        [cnp(rule(None, [GET_ROOT]), rule(None, [GET_ROOT]))],
        {0: HTTP_IN},
        [(C, "GET", "/", True), (C, "POST", "/", False), (C, "GET", "/x", False)],
    ),
    ("6A: id=a and wildcard, no L7", [cnp(rule([SEL_C]), rule(None))], {0: 0}, []),
    (
        "7A: id=c GET / and wildcard L4-only: all allowed, c's traffic through the proxy",
        [cnp(rule([SEL_C], [GET_ROOT]), rule(None))],
        {0: 0, C: HTTP_IN},
        [(C, "POST", "/x", True), (C, "GET", "/", True)],
    ),
    (
        "7B: the same in reverse order",
        [cnp(rule(None), rule([SEL_C], [GET_ROOT]))],
        {0: 0, C: HTTP_IN},
        [(C, "DELETE", "/", True)],
    ),
    (
        "8A: id=c GET / and wildcard GET /: the L4-only key covers c's",
        [cnp(rule([SEL_C], [GET_ROOT]), rule(None, [GET_ROOT]))],
        {0: HTTP_IN},
        [(C, "GET", "/", True), (C, "POST", "/", False), (D, "POST", "/", False)],
    ),
    (
        "10: GET / for two distinct selectors",
        [cnp(rule([SEL_C], [GET_ROOT]), rule([{"matchLabels": {"app": "d"}}], [GET_ROOT]))],
        {C: HTTP_IN, D: HTTP_IN},
        [(C, "GET", "/", True), (D, "GET", "/", True), (D, "PUT", "/", False)],
    ),
    (
        "11: L4 for two distinct selectors",
        [cnp(rule([SEL_C]), rule([{"matchLabels": {"app": "d"}}]))],
        {C: 0, D: 0},
        [],
    ),
    (
        "12: with allow-localhost the host is wildcarded at L7 (through the proxy, all allowed)",
        [cnp(rule(None, [GET_ROOT]))],
        {0: HTTP_IN},
        [(HOST, "POST", "/x", True), (C, "POST", "/x", False), (C, "GET", "/", True)],
    ),
    (
        "rules of two policies on one port and selector merge (any of them allows)",
        [
            cnp(rule([SEL_C], [GET_ROOT]), name="p1"),
            cnp(rule([SEL_C], [{"method": "POST", "path": "/form"}]), name="p2"),
        ],
        {C: HTTP_IN},
        [(C, "GET", "/", True), (C, "POST", "/form", True), (C, "POST", "/", False)],
    ),
    (
        "a deny for the selector and port wins and never redirects",
        [cnp(rule([SEL_C], [GET_ROOT])), cnp(deny_c=True)],
        {C: 0},
        [],
    ),
]


@pytest.mark.parametrize(("name", "objs", "keys", "requests"), CASES, ids=[c[0][:40] for c in CASES])
def test_cilium_l4_filter_cases(
    name: str, objs: list[Any], keys: dict[int, int], requests: list[Any]
) -> None:
    pol = resolve(*objs)
    assert port80(pol) == keys
    if any(keys.values()):
        (pp,) = [p for p in pol.l7 if p.port == 80]
        assert pp.parser is L7Parser.HTTP and pp.proxy_port == HTTP_IN and pp.identity == A
    else:
        assert [p for p in pol.l7 if p.port == 80 and p.direction == IN] == [] or not requests
    for remote, method, path, allowed in requests:
        assert decide(pol, remote, method, path) is allowed, (remote, method, path)


def test_deny_entry_carries_no_proxy_port() -> None:
    pol = resolve(*CASES[-1][1])
    (e,) = [e for k, e in pol.map_state.items() if k[1:] == (IN, TCP, 80, 16)]
    assert e.deny and e.proxy_port == 0 and e.proxy_priority == 0


def test_redirect_priority_and_attribution() -> None:
    pol = resolve(cnp(rule([SEL_C], [GET_ROOT])))
    e = pol.map_state[Key(C, IN, TCP, 80, 16)]
    assert (e.proxy_port, e.proxy_priority) == (HTTP_IN, 1)
    (pp,) = pol.l7
    d = pp.decide_http(C, "POST", "/", "a", {})
    assert not d.allowed and {r.name for r in d.refused_by} == {"p"}
    assert pp.decide_http(C, "GET", "/", "a", {}).by == d.refused_by


def test_merge_spec_as_merge_port_proto() -> None:
    get = L7Spec((HTTPRule("GET", "/"),))
    assert merge_spec(None, None) is None
    # An allow without L7 next to HTTP rules adds the wildcard rule (in either order).
    assert merge_spec(None, get) == L7Spec((HTTPRule("GET", "/"), HTTPRule()))
    assert merge_spec(get, None) == L7Spec((HTTPRule("GET", "/"), HTTPRule()))
    # Server names are united; an L4-only allow does not widen them.
    sni = L7Spec(server_names=("www.foo.com",))
    assert merge_spec(sni, None) == sni
    both = merge_spec(sni, L7Spec(server_names=("www.bar.com",)))
    assert both is not None and both.server_names == ("www.foo.com", "www.bar.com")
    # DNS wildcard is matchPattern "*".
    assert merge_spec(L7Spec(dns=("a.com",)), None) == L7Spec(dns=("a.com", "*"))


def test_tls_server_names_merge_per_selector() -> None:
    """Cilium's TestMergeTLSSNIPolicy without TLS termination: a plain allow to A, server names
    to C from two rules, merged; C's traffic goes to the TLS parser's egress port."""
    tls = api.CiliumNetworkPolicy.model_validate(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "tls", "namespace": "default"},
            "spec": {
                "endpointSelector": SEL_A,
                "egress": [
                    {"toEndpoints": [{"matchLabels": {"app": "d"}}], "toPorts": [{"ports": P443}]},
                    {"toEndpoints": [SEL_C], "toPorts": [{"ports": P443, "serverNames": ["www.foo.com"]}]},
                    {"toEndpoints": [SEL_C], "toPorts": [{"ports": P443, "serverNames": ["www.bar.com"]}]},
                ],
            },
        }
    )
    pol = resolve(tls)
    keys = {k.identity: e.proxy_port for k, e in pol.map_state.items() if k[1:] == (EG, TCP, 443, 16)}
    assert keys == {C: TLS_EG, D: 0}
    (pp,) = pol.l7
    assert pp.parser is L7Parser.TLS and pp.direction == EG
    assert pp.decide_sni(C, "www.foo.com").allowed and pp.decide_sni(C, "WWW.BAR.COM").allowed
    assert not pp.decide_sni(C, "www.baz.com").allowed
    assert not pp.decide_sni(C, "").allowed  # serverNames require an SNI
    assert pp.decide_sni(D, "anything.example").allowed  # D is allowed on 443 without TLS rules


def test_dns_rules_redirect_port_53_to_the_dns_proxy() -> None:
    pol = resolve(
        cnp(
            egress=[
                {
                    "toEndpoints": [SEL_C],
                    "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}], "rules": DNS_RULE}],
                },
                {"toFQDNs": [{"matchPattern": "*.example.com"}]},
            ]
        )
    )
    dns_keys = {
        (k.proto, k.identity): e.proxy_port
        for k, e in pol.map_state.items()
        if k.direction == EG and k.port == 53
    }
    assert dns_keys[(UDP, C)] == DNS_EG and dns_keys[(TCP, C)] == DNS_EG
    udp = next(p for p in pol.l7 if p.proto == UDP)
    assert udp.parser is L7Parser.DNS
    assert udp.decide_dns(C, "www.example.com").allowed and not udp.decide_dns(C, "www.other.org").allowed


def test_proxy_ports_can_be_overridden() -> None:
    pol = resolve(cnp(rule([SEL_C], [GET_ROOT])), options=EngineOptions(proxy_ports=(("http", 0, 16001),)))
    assert port80(pol) == {C: 16001} and pol.l7[0].proxy_port == 16001


def test_engine_keeps_l7_remotes_current_on_identity_changes() -> None:
    eng = PolicyEngine(identities=IDENTITIES)
    eng.add_endpoint(A)
    eng.apply(ResourceKey("CiliumNetworkPolicy", "default", "p"), translate(cnp(rule([SEL_C], [GET_ROOT]))))
    (pp,) = eng.policy(A).l7
    assert pp.rules[0].remotes is None  # one selector on the port: effectively a wildcard
    eng.apply(
        ResourceKey("CiliumNetworkPolicy", "default", "p"),
        translate(cnp(rule([SEL_C], [GET_ROOT]), rule([{"matchLabels": {"app": "d"}}]))),
    )
    remotes = {r.remotes for r in eng.policy(A).l7[0].rules}
    assert frozenset({C}) in remotes
    new_c = 400
    diffs = eng.add_identity(new_c, pod_identity_labels({"app": "c", "v": "2"}, "default"))
    assert diffs[A].adds[Key(new_c, IN, TCP, 80, 16)].proxy_port == HTTP_IN
    remotes = {r.remotes for r in eng.policy(A).l7[0].rules}
    assert frozenset({C, new_c}) in remotes
    # The incremental result equals a full recompute.
    assert eng.policy(A).l7 == eng.compute(A).l7


def test_an_l3_allow_of_the_same_peer_widens_the_port_rules_at_the_proxy() -> None:
    """Cilium's proxy consults the wildcard-port rules (L3-only allows) too: a peer allowed at L3
    passes the proxy on a port whose L7 rules it does not match (PortPolicy::forRange)."""
    l3 = {"toEndpoints": [SEL_C]}
    sni = {"toEndpoints": [SEL_C], "toPorts": [{"ports": P443, "serverNames": ["www.foo.com"]}]}
    pol = resolve(cnp(egress=[sni, l3]))
    (pp,) = pol.l7
    assert pol.map_state[Key(C, EG, TCP, 443, 16)].proxy_port == TLS_EG  # the port still redirects
    assert pp.decide_sni(C, "www.other.com").allowed
    assert not resolve(cnp(egress=[sni])).l7[0].decide_sni(C, "www.other.com").allowed


# Cilium's distillery table (pkg/policy/distillery_test.go, cases 0-31): every combination of five
# ingress rules on the subject "foo" -- L3L4L7 (foo, 80/TCP, GET /), L4L7 (any, 80/TCP, GET /),
# L3L4 (foo, 80/TCP), L4 (any, 80/TCP), L3 (foo, all ports) -- and the map entries expected.
FOO = 500
DISTILLERY_IDS = {**IDENTITIES, FOO: pod_identity_labels({"foo": "", "blue": ""}, "default")}
SEL_FOO = {"matchLabels": {"foo": ""}}
DISTILLERY_RULES = {
    "l3l4l7-allow": {"fromEndpoints": [SEL_FOO], "toPorts": [{"ports": P80, "rules": {"http": [GET_ROOT]}}]},
    "l4l7-allow": {"toPorts": [{"ports": P80, "rules": {"http": [GET_ROOT]}}]},
    "l3l4-allow": {"fromEndpoints": [SEL_FOO], "toPorts": [{"ports": P80}]},
    "l4-allow": {"toPorts": [{"ports": P80}]},
    "l3-allow": {"fromEndpoints": [SEL_FOO]},
}


def distillery_expected(on: dict[str, bool]) -> dict[tuple[int, int], tuple[int, set[str]]]:
    """(identity, proto) -> (proxy port, rule names): Cilium's testCaseToMapState, as data."""
    out: dict[tuple[int, int], tuple[int, set[str]]] = {}
    if on["l3-allow"]:
        out[(FOO, 0)] = (0, {"l3-allow"})
    l4 = [n for n in ("l4l7-allow", "l4-allow") if on[n]]
    if l4:
        out[(0, TCP)] = (HTTP_IN if on["l4l7-allow"] else 0, set(l4))
    l3l4 = [n for n in ("l3l4l7-allow", "l3l4-allow") if on[n]]
    if l3l4:
        redirect = on["l3l4l7-allow"]
        covered = bool(l4) and (on["l4l7-allow"] or not redirect)  # the L4-only key does the job
        if not covered:
            out[(FOO, TCP)] = (HTTP_IN if redirect else 0, set(l3l4))
    return out


@pytest.mark.parametrize("case", range(32))
def test_cilium_distillery_table(case: int) -> None:
    names = list(DISTILLERY_RULES)
    on = {n: bool(case >> (4 - i) & 1) for i, n in enumerate(names)}  # slot 3 is the high bit
    objs = [
        api.CiliumNetworkPolicy.model_validate(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNetworkPolicy",
                "metadata": {"name": n, "namespace": "default"},
                "spec": {"endpointSelector": SEL_FOO, "ingress": [DISTILLERY_RULES[n]]},
            }
        )
        for n in names
        if on[n]
    ]
    rules = [r for o in objs for r in translate(o)]
    pol = resolve_policy(FOO, DISTILLERY_IDS[FOO], rules, SelectorCache(DISTILLERY_IDS))
    got = {
        (k.identity, k.proto): (e.proxy_port, {r.name for r in e.rules})
        for k, e in pol.map_state.items()
        if k.direction == IN and k.identity in (0, FOO) and (k.proto, k.port) in ((0, 0), (TCP, 80))
    }
    if not objs:
        got = {k: v for k, v in got.items() if v[1] != {"allow-any-ingress"}}  # nothing enforced
    assert got == distillery_expected(on)


def test_cilium_merge_l7_policy_egress_with_multiple_selectors() -> None:
    """TestMergeL7PolicyEgressWithMultipleSelectors: B plain, C with two HTTP rules from two
    entries; C's rules are merged (any of them allows), B's entry does not redirect."""
    sel_b = {"matchLabels": {"app": "d"}}
    pol = resolve(
        cnp(
            egress=[
                {"toEndpoints": [sel_b], "toPorts": [{"ports": P80}]},
                {"toEndpoints": [SEL_C], "toPorts": [{"ports": P80, "rules": {"http": [{"method": "GET"}]}}]},
                {"toEndpoints": [SEL_C], "toPorts": [{"ports": P80, "rules": {"http": [{"host": "foo"}]}}]},
            ]
        )
    )
    keys = {k.identity: e.proxy_port for k, e in pol.map_state.items() if k[1:] == (EG, TCP, 80, 16)}
    assert keys == {D: 0, C: HTTP_EG}
    (pp,) = pol.l7
    (c_rule,) = [r for r in pp.rules if r.remotes == frozenset({C})]
    assert c_rule.http == (HTTPRule(method="GET"), HTTPRule(host="foo"))
    assert pp.decide_http(C, "GET", "/x", "bar", {}).allowed
    assert pp.decide_http(C, "POST", "/x", "foo", {}).allowed
    assert not pp.decide_http(C, "POST", "/x", "bar", {}).allowed
