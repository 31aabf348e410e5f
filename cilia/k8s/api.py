"""Typed models of the policy API that users write: Cilium's ``api.Rule`` and friends, and
Kubernetes NetworkPolicy.

Pure data: field names, types and nesting exactly as the CRDs define them (semantics.md §1.2–§1.3,
§6). Unknown fields are rejected (``extra="forbid"``), as ``kubectl apply`` with strict field
validation does against Cilium's structural CRD schema. Omitted fields are ``None`` so that an
explicitly empty list (``fromEndpoints: []``, which selects nothing) stays distinguishable from an
omitted one (semantics.md §1.5). Cilium's semantic checks (§1.4) live in
:mod:`cilia.k8s.validate`, not here.
"""

from __future__ import annotations

from typing import Any

from cilia.k8s.record import Field, Record


class APIModel(Record, extra="forbid"):
    """Base: camelCase aliases, unknown fields rejected, immutable (:mod:`cilia.k8s.record`)."""

    def to_yaml_obj(self) -> dict[str, Any]:
        """The object as YAML/JSON data, with camelCase keys and omitted fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------- selectors


class LabelSelectorRequirement(APIModel):
    key: str
    operator: str
    values: list[str] | None = None


class LabelSelector(APIModel):
    """A Kubernetes LabelSelector; Cilium's EndpointSelector has the same YAML shape."""

    match_labels: dict[str, str | None] | None = Field(default=None, alias="matchLabels")
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, alias="matchExpressions")


EndpointSelector = LabelSelector


# --------------------------------------------------------------------------- L4 / L7


class PortProtocol(APIModel):
    # The CRD declares port as a string; ints are accepted here and judged by cilia.k8s.validate.
    port: str | int | None = None
    end_port: int | None = Field(default=None, alias="endPort")
    protocol: str | None = None


class HeaderMatch(APIModel):
    mismatch: str | None = None
    name: str
    secret: Secret | None = None
    value: str | None = None


class Secret(APIModel):
    namespace: str | None = None
    name: str


class PortRuleHTTP(APIModel):
    path: str | None = None
    method: str | None = None
    host: str | None = None
    headers: list[str] | None = None
    header_matches: list[HeaderMatch] | None = Field(default=None, alias="headerMatches")


class PortRuleKafka(APIModel):
    role: str | None = None
    api_key: str | None = Field(default=None, alias="apiKey")
    api_version: str | None = Field(default=None, alias="apiVersion")
    client_id: str | None = Field(default=None, alias="clientID")
    topic: str | None = None


class PortRuleDNS(APIModel):
    match_name: str | None = Field(default=None, alias="matchName")
    match_pattern: str | None = Field(default=None, alias="matchPattern")


class L7Rules(APIModel):
    http: list[PortRuleHTTP] | None = None
    kafka: list[PortRuleKafka] | None = None
    dns: list[PortRuleDNS] | None = None
    l7proto: str | None = None
    l7: list[dict[str, str]] | None = None


class TLSContext(APIModel):
    secret: Secret | None = None
    trusted_ca: str | None = Field(default=None, alias="trustedCA")
    certificate: str | None = None
    private_key: str | None = Field(default=None, alias="privateKey")


class EnvoyConfig(APIModel):
    kind: str | None = None
    name: str


class Listener(APIModel):
    envoy_config: EnvoyConfig = Field(alias="envoyConfig")
    name: str
    priority: int | None = None


class PortRule(APIModel):
    ports: list[PortProtocol] | None = None
    rules: L7Rules | None = None
    server_names: list[str] | None = Field(default=None, alias="serverNames")
    terminating_tls: TLSContext | None = Field(default=None, alias="terminatingTLS")
    originating_tls: TLSContext | None = Field(default=None, alias="originatingTLS")
    listener: Listener | None = None


class PortDenyRule(APIModel):
    """Deny rules carry ports only: no L7, no TLS, no listener (semantics.md §1.3)."""

    ports: list[PortProtocol] | None = None


class ICMPField(APIModel):
    family: str | None = None
    type: int | str


class ICMPRule(APIModel):
    fields: list[ICMPField] | None = None


# --------------------------------------------------------------------------- L3 peers


class CIDRRule(APIModel):
    cidr: str | None = None
    cidr_group_ref: str | None = Field(default=None, alias="cidrGroupRef")
    cidr_group_selector: LabelSelector | None = Field(default=None, alias="cidrGroupSelector")
    except_: list[str] | None = Field(default=None, alias="except")


class FQDNSelector(APIModel):
    match_name: str | None = Field(default=None, alias="matchName")
    match_pattern: str | None = Field(default=None, alias="matchPattern")


class K8sServiceNamespace(APIModel):
    service_name: str | None = Field(default=None, alias="serviceName")
    namespace: str | None = None


class ServiceSelector(APIModel):
    selector: LabelSelector
    namespace: str | None = None


class Service(APIModel):
    k8s_service: K8sServiceNamespace | None = Field(default=None, alias="k8sService")
    k8s_service_selector: ServiceSelector | None = Field(default=None, alias="k8sServiceSelector")


class AWSGroup(APIModel):
    labels: dict[str, str] | None = None
    security_groups_ids: list[str] | None = Field(default=None, alias="securityGroupsIds")
    security_groups_names: list[str] | None = Field(default=None, alias="securityGroupsNames")
    region: str | None = None


class Groups(APIModel):
    aws: AWSGroup | None = None


class Authentication(APIModel):
    mode: str


