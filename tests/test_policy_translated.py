"""Resolution of policies as users write them (YAML -> translate -> resolve): whole MapStates for
the facts that depend on translation (semantics.md §2.5, §3, §4.5, §4.6, §6)."""

from __future__ import annotations

from typing import Any

import pytest

from cilia.identity.cidr import cidr_identity_labels
from cilia.identity.podlabels import pod_identity_labels
from cilia.identity.reserved import RESERVED_LABELS
from cilia.k8s import api
from cilia.policy.resolve import ALLOW_ANY, ALLOW_LOCALHOST_INGRESS, resolve_policy
from cilia.policy.selectorcache import SelectorCache
from cilia.policy.translate import translate
from cilia.policy.types import Direction, Entry, Key, RuleRef

IN, EG = Direction.INGRESS, Direction.EGRESS
TCP, UDP, SCTP, ICMP = 6, 17, 132, 1
WEB, DB, OTHER_NS = 300, 301, 302
C8, C16, C32 = 0x01000001, 0x01000002, 0x01000003

IDENTITIES = {int(r): lbls for r, lbls in RESERVED_LABELS.items()}
IDENTITIES.update(
    {
        WEB: pod_identity_labels({"app": "web"}, "default"),
        DB: pod_identity_labels({"app": "db"}, "default"),
        OTHER_NS: pod_identity_labels({"app": "db"}, "prod"),
        C8: cidr_identity_labels("10.0.0.0/8"),
        C16: cidr_identity_labels("10.1.0.0/16"),
        C32: cidr_identity_labels("10.1.2.3/32"),
    }
)
LOCALHOST = {Key(1, IN, 0, 0, 0): Entry(False, frozenset({ALLOW_LOCALHOST_INGRESS}))}
ANY_IN = {Key(0, IN, 0, 0, 0): Entry(False, frozenset({ALLOW_ANY[IN]}))}
ANY_EG = {Key(0, EG, 0, 0, 0): Entry(False, frozenset({ALLOW_ANY[EG]}))}


def cnp(spec: dict[str, Any], kind: str = "CiliumNetworkPolicy", name: str = "p") -> Any:
    meta = {"name": name} if kind != "CiliumNetworkPolicy" else {"name": name, "namespace": "default"}
    return api.CiliumNetworkPolicy.model_validate(
        {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta, "spec": spec}
    )


def knp(spec: dict[str, Any], name: str = "k") -> Any:
    return api.NetworkPolicy.model_validate(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }
    )


def allow(kind: str, name: str, section: str, index: int = 0, ns: str = "default") -> Entry:
    return Entry(False, frozenset({RuleRef(kind, ns, name, section, index)}))


def deny(kind: str, name: str, section: str, index: int = 0, ns: str = "default") -> Entry:
    return Entry(True, frozenset({RuleRef(kind, ns, name, section, index)}))


CNP, CCNP, KNP = "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy"
WEB_SEL = {"matchLabels": {"app": "web"}}

