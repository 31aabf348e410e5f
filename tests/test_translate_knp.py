"""Kubernetes NetworkPolicy → PolicyRule (§6), and toServices resolution (§7)."""

from __future__ import annotations

from typing import Any

import pytest

from cilia.identity.labels import Labels
from cilia.identity.selector import Requirement, Selector
from cilia.k8s import api
from cilia.policy.rules import Peer, PeerKind, PeerRule, PolicyRule, PortProto
from cilia.policy.translate import (
    ServiceInfo,
    TranslateError,
    service_peers,
    translate,
    translate_knp,
    with_service_peers,
)
from cilia.policy.types import Direction, Proto, RuleRef

NS = "k8s.io.kubernetes.pod.namespace"
NSL = "k8s.io.cilium.k8s.namespace.labels."
IN, EG = Direction.INGRESS, Direction.EGRESS
KNP = "NetworkPolicy"
WILD = Peer(PeerKind.ENDPOINTS, Selector.wildcard())


def S(labels: dict[str, str] | None = None, *reqs: Requirement) -> Selector:
    return Selector.from_match(labels or {}, reqs)


def knp(
    spec: dict[str, Any] | None, *, ns: str | None = "default", name: str = "np", **meta: Any
) -> api.NetworkPolicy:
    obj: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, **meta},
    }
    if ns is not None:
        obj["metadata"]["namespace"] = ns
    if spec is not None:
        obj["spec"] = spec
    return api.NetworkPolicy.model_validate(obj)


def ref(section: str, index: int = 0, name: str = "np", ns: str = "default") -> RuleRef:
    return RuleRef(KNP, ns, name, section, index, 0)


def rule_of(spec: dict[str, Any] | None, **kw: Any) -> PolicyRule:
    (rule,) = translate_knp(knp(spec, **kw))
    return rule


def test_deny_all() -> None:
    # TestParseNetworkPolicyDenyAll: an empty spec is an ingress deny-all
    assert translate_knp(knp({"podSelector": {}}, uid="u")) == [
        PolicyRule(
            ref=ref("", -1),
            namespace="default",
            subject=S({NS: "default"}),
            node_selector=False,
            entries=(PeerRule(ref("ingress"), IN, False, (), None),),
            has_section={IN: True, EG: False},
            default_deny={IN: True, EG: False},
            labels=(
                "k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy",
                "k8s:io.cilium.k8s.policy.name=np",
                "k8s:io.cilium.k8s.policy.namespace=default",
                "k8s:io.cilium.k8s.policy.uid=u",
            ),
        )
    ]


@pytest.mark.parametrize(
    ("policy_types", "ingress", "egress"),
    [
        (None, True, False),
        (["Ingress"], True, False),
        (["Egress"], False, True),
        (["Ingress", "Egress"], True, True),
    ],
)
def test_policy_types_without_rules(policy_types: list[str] | None, ingress: bool, egress: bool) -> None:
    spec: dict[str, Any] = {"podSelector": {}}
    if policy_types is not None:
        spec["policyTypes"] = policy_types
    rule = rule_of(spec)
    assert rule.has_section == rule.default_deny == {IN: ingress, EG: egress}
    assert rule.entries == tuple(
        [PeerRule(ref("ingress"), IN, False, (), None)] * ingress
        + [PeerRule(ref("egress"), EG, False, (), None)] * egress
    )


def test_rules_present_are_translated_even_if_policy_types_omit_them() -> None:
    rule = rule_of({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]})
    assert rule.entries == (
        PeerRule(ref("ingress"), IN, False, (WILD,), None),
        PeerRule(ref("egress"), EG, False, (), None),
    )


def test_missing_from_is_raw_wildcard() -> None:
    rule = rule_of(
        {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"ports": [{"port": 5432}]}, {"from": []}],
        }
    )
    assert rule.subject == S({"k8s.app": "db", NS: "default"})
    assert rule.entries == (
        PeerRule(ref("ingress", 0), IN, False, (WILD,), (PortProto(Proto.TCP, 5432, 5432),)),
        PeerRule(ref("ingress", 1), IN, False, (WILD,), None),
    )