class IngressCommonRule(APIModel):
    from_endpoints: list[LabelSelector] | None = Field(default=None, alias="fromEndpoints")
    from_requires: list[LabelSelector] | None = Field(default=None, alias="fromRequires")
    from_cidr: list[str] | None = Field(default=None, alias="fromCIDR")
    from_cidr_set: list[CIDRRule] | None = Field(default=None, alias="fromCIDRSet")
    from_entities: list[str] | None = Field(default=None, alias="fromEntities")
    from_groups: list[Groups] | None = Field(default=None, alias="fromGroups")
    from_nodes: list[LabelSelector] | None = Field(default=None, alias="fromNodes")
    icmps: list[ICMPRule] | None = None


class IngressRule(IngressCommonRule):
    to_ports: list[PortRule] | None = Field(default=None, alias="toPorts")
    authentication: Authentication | None = None


class IngressDenyRule(IngressCommonRule):
    to_ports: list[PortDenyRule] | None = Field(default=None, alias="toPorts")


class EgressCommonRule(APIModel):
    to_endpoints: list[LabelSelector] | None = Field(default=None, alias="toEndpoints")
    to_requires: list[LabelSelector] | None = Field(default=None, alias="toRequires")
    to_cidr: list[str] | None = Field(default=None, alias="toCIDR")
    to_cidr_set: list[CIDRRule] | None = Field(default=None, alias="toCIDRSet")
    to_entities: list[str] | None = Field(default=None, alias="toEntities")
    to_services: list[Service] | None = Field(default=None, alias="toServices")
    to_groups: list[Groups] | None = Field(default=None, alias="toGroups")
    to_nodes: list[LabelSelector] | None = Field(default=None, alias="toNodes")
    icmps: list[ICMPRule] | None = None


class EgressRule(EgressCommonRule):
    to_ports: list[PortRule] | None = Field(default=None, alias="toPorts")
    to_fqdns: list[FQDNSelector] | None = Field(default=None, alias="toFQDNs")
    authentication: Authentication | None = None


class EgressDenyRule(EgressCommonRule):
    to_ports: list[PortDenyRule] | None = Field(default=None, alias="toPorts")


class DefaultDenyConfig(APIModel):
    ingress: bool | None = None
    egress: bool | None = None


class RuleLabel(APIModel):
    key: str
    value: str | None = None
    source: str | None = None


class LogConfig(APIModel):
    value: str | None = None


class Rule(APIModel):
    """One Cilium policy rule (``spec`` or an element of ``specs``)."""

    endpoint_selector: LabelSelector | None = Field(default=None, alias="endpointSelector")
    node_selector: LabelSelector | None = Field(default=None, alias="nodeSelector")
    ingress: list[IngressRule] | None = None
    ingress_deny: list[IngressDenyRule] | None = Field(default=None, alias="ingressDeny")
    egress: list[EgressRule] | None = None
    egress_deny: list[EgressDenyRule] | None = Field(default=None, alias="egressDeny")
    labels: list[RuleLabel] | None = None
    description: str | None = None
    enable_default_deny: DefaultDenyConfig | None = Field(default=None, alias="enableDefaultDeny")
    log: LogConfig | None = None


# --------------------------------------------------------------------------- object wrappers


class ObjectMeta(APIModel):
    """Kubernetes ObjectMeta: every field a real object (or a ``kubectl get -o json`` dump) carries."""

    name: str | None = None
    generate_name: str | None = Field(default=None, alias="generateName")
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    generation: int | None = None
    creation_timestamp: str | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: str | None = Field(default=None, alias="deletionTimestamp")
    deletion_grace_period_seconds: int | None = Field(default=None, alias="deletionGracePeriodSeconds")
    owner_references: list[dict[str, Any]] | None = Field(default=None, alias="ownerReferences")
    finalizers: list[str] | None = None
    managed_fields: list[dict[str, Any]] | None = Field(default=None, alias="managedFields")
    self_link: str | None = Field(default=None, alias="selfLink")


class CiliumNetworkPolicy(APIModel):
    """A CiliumNetworkPolicy (namespaced) or CiliumClusterwideNetworkPolicy (cluster-scoped)."""

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta
    spec: Rule | None = None
    specs: list[Rule] | None = None
    # Written by Cilium, never by users; accepted so that `kubectl get -o yaml` dumps load.
    status: dict[str, Any] | None = None


# --------------------------------------------------------------------------- Kubernetes NetworkPolicy


class IPBlock(APIModel):
    cidr: str
    except_: list[str] | None = Field(default=None, alias="except")


class NetworkPolicyPeer(APIModel):
    pod_selector: LabelSelector | None = Field(default=None, alias="podSelector")
    namespace_selector: LabelSelector | None = Field(default=None, alias="namespaceSelector")
    ip_block: IPBlock | None = Field(default=None, alias="ipBlock")


class NetworkPolicyPort(APIModel):
    protocol: str | None = None
    port: int | str | None = None
    end_port: int | None = Field(default=None, alias="endPort")


class NetworkPolicyIngressRule(APIModel):
    from_: list[NetworkPolicyPeer] | None = Field(default=None, alias="from")
    ports: list[NetworkPolicyPort] | None = None


class NetworkPolicyEgressRule(APIModel):
    to: list[NetworkPolicyPeer] | None = None
    ports: list[NetworkPolicyPort] | None = None


class NetworkPolicySpec(APIModel):
    pod_selector: LabelSelector | None = Field(default=None, alias="podSelector")
    ingress: list[NetworkPolicyIngressRule] | None = None
    egress: list[NetworkPolicyEgressRule] | None = None
    policy_types: list[str] | None = Field(default=None, alias="policyTypes")


class NetworkPolicy(APIModel):
    """A Kubernetes ``networking.k8s.io/v1`` NetworkPolicy."""

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta
    spec: NetworkPolicySpec | None = None
    status: dict[str, Any] | None = None

