"""CNP/CCNP → PolicyRule: namespace scoping (§2.5), sections and default deny (§1.4, §4.2),
peers (§1.5, §3, §4.6, §4.7), labels (§2.6). Rows assert whole structures."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cilia.identity.cidr import cidr_rule_selector
from cilia.identity.fqdn import fqdn_selector
from cilia.identity.reserved import entity_selectors
from cilia.identity.selector import Requirement, Selector
from cilia.k8s import api
from cilia.policy.rules import Peer, PeerKind, PeerRule, PolicyRule, PortProto
from cilia.policy.translate import TranslateError, translate, translate_cnp
from cilia.policy.types import Direction, Proto, RuleRef
from tests.conftest import SEED

NS = "k8s.io.kubernetes.pod.namespace"
IN, EG = Direction.INGRESS, Direction.EGRESS
CNP, CCNP = "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"
TCP80 = (PortProto(Proto.TCP, 80, 80),)


def S(labels: dict[str, str] | None = None, *reqs: Requirement) -> Selector:
    return Selector.from_match(labels or {}, reqs)


def cnp(
    spec: dict[str, Any] | None = None,
    *,
    kind: str = CNP,
    ns: str | None = "default",
    name: str = "p",
    specs: list[dict[str, Any]] | None = None,
    **meta: Any,
) -> api.CiliumNetworkPolicy:
    obj: dict[str, Any] = {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": {"name": name, **meta}}
    if ns is not None:
        obj["metadata"]["namespace"] = ns
    if spec is not None:
        obj["spec"] = spec
    if specs is not None:
        obj["specs"] = specs
    return api.CiliumNetworkPolicy.model_validate(obj)


def labels_of(kind: str, name: str, ns: str = "default", uid: str = "") -> tuple[str, ...]:
    out = [f"k8s:io.cilium.k8s.policy.derived-from={kind}", f"k8s:io.cilium.k8s.policy.name={name}"]
    if ns:
        out.append(f"k8s:io.cilium.k8s.policy.namespace={ns}")
    return (*out, f"k8s:io.cilium.k8s.policy.uid={uid}")


def ref(
    section: str = "ingress",
    index: int = 0,
    *,
    kind: str = CNP,
    ns: str = "default",
    name: str = "p",
    spec_index: int = 0,
) -> RuleRef:
    return RuleRef(kind, ns, name, section, index, spec_index)


def only(rules: list[PolicyRule]) -> PolicyRule:
    assert len(rules) == 1
    return rules[0]


def entries(spec: dict[str, Any], **kw: Any) -> tuple[PeerRule, ...]:
    return only(translate_cnp(cnp(spec, **kw))).entries


# ---------------------------------------------------------------------- the seed


def test_seed_allow_frontend_to_b() -> None:
    obj = api.CiliumNetworkPolicy.model_validate(
        yaml.safe_load((SEED / "allow-frontend-to-b.yaml").read_text())
    )
    name = "allow-frontend-to-app-b"
    assert translate_cnp(obj) == [
        PolicyRule(
            ref=ref("", -1, name=name),
            namespace="default",
            subject=S({"any.app": "app-a", "any.access": "frontend", NS: "default"}),
            node_selector=False,
            entries=(
                PeerRule(
                    ref=ref("ingress", 0, name=name),
                    direction=IN,
                    deny=False,
                    peers=(Peer(PeerKind.ENDPOINTS, S({"any.app": "app-b", NS: "default"})),),
                    ports=TCP80,
                ),
            ),
            has_section={IN: True, EG: False},
            default_deny={IN: True, EG: False},
            labels=labels_of(CNP, name),
        )
    ]


def test_seed_corrected_deny() -> None:
    obj = api.CiliumNetworkPolicy.model_validate(
        yaml.safe_load((SEED / "deny-a-to-b-fixed.yaml").read_text())
    )
    name = "deny-app-a-to-app-b"
    assert translate_cnp(obj, uid="u-1") == [
        PolicyRule(
            ref=ref("", -1, name=name),
            namespace="default",
            subject=S({"any.app": "app-a", NS: "default"}),
            node_selector=False,
            entries=(
                PeerRule(
                    ref=ref("egressDeny", 0, name=name),
                    direction=EG,
                    deny=True,
                    peers=(Peer(PeerKind.ENDPOINTS, S({"any.app": "app-b", NS: "default"})),),
                    ports=None,
                ),
            ),
            has_section={IN: False, EG: True},
            default_deny={IN: False, EG: False},
            labels=labels_of(CNP, name, uid="u-1"),
        )
    ]


# ---------------------------------------------------------------------- namespace scoping (§2.5)


def test_parse_in_namespace() -> None:
    rule = only(
        translate_cnp(cnp({"endpointSelector": {"matchLabels": {"role": "backend"}}, "ingress": [{}]}))
    )
    assert rule.subject == S({"any.role": "backend", NS: "default"})


def test_parse_in_namespace_with_ns_selector() -> None:
    # a k8s: namespace match in the subject is overwritten by the policy's namespace
    rule = only(
        translate_cnp(
            cnp(
                {
                    "endpointSelector": {
                        "matchLabels": {"role": "backend", "k8s:io.kubernetes.pod.namespace": "foo"}
                    },
                    "ingress": [{}],
                }
            )
        )
    )
    assert rule.subject == S({"any.role": "backend", NS: "default"})


def test_subject_any_source_namespace_stays_alongside() -> None:
    rule = only(
        translate_cnp(
            cnp(
                {"endpointSelector": {"matchLabels": {"io.kubernetes.pod.namespace": "foo"}}, "ingress": [{}]}
            )
        )
    )
    assert rule.subject == S({"any.io.kubernetes.pod.namespace": "foo", NS: "default"})


def test_subject_namespace_expression_is_kept() -> None:
    rule = only(
        translate_cnp(
            cnp(
                {
                    "endpointSelector": {
                        "matchExpressions": [
                            {"key": "k8s:io.kubernetes.pod.namespace", "operator": "In", "values": ["foo"]}
                        ]
                    },
                    "ingress": [{}],
                }
            )
        )
    )
    assert rule.subject == S({NS: "default"}, Requirement(NS, "In", ("foo",)))  # type: ignore[arg-type]


def peer_of(spec: dict[str, Any], **kw: Any) -> Selector:
    (entry,) = entries(spec, **kw)
    (peer,) = entry.peers
    return peer.selector


@pytest.mark.parametrize(
    ("case", "kind", "ns", "subject", "from_endpoint", "expected"),
    [
        (
            "plain CNP peer",
            CNP,
            "default",
            {},
            {"matchLabels": {"app": "b"}},
            S({"any.app": "b", NS: "default"}),
        ),
        (
            "parse-init-policy-namespaced: {} is the policy namespace",
            CNP,
            "default",
            {"matchExpressions": [{"key": "reserved.init", "operator": "DoesNotExist"}]},
            {},
            S({NS: "default"}),
        ),
        (
            "set-any-source-for-namespace",
            CNP,
            "default",
            {"matchLabels": {"role": "backend"}},
            {"matchLabels": {"io.kubernetes.pod.namespace": "ns-2"}},
            S({"any.io.kubernetes.pod.namespace": "ns-2"}),
        ),
        (
            "k8s-source namespace is the user's choice",
            CNP,
            "default",
            {},
            {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "ns-2", "app": "x"}},
            S({NS: "ns-2", "any.app": "x"}),
        ),
        (
            "parse-in-namespace-with-ns-labels-selector",
            CNP,
            "default",
            {},
            {"matchLabels": {"io.cilium.k8s.namespace.labels.team": "team-a"}},
            S({"any.io.cilium.k8s.namespace.labels.team": "team-a"}),
        ),
        (
            "k8s namespace-labels expression",
            CNP,
            "default",
            {},
            {"matchExpressions": [{"key": "k8s:io.cilium.k8s.namespace.labels.team", "operator": "Exists"}]},
            S({}, Requirement.exists("k8s.io.cilium.k8s.namespace.labels.team")),
        ),
        (
            "reserved key: not scoped",
            CNP,
            "default",
            {},
            {"matchLabels": {"reserved:host": ""}},
            S({"reserved.host": ""}),
        ),
        (
            "$ reserved key: not scoped",
            CNP,
            "default",
            {},
            {"matchLabels": {"$world": ""}},
            S({"reserved.world": ""}),
        ),
        (
            "wildcard-to-from-endpoints-with-ccnp",
            CCNP,
            None,
            {"matchLabels": {"role": "backend"}},
            {},
            S({}, Requirement.exists(NS)),
        ),
        (
            "CCNP peer gets namespace Exists",
            CCNP,
            None,
            {},
            {"matchLabels": {"app": "x"}},
            S({"any.app": "x"}, Requirement.exists(NS)),
        ),
        (
            "parse-init-policy: CCNP whose subject selects init",
            CCNP,
            None,
            {"matchLabels": {"role": "backend", "reserved:init": ""}},
            {},
            S({}),
        ),
        (
            "CCNP with ns-labels key still gets Exists",
            CCNP,
            None,
            {},
            {"matchLabels": {"io.cilium.k8s.namespace.labels.team": "a"}},
            S({"any.io.cilium.k8s.namespace.labels.team": "a"}, Requirement.exists(NS)),
        ),
    ],
)
def test_peer_scoping(
    case: str,
    kind: str,
    ns: str | None,
    subject: dict[str, Any],
    from_endpoint: dict[str, Any],
    expected: Selector,
) -> None:
    spec = {"endpointSelector": subject, "ingress": [{"fromEndpoints": [from_endpoint]}]}
    assert peer_of(spec, kind=kind, ns=ns) == expected, case


def test_ccnp_rule() -> None:
    rule = only(
        translate_cnp(
            cnp(
                {"endpointSelector": {"matchLabels": {"role": "backend"}}, "egress": [{}]},
                kind=CCNP,
                ns=None,
                name="c",
                uid="u",
            )
        )
    )
    assert rule == PolicyRule(
        ref=ref("", -1, kind=CCNP, ns="", name="c"),
        namespace="",
        subject=S({"any.role": "backend"}),
        node_selector=False,
        entries=(PeerRule(ref("egress", 0, kind=CCNP, ns="", name="c"), EG, False, (), None),),
        has_section={IN: False, EG: True},
        default_deny={IN: False, EG: True},
        labels=labels_of(CCNP, "c", ns="", uid="u"),
    )


def test_cnp_without_namespace_lands_in_default() -> None:
    rule = only(translate_cnp(cnp({"endpointSelector": {}, "ingress": [{}]}, ns=None)))
    assert (rule.namespace, rule.subject, rule.ref.namespace) == ("default", S({NS: "default"}), "default")


def test_requires_are_scoped_without_reserved_exemption() -> None:
    (entry,) = entries(
        {"endpointSelector": {}, "ingress": [{"fromRequires": [{"matchLabels": {"reserved:host": ""}}]}]}
    )
    assert entry == PeerRule(ref(), IN, False, (), None, requires=(S({"reserved.host": "", NS: "default"}),))
    (entry,) = entries(
        {
            "endpointSelector": {},
            "ingress": [{"fromRequires": [{"matchLabels": {"env": "prod"}}], "fromEndpoints": [{}]}],
        }
    )
    assert entry.requires == (S({"any.env": "prod", NS: "default"}),)
    assert entry.peers == (Peer(PeerKind.ENDPOINTS, S({NS: "default"})),)


def test_node_selector_rule() -> None:
    rule = only(
        translate_cnp(
            cnp(
                {
                    "nodeSelector": {"matchLabels": {"node-role": "worker"}},
                    "ingress": [{"fromEndpoints": [{}]}],
                },
                kind=CCNP,
                ns=None,
            )
        )
    )
    assert rule.node_selector
    assert rule.subject == S({"any.node-role": "worker"})
    assert rule.entries[0].peers == (Peer(PeerKind.ENDPOINTS, S({}, Requirement.exists(NS))),)


# ---------------------------------------------------------------------- sections and default deny


@pytest.mark.parametrize(
    ("sections", "has", "default_deny"),
    [
        ({"ingress": [{}]}, {IN: True, EG: False}, {IN: True, EG: False}),
        ({"ingressDeny": [{"fromEntities": ["world"]}]}, {IN: True, EG: False}, {IN: True, EG: False}),
        ({"egress": [{}], "ingressDeny": [{}]}, {IN: True, EG: True}, {IN: True, EG: True}),
        (
            {"ingress": [{}], "enableDefaultDeny": {"ingress": False}},
            {IN: True, EG: False},
            {IN: False, EG: False},
        ),
        (
            {"ingress": [{}], "enableDefaultDeny": {"egress": True}},
            {IN: True, EG: False},
            {IN: True, EG: True},
        ),
        (
            {"egressDeny": [{}], "enableDefaultDeny": {"egress": False, "ingress": False}},
            {IN: False, EG: True},
            {IN: False, EG: False},
        ),
    ],
)
def test_sections_and_default_deny(
    sections: dict[str, Any], has: dict[Direction, bool], default_deny: dict[Direction, bool]
) -> None:
    rule = only(translate_cnp(cnp({"endpointSelector": {}, **sections})))
    assert (rule.has_section, rule.default_deny) == (has, default_deny)


def test_entry_refs_follow_sections_and_specs() -> None:
    rules = translate_cnp(
        cnp(
            {"endpointSelector": {}, "ingress": [{}, {}], "egressDeny": [{}]},
            specs=[{"endpointSelector": {}, "egress": [{}]}],
        )
    )
    assert [[e.ref for e in r.entries] for r in rules] == [
        [ref("ingress", 0), ref("ingress", 1), ref("egressDeny", 0)],
        [ref("egress", 0, spec_index=1)],
    ]
    assert [r.ref for r in rules] == [ref("", -1), ref("", -1, spec_index=1)]
    assert [e.deny for e in rules[0].entries] == [False, False, True]


def test_specs_only_and_labels_audit() -> None:
    rules = translate_cnp(
        cnp(
            specs=[
                {
                    "endpointSelector": {},
                    "ingress": [{}],
                    "labels": [{"key": "team", "value": "x", "source": "k8s"}, {"key": "a"}],
                }
            ],
            uid="123",
            annotations={"cilia.io/audit": "true"},
        )
    )
    assert [(r.ref, r.audit, r.labels) for r in rules] == [
        (
            ref("", -1),
            True,
            ("unspec:a=", *labels_of(CNP, "p", uid="123"), "k8s:team=x"),
        )
    ]


# ---------------------------------------------------------------------- peers and ports


def test_empty_ingress_rule_selects_nothing() -> None:
    assert entries({"endpointSelector": {}, "ingress": [{}]}) == (PeerRule(ref(), IN, False, (), None),)


def test_l4_only_rule_is_the_raw_wildcard() -> None:
    spec = {
        "endpointSelector": {},
        "ingress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}],
    }
    assert entries(spec) == (
        PeerRule(ref(), IN, False, (Peer(PeerKind.WILDCARD, Selector.wildcard()),), TCP80),
    )
    assert entries(spec, kind=CCNP, ns=None)[0].peers == (Peer(PeerKind.WILDCARD, Selector.wildcard()),)


@pytest.mark.parametrize("field", ["fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities", "fromNodes"])
def test_explicit_empty_peer_list_selects_nothing_even_with_ports(field: str) -> None:
    spec = {
        "endpointSelector": {},
        "ingress": [{field: [], "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}],
    }
    assert entries(spec) == (PeerRule(ref(), IN, False, (), TCP80),)


def test_explicit_empty_to_ports_is_l3_only() -> None:
    spec = {"endpointSelector": {}, "egress": [{"toEndpoints": [{}], "toPorts": []}]}
    assert entries(spec) == (
        PeerRule(ref("egress"), EG, False, (Peer(PeerKind.ENDPOINTS, S({NS: "default"})),), None),
    )


def test_port_rule_without_ports_allows_nothing() -> None:
    spec = {"endpointSelector": {}, "egress": [{"toEndpoints": [{}], "toPorts": [{}]}]}
    assert entries(spec)[0].ports == ()


def test_entities_cidr_nodes_fqdn_groups() -> None:
    spec = {
        "endpointSelector": {},
        "egress": [
            {"toEntities": ["world", "host"]},
            {"toCIDR": ["198.19.0.0/16", "198.19.1.1"]},
            {"toCIDRSet": [{"cidr": "198.19.0.0/16", "except": ["198.19.5.0/24"]}, {"cidrGroupRef": "g"}]},
            {"toNodes": [{"matchLabels": {"zone": "a"}}]},
            {
                "toFQDNs": [{"matchName": "Example.COM."}, {"matchPattern": "*.cilium.io"}],
                "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
            },
            {"toGroups": [{"aws": {"labels": {"a": "b"}}}], "toPorts": [{"ports": [{"port": "443"}]}]},
        ],
    }
    got = entries(spec)
    assert [e.peers for e in got] == [
        tuple(Peer(PeerKind.ENTITIES, s) for s in (*entity_selectors("world"), *entity_selectors("host"))),
        (
            Peer(PeerKind.CIDR, S({"cidr.198.19.0.0/16": ""})),
            Peer(PeerKind.CIDR, S({"cidr.198.19.1.1/32": ""})),
        ),
        (
            Peer(
                PeerKind.CIDR,
                S(
                    {},
                    Requirement.exists("cidr.198.19.0.0/16"),
                    Requirement.does_not_exist("cidr.198.19.5.0/24"),
                ),
            ),
            Peer(PeerKind.CIDR, S({}, Requirement.exists("cidrgroup.io.cilium.policy.cidrgroupname/g"))),
        ),
        (Peer(PeerKind.NODES, S({"any.zone": "a"}, Requirement.exists("reserved.remote-node"))),),
        (
            Peer(PeerKind.FQDN, fqdn_selector("example.com")),
            Peer(PeerKind.FQDN, fqdn_selector(None, "*.cilium.io")),
        ),
        (Peer(PeerKind.GROUPS, Selector.none()),),
    ]
    assert got[4].fqdn_patterns == ("Example.COM.", "*.cilium.io")
    assert got[1].ports is None and got[4].ports == (PortProto(Proto.TCP, 443, 443),)
    assert got[5].ports == tuple(PortProto(p, 443, 443) for p in (Proto.TCP, Proto.UDP, Proto.SCTP))
    assert str(cidr_rule_selector("198.19.0.0/16", ["198.19.5.0/24"])) == str(got[2].peers[0].selector)


def test_ports_and_icmps() -> None:
    spec = {
        "endpointSelector": {},
        "ingress": [
            {
                "fromEntities": ["all"],
                "toPorts": [
                    {
                        "ports": [
                            {"port": "80"},
                            {"port": "8000", "endPort": 8080, "protocol": "udp"},
                            {"port": "HTTP-Alt", "protocol": "TCP"},
                            {"port": "53", "endPort": 10, "protocol": "SCTP"},
                            {"port": "0", "protocol": "TCP"},
                        ]
                    }
                ],
            },
            {
                "icmps": [
                    {
                        "fields": [
                            {"type": 8},
                            {"type": "EchoReply"},
                            {"family": "IPv6", "type": "EchoRequest"},
                            {"family": "IPv6", "type": "129"},
                        ]
                    }
                ]
            },
        ],
    }
    first, second = entries(spec)
    assert first.ports == (
        PortProto(Proto.TCP, 80, 80),
        PortProto(Proto.UDP, 80, 80),
        PortProto(Proto.SCTP, 80, 80),
        PortProto(Proto.UDP, 8000, 8080),
        PortProto(Proto.TCP, 0, 0, "http-alt"),
        PortProto(Proto.SCTP, 53, 53),
        PortProto(Proto.TCP, 0, 0),
    )
    assert second.ports == (
        PortProto(Proto.ICMP, 8, 8),
        PortProto(Proto.ICMP, 0, 0),
        PortProto(Proto.ICMPV6, 128, 128),
        PortProto(Proto.ICMPV6, 129, 129),
    )
    assert second.peers == (Peer(PeerKind.WILDCARD, Selector.wildcard()),)


def test_l7_and_auth_kept() -> None:
    spec = {
        "endpointSelector": {},
        "ingress": [
            {
                "fromEndpoints": [{}],
                "authentication": {"mode": "required"},
                "toPorts": [
                    {"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{"method": "GET"}]}},
                    {"ports": [{"port": "81", "protocol": "TCP"}]},
                ],
            }
        ],
    }
    (entry,) = entries(spec)
    assert entry.auth_mode == "required"
    assert entry.l7 == (api.PortRule.model_validate(spec["ingress"][0]["toPorts"][0]),)


def test_egress_deny_to_services_is_never_expanded() -> None:
    spec = {
        "endpointSelector": {},
        "egressDeny": [
            {
                "toServices": [{"k8sService": {"serviceName": "db"}}],
                "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
            }
        ],
    }
    assert entries(spec) == (
        PeerRule(ref("egressDeny"), EG, True, (Peer(PeerKind.WILDCARD, Selector.wildcard()),), TCP80),
    )


def test_egress_to_services_kept_raw() -> None:
    svc = {"k8sService": {"serviceName": "db", "namespace": "prod"}}
    spec = {
        "endpointSelector": {},
        "egress": [{"toServices": [svc], "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}],
    }
    assert entries(spec) == (
        PeerRule(ref("egress"), EG, False, (), TCP80, services=(api.Service.model_validate(svc),)),
    )


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"ingress": [{}]},
            r"CiliumNetworkPolicy default/p: spec: rule must have one of EndpointSelector or NodeSelector",
        ),
        ({"endpointSelector": {}, "nodeSelector": {}, "ingress": [{}]}, "cannot have both"),
        (
            {"endpointSelector": {}, "ingress": [{"fromEntities": ["everything"]}]},
            r"spec\.ingress\[0\]\.fromEntities\[0\]: unsupported entity: everything",
        ),
        (
            {
                "endpointSelector": {},
                "egress": [{"toPorts": [{"ports": [{"port": "80", "protocol": "ICMP"}]}]}],
            },
            r'spec\.egress\[0\]\.toPorts\[0\]\.ports\[0\]: invalid protocol "ICMP"',
        ),
        (
            {"endpointSelector": {}, "egress": [{"toPorts": [{"ports": [{"port": "70000"}]}]}]},
            "unable to parse port",
        ),
        (
            {"endpointSelector": {}, "egress": [{"toPorts": [{"ports": [{"protocol": "TCP"}]}]}]},
            "Port must be specified",
        ),
        (
            {
                "endpointSelector": {},
                "egress": [{"icmps": [{"fields": [{"family": "IPv6", "type": "Echo"}]}]}],
            },
            r"icmps\[0\]\.fields\[0\]: ICMP type Echo not found in IPv6",
        ),
        (
            {"endpointSelector": {}, "egress": [{"icmps": [{"fields": [{"family": "IPv5", "type": 1}]}]}]},
            "wrong family: IPv5",
        ),
        (
            {
                "endpointSelector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
                "egress": [{}],
            },
            "invalid label selector",
        ),
        (
            {"endpointSelector": {}, "egress": [{"toCIDR": ["10.0.0.0/40"]}]},
            r"spec\.egress\[0\]\.toCIDR: unable to parse CIDR",
        ),
    ],
)
def test_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(TranslateError, match=message):
        translate_cnp(cnp(spec))


def test_cnp_node_selector_is_rejected() -> None:
    with pytest.raises(TranslateError, match="spec: rule cannot have NodeSelector"):
        translate_cnp(cnp({"nodeSelector": {}, "ingress": [{}]}))


def test_empty_policy_error() -> None:
    with pytest.raises(TranslateError, match="empty policy"):
        translate_cnp(cnp(None))


def test_translate_dispatch() -> None:
    obj = cnp({"endpointSelector": {}, "ingress": [{}]})
    assert translate(obj) == translate_cnp(obj)


@pytest.mark.parametrize(
    ("port", "end_port", "protocol", "expected"),
    [
        ("80", None, "TCP", (PortProto(Proto.TCP, 80, 80),)),
        (80, 0, "tcp", (PortProto(Proto.TCP, 80, 80),)),
        ("80", 79, "UDP", (PortProto(Proto.UDP, 80, 80),)),  # endPort <= port: the single port
        ("80", 90, "SCTP", (PortProto(Proto.SCTP, 80, 90),)),
        ("0", 65535, "TCP", (PortProto(Proto.TCP, 0, 0),)),  # the full range is the wildcard
        ("010", None, "TCP", (PortProto(Proto.TCP, 8, 8),)),  # Go's ParseUint base 0: octal
        ("DNS", 60, "UDP", (PortProto(Proto.UDP, 0, 0, "dns"),)),  # named: lowercased, endPort ignored
        ("443", None, None, tuple(PortProto(p, 443, 443) for p in (Proto.TCP, Proto.UDP, Proto.SCTP))),
        ("443", None, "ANY", tuple(PortProto(p, 443, 443) for p in (Proto.TCP, Proto.UDP, Proto.SCTP))),
    ],
)
def test_port_protos(
    port: str | int, end_port: int | None, protocol: str | None, expected: tuple[PortProto, ...]
) -> None:
    from cilia.policy.translate import port_protos

    assert port_protos(port, end_port, protocol) == expected


def test_seed_selectors_select_the_tutorial_pods() -> None:
    from cilia.identity.podlabels import pod_identity_labels
    from cilia.identity.reserved import RESERVED_LABELS, ReservedIdentity

    frontend = pod_identity_labels({"app": "app-a", "access": "frontend"}, "default")
    plain_a = pod_identity_labels({"app": "app-a"}, "default")
    b = pod_identity_labels({"app": "app-b"}, "default")
    b_elsewhere = pod_identity_labels({"app": "app-b"}, "prod")
    host = RESERVED_LABELS[ReservedIdentity.HOST]

    allow = only(
        translate_cnp(
            api.CiliumNetworkPolicy.model_validate(
                yaml.safe_load((SEED / "allow-frontend-to-b.yaml").read_text())
            )
        )
    )
    assert [allow.subject.matches(x) for x in (frontend, plain_a, b)] == [True, False, False]
    peer = allow.entries[0].peers[0].selector
    assert [peer.matches(x) for x in (frontend, b, b_elsewhere, host)] == [False, True, False, False]

    deny = only(
        translate_cnp(
            api.CiliumNetworkPolicy.model_validate(
                yaml.safe_load((SEED / "deny-a-to-b-fixed.yaml").read_text())
            )
        )
    )
    assert [deny.subject.matches(x) for x in (frontend, plain_a, b)] == [True, True, False]
    assert str(deny.entries[0].peers[0].selector) == "any:app=app-b, k8s:io.kubernetes.pod.namespace=default"