def test_peers() -> None:
    rule = rule_of(
        {
            "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]},
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"app": "web"}}},
                        {
                            "namespaceSelector": {"matchLabels": {"team": "a"}},
                            "podSelector": {"matchLabels": {"app": "web"}},
                        },
                        {"namespaceSelector": {}},
                        {
                            "namespaceSelector": {
                                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]
                            }
                        },
                        {"ipBlock": {"cidr": "198.19.0.0/16", "except": ["198.19.1.0/24"]}},
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}],
                }
            ],
        },
        ns="prod",
    )
    udp53 = (PortProto(Proto.UDP, 53, 53),)
    r = RuleRef(KNP, "prod", "np", "ingress", 0, 0)
    assert rule.subject == S({NS: "prod"}, Requirement("k8s.tier", "In", ("db",)))  # type: ignore[arg-type]
    assert rule.entries == (
        PeerRule(r, IN, False, (Peer(PeerKind.ENDPOINTS, S({"k8s.app": "web", NS: "prod"})),), udp53),
        PeerRule(r, IN, False, (Peer(PeerKind.ENDPOINTS, S({"k8s.app": "web", NSL + "team": "a"})),), udp53),
        PeerRule(r, IN, False, (Peer(PeerKind.ENDPOINTS, S({}, Requirement.exists(NS))),), udp53),
        PeerRule(
            r,
            IN,
            False,
            (Peer(PeerKind.ENDPOINTS, S({}, Requirement(NSL + "env", "NotIn", ("dev",)))),),
            udp53,
        ),  # type: ignore[arg-type]
        PeerRule(
            r,
            IN,
            False,
            (
                Peer(
                    PeerKind.CIDR,
                    S(
                        {},
                        Requirement.exists("cidr.198.19.0.0/16"),
                        Requirement.does_not_exist("cidr.198.19.1.0/24"),
                    ),
                ),
            ),
            udp53,
        ),
    )


def test_empty_namespace_selector_selects_pods_of_every_namespace_only() -> None:
    rule = rule_of(
        {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {}}]}]}
    )
    sel = rule.entries[0].peers[0].selector
    assert sel.matches(Labels.parse(["k8s:app=x", "k8s:io.kubernetes.pod.namespace=other"]))
    assert not sel.matches(Labels.parse(["reserved:host"]))


def test_egress_and_empty_peer() -> None:
    rule = rule_of({"podSelector": {}, "egress": [{"to": [{}], "ports": [{"port": 80}]}, {"to": [{}]}]})
    assert rule.entries == (
        PeerRule(ref("ingress", 0), IN, False, (), None),
        PeerRule(
            ref("egress", 0),
            EG,
            False,
            (Peer(PeerKind.WILDCARD, Selector.wildcard()),),
            (PortProto(Proto.TCP, 80, 80),),
        ),
        PeerRule(ref("egress", 1), EG, False, (), None),
    )
    assert rule.has_section == {IN: True, EG: True}  # no policyTypes: ingress deny-all is added too


def test_ports() -> None:
    rule = rule_of(
        {
            "podSelector": {},
            "ingress": [
                {
                    "ports": [
                        {"protocol": "TCP"},
                        {"port": 8000, "endPort": 9000},
                        {"port": "Metrics", "protocol": "SCTP"},
                        {"protocol": "udp", "port": "53"},
                    ]
                }
            ],
        }
    )
    assert rule.entries[0].ports == (
        PortProto(Proto.TCP, 0, 0),
        PortProto(Proto.TCP, 8000, 9000),
        PortProto(Proto.SCTP, 0, 0, "metrics"),
        PortProto(Proto.UDP, 53, 53),
    )


def test_unknown_proto() -> None:
    # TestParseNetworkPolicyUnknownProto
    with pytest.raises(
        TranslateError,
        match=r'NetworkPolicy default/np: spec\.ingress\[0\]\.ports\[0\]: invalid protocol "ICMP"',
    ):
        translate_knp(knp({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]}))


def test_name_annotation_and_default_namespace() -> None:
    rule = rule_of(
        {"podSelector": {}}, ns=None, annotations={"policy.cilium.io/name": "nice", "cilia.io/audit": "true"}
    )
    assert (rule.ref, rule.namespace, rule.audit) == (ref("", -1, name="nice"), "default", True)
    assert "k8s:io.cilium.k8s.policy.name=nice" in rule.labels
    assert translate(knp(None)) == translate_knp(knp(None))