CASES = [
    (
        "protocol ANY expands to TCP, UDP and SCTP (ICMP is not covered)",
        [cnp({"endpointSelector": WEB_SEL, "ingress": [{"toPorts": [{"ports": [{"port": "53"}]}]}]})],
        {
            Key(0, IN, TCP, 53, 16): allow(CNP, "p", "ingress"),
            Key(0, IN, UDP, 53, 16): allow(CNP, "p", "ingress"),
            Key(0, IN, SCTP, 53, 16): allow(CNP, "p", "ingress"),
            **ANY_EG,
            **LOCALHOST,
        },
    ),
    (
        "CNP fromEndpoints {} is the policy's namespace only",
        [cnp({"endpointSelector": WEB_SEL, "ingress": [{"fromEndpoints": [{}]}]})],
        {
            Key(WEB, IN, 0, 0, 0): allow(CNP, "p", "ingress"),
            Key(DB, IN, 0, 0, 0): allow(CNP, "p", "ingress"),
            **ANY_EG,
            **LOCALHOST,
        },
    ),
    (
        "CCNP fromEndpoints {} is every pod of every namespace, no reserved identity",
        [cnp({"endpointSelector": WEB_SEL, "ingress": [{"fromEndpoints": [{}]}]}, kind=CCNP)],
        {
            Key(WEB, IN, 0, 0, 0): allow(CCNP, "p", "ingress", ns=""),
            Key(DB, IN, 0, 0, 0): allow(CCNP, "p", "ingress", ns=""),
            Key(OTHER_NS, IN, 0, 0, 0): allow(CCNP, "p", "ingress", ns=""),
            **ANY_EG,
            **LOCALHOST,
        },
    ),
    (
        "KNP: an ingress rule without from is the raw wildcard (identity 0)",
        [knp({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]})],
        {Key(0, IN, TCP, 80, 16): allow(KNP, "k", "ingress"), **ANY_EG, **LOCALHOST},
    ),
    (
        "KNP with an empty spec is an ingress deny-all (TestParseNetworkPolicyDenyAll)",
        [knp({"podSelector": {}})],
        {**ANY_EG, **LOCALHOST},
    ),
    (
        "toCIDR selects every CIDR identity inside the prefix; except removes the inner ones",
        [
            cnp(
                {
                    "endpointSelector": WEB_SEL,
                    "egress": [
                        {"toCIDR": ["10.1.0.0/16"]},
                        {
                            "toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}],
                            "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
                        },
                    ],
                }
            )
        ],
        {
            Key(C16, EG, 0, 0, 0): allow(CNP, "p", "egress", 0),
            Key(C32, EG, 0, 0, 0): allow(CNP, "p", "egress", 0),
            Key(C8, EG, TCP, 443, 16): allow(CNP, "p", "egress", 1),
            **ANY_IN,
            **LOCALHOST,
        },
    ),
    (
        "toEntities world selects world, world-ipv4/6 and every CIDR identity; ICMP by name",
        [
            cnp(
                {
                    "endpointSelector": WEB_SEL,
                    "egress": [{"toEntities": ["world"], "icmps": [{"fields": [{"type": "EchoRequest"}]}]}],
                }
            )
        ],
        {
            **{Key(i, EG, ICMP, 8, 16): allow(CNP, "p", "egress") for i in (2, 9, 10, C8, C16, C32)},
            **ANY_IN,
            **LOCALHOST,
        },
    ),
    (
        "CCNP deny overrides a CNP allow (TestDeniesIngress)",
        [
            cnp(
                {
                    "endpointSelector": WEB_SEL,
                    "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "db"}}]}],
                }
            ),
            cnp(
                {
                    "endpointSelector": {},
                    "ingressDeny": [
                        {
                            "fromEndpoints": [{"matchLabels": {"app": "db"}}],
                            "toPorts": [{"ports": [{"port": "22", "protocol": "TCP"}]}],
                        }
                    ],
                },
                kind=CCNP,
                name="c",
            ),
        ],
        {
            Key(DB, IN, 0, 0, 0): allow(CNP, "p", "ingress"),
            Key(DB, IN, TCP, 22, 16): deny(CCNP, "c", "ingressDeny", ns=""),
            Key(OTHER_NS, IN, TCP, 22, 16): deny(CCNP, "c", "ingressDeny", ns=""),
            **ANY_EG,
            **LOCALHOST,
        },
    ),
]


@pytest.mark.parametrize(("name", "objs", "expected"), CASES, ids=[c[0] for c in CASES])
def test_translated_policies(name: str, objs: list[Any], expected: dict[Key, Entry]) -> None:
    rules = [r for o in objs for r in translate(o)]
    pol = resolve_policy(WEB, IDENTITIES[WEB], rules, SelectorCache(IDENTITIES))
    assert pol.map_state.entries == expected
