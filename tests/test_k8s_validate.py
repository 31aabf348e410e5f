"""Validation rules of cilia.k8s.validate, one table row per fact (semantics.md §1.1, §1.4–§1.6, §6).

Each row gives a policy and the complete list of (path, message) it must produce.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cilia.k8s.cilium_rules import Flags
from cilia.k8s.loader import load_text
from cilia.k8s.validate import validate_result

SEL = {"matchLabels": {"app": "a"}}
PEER = {"toEndpoints": [{"matchLabels": {"app": "b"}}]}


def cnp(
    spec: Any = None, *, kind: str = "CiliumNetworkPolicy", specs: Any = None, **meta: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "cilium.io/v2",
        "kind": kind,
        "metadata": {
            "name": "p",
            **({"namespace": "default"} if kind == "CiliumNetworkPolicy" else {}),
            **meta,
        },
    }
    if spec is not None:
        obj["spec"] = spec
    if specs is not None:
        obj["specs"] = specs
    return obj


def knp(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "n"},
        "spec": spec,
    }


def problems(obj: Any, flags: Flags = Flags()) -> list[tuple[str, str]]:
    text = obj if isinstance(obj, str) else yaml.safe_dump(obj, sort_keys=False)
    report = validate_result(load_text(text, "t.yaml"), flags)
    return [(e.path, e.message) for e in report.errors]


def egress(*rules: dict[str, Any], section: str = "egress", **extra: Any) -> dict[str, Any]:
    return {"endpointSelector": SEL, section: list(rules), **extra}


def ports(*entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**PEER, "toPorts": [{"ports": list(entries), **extra}]}


VALID = [
    pytest.param(cnp(egress(PEER)), id="egress-toEndpoints"),
    pytest.param(cnp({"endpointSelector": {}, "ingress": [{}]}), id="ingress-empty-rule-is-default-deny"),
    pytest.param(cnp(egress(PEER, section="egressDeny")), id="egressDeny"),
    pytest.param(cnp(egress(ports({"port": "80", "protocol": "TCP"}))), id="port-80-tcp"),
    pytest.param(cnp(egress(ports({"port": "http"}))), id="named-port"),
    pytest.param(cnp(egress(ports({"port": "0x50"}))), id="go-base-prefix-port"),
    pytest.param(
        cnp(egress(ports({"port": "8000", "endPort": 8080, "protocol": "udp".upper()}))), id="range"
    ),
    pytest.param(cnp(egress(ports({"port": "8080", "endPort": 80}))), id="endPort-below-port-is-not-checked"),
    pytest.param(cnp(egress({"toCIDR": ["10.0.0.0/8"]})), id="toCIDR"),
    pytest.param(
        cnp(egress({"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}]})), id="cidrset"
    ),
    pytest.param(cnp(egress({"toEntities": ["world", "kube-apiserver"]})), id="entities"),
    pytest.param(cnp(egress({"toFQDNs": [{"matchPattern": "*.example.com"}]})), id="fqdn"),
    pytest.param(
        cnp(
            egress(
                {
                    "toEndpoints": [{}],
                    "toPorts": [
                        {
                            "ports": [{"port": "53", "protocol": "UDP"}],
                            "rules": {"dns": [{"matchPattern": "*"}]},
                        }
                    ],
                }
            )
        ),
        id="dns-rule-on-udp",
    ),
    pytest.param(
        cnp(egress({"icmps": [{"fields": [{"type": 8}, {"family": "IPv6", "type": "EchoRequest"}]}]})),
        id="icmp",
    ),
    pytest.param(cnp(egress(PEER, enableDefaultDeny={"egress": False})), id="enableDefaultDeny"),
    pytest.param(
        cnp(
            {"nodeSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]},
            kind="CiliumClusterwideNetworkPolicy",
        ),
        id="ccnp-host-policy",
    ),
    pytest.param(
        cnp(specs=[egress(PEER), egress({"fromEntities": ["world"]}, section="ingressDeny")]), id="specs"
    ),
    pytest.param(
        cnp(egress({"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system"}}]})),
        id="source-prefixed-key",
    ),
    pytest.param(
        cnp(egress({**PEER, "toRequires": [{"matchLabels": {"env": "prod"}}]})),
        id="requires-is-not-a-peer-kind",
    ),
    pytest.param(
        cnp(
            egress(
                {"toServices": [{"k8sService": {"serviceName": "s", "namespace": "d"}}]}, section="egressDeny"
            )
        ),
        id="toServices-in-egressDeny",
    ),
    pytest.param(
        cnp(
            egress(
                ports({"port": "9000", "protocol": "TCP"}, rules={"l7proto": "r2d2", "l7": [{"cmd": "READ"}]})
            )
        ),
        id="generic-l7",
    ),
    pytest.param(
        cnp(egress(ports({"port": "9092", "protocol": "TCP"}, rules={"kafka": [{"role": "produce"}]}))),
        id="kafka",
    ),
    pytest.param(cnp(egress({"toCIDR": ["2001:db8::/32"]})), id="ipv6-cidr"),
    pytest.param(cnp(egress(PEER), specs=[]), id="spec-and-empty-specs"),
    pytest.param(knp({"podSelector": {}}), id="knp-empty-spec"),
    pytest.param(
        knp(
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                        "ports": [{"port": 80}, {"port": "http", "protocol": "UDP"}],
                    }
                ],
                "policyTypes": ["Ingress"],
            }
        ),
        id="knp-ports-ipblock",
    ),
]


@pytest.mark.parametrize("obj", VALID)
def test_valid(obj: dict[str, Any]) -> None:
    assert problems(obj) == []


S = "spec"
E0 = "spec.egress[0]"
P0 = "spec.egress[0].toPorts[0]"
INVALID = [
    # §1.6 and structure
    pytest.param(
        cnp({"endpointSelector": SEL, "deny": [PEER]}),
        [("spec.deny", 'unknown field "spec.deny"')],
        id="deny-field",
    ),
    pytest.param(
        cnp(egress({**PEER, "fromPorts": []})),
        [("spec.egress[0].fromPorts", 'unknown field "spec.egress[0].fromPorts"')],
        id="fromPorts",
    ),
    pytest.param(
        cnp(
            egress(PEER),
        )
        | {"metadata": {"name": "p", "description": "x"}},
        [("metadata.description", 'unknown field "metadata.description"')],
        id="metadata-description",
    ),
    pytest.param(
        cnp(egress(ports({"port": 80}))),
        [
            (
                f"{P0}.ports[0].port",
                f'Invalid value: "integer": {P0}.ports[0].port in body must be of type '
                'string: "integer" (quote it: port: "80")',
            )
        ],
        id="unquoted-port",
    ),
    pytest.param(
        cnp({"endpointSelector": SEL, "egress": "x"}),
        [("spec.egress", 'Invalid value: "string": spec.egress in body must be of type array: "string"')],
        id="wrong-type",
    ),
    pytest.param(
        cnp(egress({"toPorts": [{"ports": [{"protocol": "TCP"}]}]})),
        [(f"{P0}.ports[0].port", "Required value")],
        id="port-required",
    ),
    # §1.1
    pytest.param(cnp(), [("", "Invalid CiliumNetworkPolicy spec(s): empty policy")], id="empty-cnp"),
    pytest.param(
        cnp(kind="CiliumClusterwideNetworkPolicy"),
        [("", "Invalid CiliumClusterwideNetworkPolicy spec(s): empty policy")],
        id="empty-ccnp",
    ),
    pytest.param(
        {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {}, "spec": egress(PEER)},
        [("metadata.name", "CiliumNetworkPolicy must have name")],
        id="no-name",
    ),
    pytest.param(
        cnp({"nodeSelector": {}, "ingress": [{}]}),
        [("spec.nodeSelector", "rule cannot have NodeSelector")],
        id="cnp-nodeSelector",
    ),
    pytest.param(
        cnp(egress(PEER)) | {"apiVersion": "cilium.io/v1"},
        [("apiVersion", 'no matches for kind "CiliumNetworkPolicy" in version "cilium.io/v1"')],
        id="wrong-apiVersion",
    ),
    # §1.4 in order
    pytest.param(
        cnp({"endpointSelector": SEL}),
        [(S, "rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny")],
        id="no-section",
    ),
    pytest.param(
        cnp({"endpointSelector": SEL, "ingress": []}),
        [(S, "rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny")],
        id="empty-list-is-no-section",
    ),
    pytest.param(
        cnp({"ingress": [{}]}),
        [(S, "rule must have one of EndpointSelector or NodeSelector")],
        id="no-selector",
    ),
    pytest.param(
        cnp(
            {"endpointSelector": {}, "nodeSelector": {}, "ingress": [{}]},
            kind="CiliumClusterwideNetworkPolicy",
        ),
        [("spec.nodeSelector", "rule cannot have both EndpointSelector and NodeSelector")],
        id="both-sel",
    ),
    pytest.param(
        cnp(
            egress(PEER)
            | {"endpointSelector": {"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]}}
        ),
        [
            (
                "spec.endpointSelector.matchExpressions[0].operator",
                'Unsupported value: "in": supported values: "In", "NotIn", "Exists", "DoesNotExist"',
            )
        ],
        id="selector-operator",
    ),
    pytest.param(
        cnp(egress(PEER) | {"endpointSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
        [
            (
                "spec.endpointSelector.matchExpressions[0].values",
                "Required value: must be specified when `operator` is 'In' or 'NotIn'",
            )
        ],
        id="in-needs-values",
    ),
    pytest.param(
        cnp(
            egress(PEER)
            | {
                "endpointSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                }
            }
        ),
        [
            (
                "spec.endpointSelector.matchExpressions[0].values",
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )
        ],
        id="exists-no-values",
    ),
    pytest.param(
        cnp(egress(PEER) | {"endpointSelector": {"matchLabels": {"app": "bad value"}}}),
        [
            (
                "spec.endpointSelector.matchLabels.app",
                'Invalid value: "bad value": a valid label must be an '
                "empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character",
            )
        ],
        id="label-value",
    ),
    pytest.param(
        cnp(egress({**PEER, "toEntities": ["world"]})),
        [(E0, "combining ToEndpoints and ToEntities is not supported yet")],
        id="combining-egress",
    ),
    pytest.param(
        cnp({"endpointSelector": SEL, "ingress": [{"fromCIDR": ["10.0.0.0/8"], "fromEntities": ["world"]}]}),
        [("spec.ingress[0]", "combining FromCIDR and FromEntities is not supported yet")],
        id="combining-ingress",
    ),
    pytest.param(
        cnp(egress({"toFQDNs": [{"matchName": "a.com"}], "toCIDR": ["1.1.1.1/32"]})),
        [(E0, "combining ToCIDR and ToFQDNs is not supported yet")],
        id="combining-fqdn",
    ),
    pytest.param(
        cnp(egress({**PEER, "icmps": [{"fields": [{"type": 8}]}], "toPorts": [{"ports": [{"port": "80"}]}]})),
        [
            (
                f"{E0}.icmps",
                "the ICMPs block may only be present without ToPorts. Define a separate rule to use ToPorts",
            )
        ],
        id="icmp-with-ports",
    ),
    pytest.param(
        cnp(egress({"icmps": [{"fields": [{"type": 8}]}]})),
        [(f"{E0}.icmps", 'ICMP rules can only be applied when the "enable-icmp-rules" flag is set')],
        id="icmp-flag-off",
    ),
    pytest.param(
        cnp(egress({"icmps": [{"fields": [{"type": 8}] * 41}]})),
        [(f"{E0}.icmps[0].fields", "Too many: 41: must have at most 40 items")],
        id="icmp-40",
    ),
    pytest.param(
        cnp(egress({"icmps": [{"fields": [{"family": "IPv5", "type": 8}]}]})),
        [(f"{E0}.icmps[0].fields[0].family", 'Unsupported value: "IPv5": supported values: "IPv4", "IPv6"')],
        id="icmp-family",
    ),
    pytest.param(
        cnp(egress({"icmps": [{"fields": [{"type": "PacketTooBig"}]}]})),
        [(f"{E0}.icmps[0].fields[0].type", "ICMP type PacketTooBig not found in IPv4")],
        id="icmp-name-wrong-family",
    ),
    pytest.param(
        cnp(egress({"icmps": [{"fields": [{"type": "Ping"}]}]})),
        [(f"{E0}.icmps[0].fields[0].type", 'Invalid value: "Ping": should be 0..255 or an ICMP type name')],
        id="icmp-unknown-name",
    ),
    pytest.param(
        cnp(egress({"icmps": [{"fields": [{"type": "ExtendedEchoReply"}]}]})),
        [
            (
                f"{E0}.icmps[0].fields[0].type",
                'Invalid value: "ExtendedEchoReply": should be 0..255 or an ICMP type name',
            )
        ],
        id="icmp-name-missing-from-crd-pattern",
    ),
    pytest.param(
        cnp({"endpointSelector": SEL, "ingress": [{"fromNodes": [{}]}]}),
        [
            (
                "spec.ingress[0].fromNodes",
                "FromNodes/ToNodes rules can only be applied when the "
                '"enable-node-selector-labels" flag is set',
            )
        ],
        id="fromNodes-flag",
    ),
    pytest.param(
        cnp(egress({"toEntities": ["world-ipv4"]})),
        [
            (
                f"{E0}.toEntities[0]",
                'Unsupported value: "world-ipv4": supported values: "all", "world", '
                '"cluster", "host", "init", "ingress", "unmanaged", "remote-node", "health", "none", '
                '"kube-apiserver"',
            )
        ],
        id="entity-enum",
    ),
    pytest.param(
        cnp(egress({"toCIDR": ["10.0.0.1"]})),
        [
            (
                f"{E0}.toCIDR[0]",
                f'Invalid value: "10.0.0.1": {E0}.toCIDR[0] in body must be of type cidr: '
                '"10.0.0.1" (write it as a prefix, e.g. /32)',
            )
        ],
        id="bare-ip",
    ),
    pytest.param(
        cnp(egress({"toCIDR": ["10.0.0.0/33"]})),
        [
            (
                f"{E0}.toCIDR[0]",
                f'Invalid value: "10.0.0.0/33": {E0}.toCIDR[0] in body must be of type cidr: "10.0.0.0/33"',
            )
        ],
        id="prefix-too-long",
    ),
    pytest.param(
        cnp(egress({"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}]})),
        [
            (
                f"{E0}.toCIDRSet[0].except[0]",
                "allow CIDR prefix 10.0.0.0/8 does not contain exclude CIDR prefix 11.0.0.0/16",
            )
        ],
        id="except-outside",
    ),
    pytest.param(
        cnp(egress({"toCIDRSet": [{"except": ["10.0.0.0/16"]}]})),
        [(f"{E0}.toCIDRSet[0]", "one of cidr, cidrGroupRef, or cidrGroupSelector is required")],
        id="cidrset-none",
    ),
    pytest.param(
        cnp(egress({"toCIDRSet": [{"cidr": "10.0.0.0/8", "cidrGroupRef": "g"}]})),
        [(f"{E0}.toCIDRSet[0]", "more than one of cidr, cidrGroupRef, or cidrGroupSelector may not be set")],
        id="cidrset-two",
    ),
    # per PortRule
    pytest.param(
        cnp(egress(ports(*[{"port": str(1000 + i)} for i in range(41)]))),
        [(f"{P0}.ports", "Too many: 41: must have at most 40 items")],
        id="41-ports",
    ),
    pytest.param(
        cnp(egress(ports(*[{"port": str(1000 + i)} for i in range(41)]), section="egressDeny")),
        [("spec.egressDeny[0].toPorts[0].ports", "too many ports, the max is 40")],
        id="41-deny-ports",
    ),
    pytest.param(
        cnp(egress(ports({"port": "80", "protocol": "ICMP"}))),
        [
            (
                f"{P0}.ports[0].protocol",
                'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP", "ANY"',
            )
        ],
        id="protocol-enum",
    ),
    pytest.param(
        cnp(egress(ports({"port": "80", "endPort": 70000}))),
        [(f"{P0}.ports[0].endPort", "Invalid value: 70000: should be less than or equal to 65535")],
        id="endPort-range",
    ),
    pytest.param(
        cnp(egress(ports({"port": "99999"}))),
        [(f"{P0}.ports[0].port", 'unable to parse port: strconv.ParseUint: parsing "99999": invalid syntax')],
        id="port-out-of-range",
    ),
    pytest.param(
        cnp(egress(ports({"port": "-"}))),
        [
            (
                f"{P0}.ports[0].port",
                f'Invalid value: "-": {P0}.ports[0].port in body should match '
                "'^(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
                "|([a-zA-Z0-9]-?)*[a-zA-Z](-?[a-zA-Z0-9])*$'",
            )
        ],
        id="port-pattern",
    ),
    pytest.param(
        cnp(egress(ports({"port": "80", "protocol": "UDP"}, rules={"http": [{"path": "/"}]}))),
        [(f"{P0}.ports[0].protocol", "L7 rules can only apply to TCP (not UDP) except for DNS rules")],
        id="l7-on-udp",
    ),
    pytest.param(
        cnp(egress(ports({"port": "80"}, rules={"http": [{}]}))),
        [(f"{P0}.ports[0].protocol", "L7 rules can only apply to TCP (not ANY) except for DNS rules")],
        id="l7-on-any",
    ),
    pytest.param(
        cnp(egress(ports({"port": "0", "protocol": "TCP"}, rules={"http": [{}]}))),
        [(f"{P0}.rules", "L7 rules can not be used when a port is 0")],
        id="l7-port-0",
    ),
    pytest.param(
        cnp(egress(ports({"port": "80", "protocol": "TCP"}, rules={"http": [{}], "kafka": [{}]}))),
        [(f"{P0}.rules", "multiple L7 protocol rule types specified in single rule")],
        id="two-l7",
    ),
    pytest.param(
        cnp(egress(ports({"port": "80", "protocol": "TCP"}, rules={"l7": [{"a": "b"}]}))),
        [(f"{P0}.rules.l7", "'l7' may only be specified when a 'l7proto' is also specified")],
        id="l7-without-l7proto",
    ),
    pytest.param(
        cnp(egress({**PEER, "toPorts": [{"rules": {"dns": [{"matchName": "a.com"}]}}]})),
        [(f"{P0}.rules.dns", "port 53 must be specified for DNS rules")],
        id="dns-needs-port",
    ),
    pytest.param(
        cnp(
            egress(
                ports(
                    {"port": "53", "endPort": 60, "protocol": "UDP"}, rules={"dns": [{"matchPattern": "*"}]}
                )
            )
        ),
        [(f"{P0}.ports[0].endPort", "DNS rules do not support port ranges")],
        id="dns-range",
    ),
    pytest.param(
        cnp(
            {
                "endpointSelector": SEL,
                "ingress": [
                    {
                        "toPorts": [
                            {
                                "ports": [{"port": "53", "protocol": "UDP"}],
                                "rules": {"dns": [{"matchPattern": "*"}]},
                            }
                        ]
                    }
                ],
            }
        ),
        [("spec.ingress[0].toPorts", "L7 protocol DNS is not supported on ingress yet")],
        id="dns-ingress",
    ),
    pytest.param(
        cnp(
            {
                "nodeSelector": {},
                "ingress": [
                    {"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{}]}}]}
                ],
            },
            kind="CiliumClusterwideNetworkPolicy",
        ),
        [("spec.ingress[0].toPorts", "L7 policy is not supported on host ingress yet")],
        id="host-l7-in",
    ),
    pytest.param(
        cnp(
            {
                "nodeSelector": {},
                "egress": [
                    {"toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}], "rules": {"http": [{}]}}]}
                ],
            },
            kind="CiliumClusterwideNetworkPolicy",
        ),
        [("spec.egress[0].toPorts", "L7 protocol HTTP is not supported on host egress yet")],
        id="host-l7-out",
    ),
    pytest.param(
        cnp(
            {
                "endpointSelector": SEL,
                "ingress": [
                    {
                        "toPorts": [
                            {
                                "ports": [{"port": "80", "protocol": "TCP"}],
                                "listener": {
                                    "envoyConfig": {"kind": "CiliumEnvoyConfig", "name": "e"},
                                    "name": "l",
                                },
                            }
                        ]
                    }
                ],
            }
        ),
        [("spec.ingress[0].toPorts[0].listener", "Listener is not allowed on ingress (l)")],
        id="listener-ingress",
    ),
    pytest.param(
        cnp(egress(ports({"port": "443", "protocol": "TCP"}, serverNames=["a.com"], rules={"http": [{}]}))),
        [(f"{P0}.serverNames", "ServerNames are not allowed with L7 rules without TLS termination")],
        id="servernames-l7",
    ),
    pytest.param(
        cnp(egress(ports({"port": "443", "protocol": "TCP"}, serverNames=[""]))),
        [(f"{P0}.serverNames[0]", "empty server name is not allowed")],
        id="empty-servername",
    ),
    pytest.param(
        cnp(egress({"toFQDNs": [{"matchName": "a.com", "matchPattern": "*.a.com"}]})),
        [(f"{E0}.toFQDNs[0]", "only one of MatchName or MatchPattern is allowed in an FQDNSelector")],
        id="fqdn-both",
    ),
    pytest.param(
        cnp(egress({"toFQDNs": [{"matchName": "a*.com"}]})),
        [(f"{E0}.toFQDNs[0].matchName", "Invalid value: \"a*.com\": should match '^([-a-zA-Z0-9_]+[.]?)+$'")],
        id="fqdn-chars",
    ),
    pytest.param(
        cnp(egress(PEER) | {"authentication": {"mode": "strict"}}),
        [("spec.authentication", 'unknown field "spec.authentication"')],
        id="auth-at-rule-level",
    ),
    pytest.param(
        cnp(egress({**PEER, "authentication": {"mode": "strict"}})),
        [
            (
                f"{E0}.authentication.mode",
                'Unsupported value: "strict": supported values: "disabled", "required", "test-always-fail"',
            )
        ],
        id="auth-mode",
    ),
    pytest.param(
        cnp(egress({**PEER, "toFQDNs": []}, section="egressDeny")),
        [("spec.egressDeny[0].toFQDNs", 'unknown field "spec.egressDeny[0].toFQDNs"')],
        id="deny-no-fqdn",
    ),
    pytest.param(
        cnp(
            egress(
                {**PEER, "toPorts": [{"ports": [{"port": "80"}], "rules": {"http": [{}]}}]},
                section="egressDeny",
            )
        ),
        [("spec.egressDeny[0].toPorts[0].rules", 'unknown field "spec.egressDeny[0].toPorts[0].rules"')],
        id="deny-no-l7",
    ),
    pytest.param(
        cnp(specs=[egress(PEER), {"endpointSelector": SEL}]),
        [("specs[1]", "rule must have at least one of Ingress, IngressDeny, Egress, EgressDeny")],
        id="specs-second-bad",
    ),
    pytest.param(
        cnp(egress({"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["2001:db8::/64"]}]})),
        [
            (
                f"{E0}.toCIDRSet[0].except[0]",
                "allow CIDR prefix 10.0.0.0/8 does not contain exclude CIDR prefix 2001:db8::/64",
            )
        ],
        id="except-other-family",
    ),
    pytest.param(
        cnp(egress(ports({"port": "9092", "protocol": "TCP"}, rules={"kafka": [{"role": "write"}]}))),
        [(f"{P0}.rules.kafka[0].role", 'Unsupported value: "write": supported values: "produce", "consume"')],
        id="kafka-role",
    ),
    pytest.param(
        cnp(
            egress(
                ports(
                    {"port": "80", "protocol": "TCP"},
                    rules={"http": [{}]},
                    listener={"envoyConfig": {"kind": "CiliumEnvoyConfig", "name": "e"}, "name": "l"},
                )
            )
        ),
        [(f"{P0}.listener", "Listener is not allowed with L7 rules (l)")],
        id="listener-with-l7",
    ),
    pytest.param(
        cnp(egress(PEER, enableDefaultDeny={"egress": "no"})),
        [
            (
                "spec.enableDefaultDeny.egress",
                'Invalid value: "string": spec.enableDefaultDeny.egress in body must be of type boolean: '
                '"string"',
            )
        ],
        id="enableDefaultDeny-type",
    ),
    pytest.param(
        cnp(egress(PEER), namespace="Prod"),
        [
            (
                "metadata.namespace",
                'Invalid value: "Prod": a lowercase RFC 1123 label must consist of lower case '
                "alphanumeric characters or '-', and must start and end with an alphanumeric character",
            )
        ],
        id="namespace-syntax",
    ),
    pytest.param(
        knp(
            {
                "podSelector": {},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchExpressions": [
                                        {"key": "team", "operator": "Exists", "values": ["a"]}
                                    ]
                                }
                            }
                        ]
                    }
                ],
            }
        ),
        [
            (
                "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )
        ],
        id="knp-namespace-selector",
    ),
    pytest.param(cnp(egress(PEER, log={"value": "x"})), [], id="log-is-a-1.18-field"),
    pytest.param(
        cnp(egress(PEER, log={"value": "x" * 33})),
        [("spec.log.value", "Too long: may not be longer than 32")],
        id="log-too-long",
    ),
    # NetworkPolicy (API server)
    pytest.param(
        knp({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}),
        [
            (
                "spec.ingress[0].ports[0].protocol",
                'Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"',
            )
        ],
        id="knp-protocol",
    ),
    pytest.param(
        knp({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}),
        [("spec.ingress[0].ports[0].port", "Invalid value: 0: must be between 1 and 65535, inclusive")],
        id="knp-port-0",
    ),
    pytest.param(
        knp({"podSelector": {}, "ingress": [{"ports": [{"port": "Http"}]}]}),
        [
            (
                "spec.ingress[0].ports[0].port",
                'Invalid value: "Http": must contain only alpha-numeric characters (a-z, 0-9), '
                "and hyphens (-)",
            )
        ],
        id="knp-port-name",
    ),
    pytest.param(
        knp({"podSelector": {}, "egress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
        [("spec.egress[0].ports[0].endPort", "Invalid value: 80: must be greater than or equal to `port`")],
        id="knp-endport",
    ),
    pytest.param(
        knp({"podSelector": {}, "egress": [{"ports": [{"port": "dns", "endPort": 80}]}]}),
        [("spec.egress[0].ports[0].endPort", "Forbidden: may not be specified when `port` is non-numeric")],
        id="knp-endport-named",
    ),
    pytest.param(
        knp(
            {
                "podSelector": {},
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}],
            }
        ),
        [
            (
                "spec.egress[0].to[0].ipBlock.except[0]",
                'Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`',
            )
        ],
        id="knp-except-not-strict",
    ),
    pytest.param(
        knp(
            {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}
        ),
        [("spec.egress[0].to[0]", "Forbidden: may not specify more than 1 peer type")],
        id="knp-two-peers",
    ),
    pytest.param(
        knp({"podSelector": {}, "egress": [{"to": [{}]}]}),
        [("spec.egress[0].to[0]", "Required value: must specify a peer")],
        id="knp-empty-peer",
    ),
    pytest.param(
        knp({"podSelector": {}, "policyTypes": ["ingress"]}),
        [("spec.policyTypes[0]", 'Unsupported value: "ingress": supported values: "Ingress", "Egress"')],
        id="knp-policytypes",
    ),
    pytest.param(
        knp({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0"}}]}]}),
        [
            (
                "spec.ingress[0].from[0].ipBlock.cidr",
                'Invalid value: "10.0.0.0": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)',
            )
        ],
        id="knp-cidr",
    ),
]


@pytest.mark.parametrize(("obj", "expected"), INVALID)
def test_invalid(
    obj: dict[str, Any], expected: list[tuple[str, str]], request: pytest.FixtureRequest
) -> None:
    flags = Flags(icmp_rules=False) if request.node.callspec.id == "icmp-flag-off" else Flags()
    assert problems(obj, flags) == expected


def test_collects_every_error_not_just_the_first() -> None:
    obj = cnp(
        egress({"toCIDR": ["x/8"]}, ports({"port": "80", "protocol": "ICMP"}), {"toEntities": ["moon"]})
        | {"bogus": 1}
    )
    assert [p for p, _ in problems(obj)] == [
        "spec.bogus",
        "spec.egress[0].toCIDR[0]",
        "spec.egress[1].toPorts[0].ports[0].protocol",
        "spec.egress[2].toEntities[0]",
    ]


def test_errors_carry_file_line_column() -> None:
    text = "\n".join(
        [
            "apiVersion: cilium.io/v2",
            "kind: CiliumNetworkPolicy",
            "metadata:",
            "  name: p",
            "spec:",
            "  endpointSelector: {}",
            "  egress:",
            "  - toPorts:",
            "    - ports:",
            "      - port: '80'",
            "        protocol: ICMP",
        ]
    )
    [err] = validate_result(load_text(text, "f.yaml")).errors
    assert (err.file, err.line, err.column, err.path) == (
        "f.yaml",
        11,
        9,
        "spec.egress[0].toPorts[0].ports[0].protocol",
    )


def test_missing_apiversion_and_kind_with_case_hint() -> None:
    report = validate_result(load_text("apiversion: cilium.io/v2\nmetadata: {name: x}\n", "f.yaml"))
    assert [(e.path, e.message, e.hint) for e in report.errors] == [
        ("apiversion", "apiVersion not set", 'found "apiversion": field names are case-sensitive'),
        ("", "kind not set", None),
    ]


def test_other_kinds_are_ignored_with_a_warning() -> None:
    report = validate_result(load_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "f.yaml"))
    assert report.valid
    assert report.warnings == ("f.yaml:1: ConfigMap c is not used by cilia; ignored",)


def test_non_policy_kinds_check_the_fields_cilia_reads() -> None:
    text = yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "replicas": "two",
                "strategy": {"anything": 1},
                "selector": {"matchLabels": {"app": "w"}},
                "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c"}]}},
            },
        }
    )
    assert problems(text) == [
        ("spec.replicas", 'Invalid value: "string": spec.replicas in body must be of type integer: "string"')
    ]


def test_misspelt_policy_kind_is_an_error_not_an_ignored_object() -> None:
    text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicies\nmetadata: {name: x}\nspec: {}\n"
    [err] = validate_result(load_text(text, "k.yaml")).errors
    assert (err.path, err.message, err.hint) == (
        "kind",
        'no matches for kind "CiliumNetworkPolicies" in version "cilium.io/v2"',
        'did you mean "CiliumNetworkPolicy"?',
    )


def test_deployment_selector_must_match_template_labels() -> None:
    def deploy(selector: dict[str, Any] | None) -> dict[str, Any]:
        template = {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": []}}
        spec: dict[str, Any] = {"template": template}
        if selector is not None:
            spec["selector"] = selector
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": spec}

    assert problems(deploy({"matchLabels": {"app": "w"}})) == []
    assert problems(deploy({"matchExpressions": [{"key": "app", "operator": "In", "values": ["w"]}]})) == []
    assert problems(deploy({"matchLabels": {"app": "v"}})) == [
        ("spec.template.metadata.labels", "Invalid value: `selector` does not match template `labels`")
    ]
    assert problems(deploy(None)) == [("spec.selector", "Required value")]


def test_pruned_fields_hide_only_their_consequences() -> None:
    # `deny:` removed leaves no section: that follow-up is not reported, the selector error is
    obj = cnp({"endpointSelector": {"matchLabels": {"app": "a b"}}, "deny": [PEER]})
    assert [p for p, _ in problems(obj)] == ["spec.deny", "spec.endpointSelector.matchLabels.app"]