# ---------------------------------------------------------------------- toServices (§7)

SERVICES = [
    ServiceInfo("db", "prod", selector={"app": "db"}, labels={"tier": "data"}),
    ServiceInfo("db", "staging", selector={"app": "db-staging"}, labels={"tier": "data"}),
    ServiceInfo("ext", "prod", selector=None, backend_ips=("198.19.0.5", "198.19.0.6")),
    ServiceInfo("cache", "prod", selector={"app": "cache"}, labels={"tier": "cache"}),
]


def svc_ref(obj: dict[str, Any]) -> api.Service:
    return api.Service.model_validate(obj)


def test_service_by_name_and_namespace() -> None:
    assert service_peers(
        svc_ref({"k8sService": {"serviceName": "db", "namespace": "prod"}}), "x", SERVICES
    ) == (Peer(PeerKind.SERVICES, S({"app": "db", NS: "prod"})),)


def test_service_empty_namespace_matches_every_namespace() -> None:
    assert service_peers(svc_ref({"k8sService": {"serviceName": "db"}}), "prod", SERVICES) == (
        Peer(PeerKind.SERVICES, S({"app": "db", NS: "prod"})),
        Peer(PeerKind.SERVICES, S({"app": "db-staging", NS: "staging"})),
    )


def test_service_selector_matches_service_labels() -> None:
    ref_ = svc_ref(
        {"k8sServiceSelector": {"selector": {"matchLabels": {"tier": "data"}}, "namespace": "prod"}}
    )
    assert service_peers(ref_, "prod", SERVICES) == (Peer(PeerKind.SERVICES, S({"app": "db", NS: "prod"})),)
    ref_ = svc_ref(
        {
            "k8sServiceSelector": {
                "selector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["data"]}]}
            }
        }
    )
    assert [p.selector for p in service_peers(ref_, "prod", SERVICES)] == [
        S({}, Requirement.exists("cidr.198.19.0.5/32")),
        S({}, Requirement.exists("cidr.198.19.0.6/32")),
        S({"app": "cache", NS: "prod"}),
    ]


def test_selectorless_service_gives_cidr_peers() -> None:
    assert service_peers(
        svc_ref({"k8sService": {"serviceName": "ext", "namespace": "prod"}}), "prod", SERVICES
    ) == (
        Peer(PeerKind.CIDR, S({}, Requirement.exists("cidr.198.19.0.5/32"))),
        Peer(PeerKind.CIDR, S({}, Requirement.exists("cidr.198.19.0.6/32"))),
    )


def test_service_selector_keys_are_taken_as_written() -> None:
    (peer,) = service_peers(
        svc_ref({"k8sService": {"serviceName": "db", "namespace": "prod"}}), "prod", SERVICES
    )
    assert peer.selector.matches(Labels.parse(["k8s:app=db", "k8s:io.kubernetes.pod.namespace=prod"]))
    assert not peer.selector.matches(Labels.parse(["k8s:app=db", "k8s:io.kubernetes.pod.namespace=staging"]))


def test_with_service_peers() -> None:
    r = RuleRef("CiliumNetworkPolicy", "prod", "p", "egress", 0, 0)
    ports = (PortProto(Proto.TCP, 5432, 5432),)
    entry = PeerRule(
        r,
        EG,
        False,
        (),
        ports,
        services=(svc_ref({"k8sService": {"serviceName": "db", "namespace": "prod"}}),),
    )
    assert with_service_peers(entry, SERVICES).peers == (
        Peer(PeerKind.SERVICES, S({"app": "db", NS: "prod"})),
    )
    # nothing matches: the entry's ports apply to every peer, as in Cilium
    assert with_service_peers(entry, []).peers == (Peer(PeerKind.WILDCARD, Selector.wildcard()),)
    l3_only = PeerRule(r, EG, False, (), None, services=entry.services)
    assert with_service_peers(l3_only, []).peers == ()
    plain = PeerRule(r, EG, False, (), None)
    assert with_service_peers(plain, SERVICES) is plain
