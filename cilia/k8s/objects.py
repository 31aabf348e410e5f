"""Typed values for the Kubernetes objects cilia reads, and :class:`Cluster`, the set of them.

The records these values are built from are in :mod:`cilia.k8s.kinds`; the
three policy kinds wrap the strict models of :mod:`cilia.k8s.api`; their full validation lives in
:mod:`cilia.k8s.validate`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import field
from typing import TYPE_CHECKING, Any

from cilia.k8s import api
from cilia.k8s.frozen import frozen
from cilia.k8s.kinds import (
    CCNP,
    DEFAULT_NAMESPACE,
    DaemonSetModel,
    DeploymentModel,
    EndpointSliceModel,
    EndpointsModel,
    NodeModel,
    PodModel,
    PodSpecModel,
    PodTemplateModel,
    ServiceModel,
    StatefulSetModel,
)
from cilia.k8s.source import Document

if TYPE_CHECKING:
    from cilia.k8s.cidrgroup import CIDRGroup

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
# The API server's name generator keeps at most 58 characters of a generateName (63 - 5 random ones).
MAX_GENERATED_PREFIX = 58
# Kubernetes' rand.SafeEncodeString alphabet: no vowels and no look-alike characters.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


# --------------------------------------------------------------------------- values


@frozen
class Source:
    """Where an object was read from (1-based line/column of its first key)."""

    file: str
    document: int
    line: int
    column: int

    @classmethod
    def of(cls, doc: Document) -> Source:
        return cls(doc.file, doc.index, doc.line, doc.column)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


_NO_SOURCE = Source("", 0, 0, 0)


@frozen
class Namespace:
    """A namespace: declared in the input, or implied by an object in it (``declared=False``)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    declared: bool = True
    source: Source = field(default=_NO_SOURCE, compare=False)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@frozen
class ContainerPort:
    """A port a container declares (``containerPort``, its name and protocol)."""

    name: str | None
    container_port: int
    protocol: str


@frozen
class Container:
    """One container of a pod: what cilia shows and runs of it."""

    name: str
    image: str | None
    command: tuple[str, ...]
    args: tuple[str, ...]
    ports: tuple[ContainerPort, ...]


@frozen
class Pod:
    """A pod: read from a Pod object or expanded from a workload's template (``owner``)."""

    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...] = ()
    service_account: str | None = None
    containers: tuple[Container, ...] = ()
    pod_ip: str | None = None
    node_name: str | None = None
    owner: str | None = None  # "Deployment/<name>" (StatefulSet/, DaemonSet/) for expanded pods
    host_network: bool = False  # spec.hostNetwork: the pod is its node (no endpoint of its own)
    source: Source = field(default=_NO_SOURCE, compare=False)
    pod_ips: tuple[str, ...] = ()  # status.podIPs beside podIP (a dual-stack pod's IPv6 address)

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every address of the pod: podIP, then the other podIPs."""
        first = (self.pod_ip,) if self.pod_ip else ()
        return first + tuple(ip for ip in self.pod_ips if ip and ip != self.pod_ip)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def ports(self) -> tuple[ContainerPort, ...]:
        return tuple(p for c in self.containers for p in c.ports)


@frozen
class Deployment:
    """A Deployment: its replicas, template hash and the pods it makes."""

    name: str
    namespace: str
    replicas: int
    template_hash: str
    pods: tuple[Pod, ...]
    source: Source = field(default=_NO_SOURCE, compare=False)


@frozen
class Workload:
    """A StatefulSet or DaemonSet (``kind``) and the pods it makes."""

    kind: str
    name: str
    namespace: str
    pods: tuple[Pod, ...]
    source: Source = field(default=_NO_SOURCE, compare=False)


@frozen
class ServicePort:
    """One port of a Service: its port, target port (number or name) and protocol."""

    name: str | None
    port: int
    target_port: int | str | None
    protocol: str


@frozen
class Service:
    """A Service: its selector, ports and cluster addresses."""

    name: str
    namespace: str
    selector: tuple[tuple[str, str], ...] | None
    ports: tuple[ServicePort, ...]
    cluster_ip: str | None = None
    source: Source = field(default=_NO_SOURCE, compare=False)
    labels: tuple[tuple[str, str], ...] = ()  # the Service object's own labels (k8sServiceSelector)
    cluster_ips: tuple[str, ...] = ()  # spec.clusterIPs (primary family first)
    ip_families: tuple[str, ...] = ()  # spec.ipFamilies as written
    ip_family_policy: str | None = None

    @property
    def families(self) -> tuple[str, ...]:
        """The IP families the Service has (primary first), as the API server decides them
        (:mod:`cilia.k8s.ipfamilies`)."""
        from cilia.k8s.ipfamilies import resolve

        ips = self.cluster_ips or ((self.cluster_ip,) if self.cluster_ip else ())
        return resolve(self.ip_family_policy, self.ip_families, ips)

    @property
    def addresses(self) -> tuple[str, ...]:
        """The ClusterIPs the manifests give (``clusterIPs``, else ``clusterIP``; none for headless)."""
        ips = self.cluster_ips or ((self.cluster_ip,) if self.cluster_ip else ())
        return tuple(ip for ip in ips if ip and ip != "None")


@frozen
class ServiceEndpoints:
    """Endpoints or EndpointSlice of a selector-less Service: the backend addresses and ports."""

    service: str
    namespace: str
    addresses: tuple[str, ...]
    ports: tuple[ServicePort, ...]
    source: Source = field(default=_NO_SOURCE, compare=False)


@frozen
class Policy:
    """A CNP, CCNP or NetworkPolicy. ``namespace`` is ``""`` for a CCNP."""

    kind: str
    name: str
    namespace: str
    model: api.CiliumNetworkPolicy | api.NetworkPolicy
    source: Source = field(default=_NO_SOURCE, compare=False)

    @property
    def rules(self) -> tuple[api.Rule, ...]:
        """The Cilium rules (``spec`` then ``specs``); empty for a NetworkPolicy."""
        if not isinstance(self.model, api.CiliumNetworkPolicy):
            return ()
        out = [self.model.spec] if self.model.spec is not None else []
        return tuple(out + list(self.model.specs or []))


@frozen
class Node:
    """A Kubernetes Node: its labels and addresses (``status.addresses``, ``(type, address)``)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    addresses: tuple[tuple[str, str], ...] = ()
    source: Source = field(default=_NO_SOURCE, compare=False)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def ips(self) -> tuple[str, ...]:
        """The node's IP addresses (InternalIP and ExternalIP), in the order given."""
        return tuple(a for t, a in self.addresses if t in ("InternalIP", "ExternalIP"))


@frozen
class Ignored:
    """An object of a kind cilia does not use (ConfigMap, ServiceAccount, …)."""

    kind: str
    name: str
    namespace: str
    source: Source = field(default=_NO_SOURCE, compare=False)


@frozen
class Cluster:
    """Everything loaded from a set of manifests."""

    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    deployments: tuple[Deployment, ...] = ()
    workloads: tuple[Workload, ...] = ()  # StatefulSets and DaemonSets (their pods are in ``pods``)
    services: tuple[Service, ...] = ()
    endpoints: tuple[ServiceEndpoints, ...] = ()
    policies: tuple[Policy, ...] = ()
    ignored: tuple[Ignored, ...] = ()
    cidr_groups: tuple[CIDRGroup, ...] = ()  # CiliumCIDRGroups (cilia.k8s.cidrgroup)
    secrets: tuple[tuple[tuple[str, str], str], ...] = ()  # ((namespace, name), value): cilia.k8s.secrets
    nodes: tuple[Node, ...] = ()  # Kubernetes Nodes (labels, addresses), by name
    # Later documents that replaced earlier ones of the same object (cilia.k8s.duplicates).
    warnings: tuple[str, ...] = ()

    def namespace(self, name: str) -> Namespace | None:
        return next((n for n in self.namespaces if n.name == name), None)

    def pod(self, namespace: str, name: str) -> Pod | None:
        return next((p for p in self.pods if p.namespace == namespace and p.name == name), None)


# --------------------------------------------------------------------------- constructors


def _pairs(mapping: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((mapping or {}).items()))


def safe_encode(digest: bytes, length: int) -> str:
    """``length`` characters of Kubernetes' safe alphabet derived from ``digest``."""
    number = int.from_bytes(digest, "big")
    out = []
    for _ in range(length):
        number, rem = divmod(number, len(SAFE_ALPHABET))
        out.append(SAFE_ALPHABET[rem])
    return "".join(out)


def _sha256(data: bytes) -> bytes:
    # Python's own SHA-256 where it has one: hashlib loads OpenSSL's library first, ~4 ms of every
    # cilia start that expands a Deployment (issue 15); both give the same digest.
    try:
        from _sha256 import sha256  # CPython 3.11 (3.12+: _sha2)
    except ImportError:
        from hashlib import sha256
    return sha256(data).digest()


def template_hash(template: Any) -> str:
    """The 10-character ``pod-template-hash`` of a pod template (content-derived, stable)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return safe_encode(_sha256(canonical.encode()), 10)


def pod_suffix(deployment: str, tmpl_hash: str, index: int) -> str:
    """The 5-character random-looking suffix of replica ``index`` (deterministic)."""
    return safe_encode(_sha256(f"{deployment}/{tmpl_hash}/{index}".encode()), 5)


def replica_pod_name(deployment: str, tmpl_hash: str, suffix: str) -> str:
    """``<deployment>-<hash>-<suffix>``, the prefix cut to 58 characters as the API server's name
    generator cuts a ``generateName`` (so the name stays a valid 63-character pod name)."""
    return f"{deployment}-{tmpl_hash}-"[:MAX_GENERATED_PREFIX] + suffix


def _containers(spec: PodSpecModel) -> tuple[Container, ...]:
    return tuple(
        Container(
            name=c.name,
            image=c.image,
            command=tuple(c.command or ()),
            args=tuple(c.args or ()),
            ports=tuple(ContainerPort(p.name, p.container_port, p.protocol.upper()) for p in c.ports or ()),
        )
        for c in spec.containers
    )


def make_namespace(
    name: str, labels: dict[str, str] | None = None, *, declared: bool = True, source: Source = _NO_SOURCE
) -> Namespace:
    """A Namespace with the ``kubernetes.io/metadata.name`` label the API server always sets."""
    merged = dict(labels or {})
    merged[NAMESPACE_NAME_LABEL] = name
    return Namespace(name, _pairs(merged), declared, source)


def pod_from(model: PodModel, source: Source) -> Pod:
    meta = model.metadata
    return Pod(
        name=meta.name or meta.generate_name or "",
        namespace=meta.namespace or DEFAULT_NAMESPACE,
        labels=_pairs(meta.labels),
        annotations=_pairs(meta.annotations),
        service_account=model.spec.service_account_name,
        containers=_containers(model.spec),
        pod_ip=model.status.pod_ip if model.status else None,
        node_name=model.spec.node_name,
        host_network=model.spec.host_network,
        source=source,
        pod_ips=tuple(p.ip for p in model.status.pod_ips if p.ip) if model.status else (),
    )


def node_from(model: NodeModel, source: Source) -> Node:
    status = model.status
    addresses = tuple((a.type, a.address) for a in (status.addresses if status else None) or ())
    return Node(model.metadata.name or "", _pairs(model.metadata.labels), addresses, source)


def deployment_from(model: DeploymentModel, raw_template: Any, source: Source) -> Deployment:
    """A Deployment and its ``replicas`` pods, named ``<name>-<hash>-<suffix>`` like Kubernetes."""
    name = model.metadata.name or ""
    namespace = model.metadata.namespace or DEFAULT_NAMESPACE
    tmpl = model.spec.template
    h = template_hash(raw_template)
    labels = dict(tmpl.metadata.labels or {})
    labels[POD_TEMPLATE_HASH_LABEL] = h
    pods = tuple(
        Pod(
            name=replica_pod_name(name, h, pod_suffix(name, h, i)),
            namespace=namespace,
            labels=_pairs(labels),
            annotations=_pairs(tmpl.metadata.annotations),
            service_account=tmpl.spec.service_account_name,
            containers=_containers(tmpl.spec),
            node_name=tmpl.spec.node_name,
            owner=f"Deployment/{name}",
            host_network=tmpl.spec.host_network,
            source=source,
        )
        for i in range(model.spec.replicas)
    )
    return Deployment(name, namespace, model.spec.replicas, h, pods, source)


def _template_pod(tmpl: PodTemplateModel, name: str, namespace: str, labels: dict[str, str], owner: str,
                  node: str | None, source: Source) -> Pod:
    return Pod(
        name=name,
        namespace=namespace,
        labels=_pairs(labels),
        annotations=_pairs(tmpl.metadata.annotations),
        service_account=tmpl.spec.service_account_name,
        containers=_containers(tmpl.spec),
        node_name=node,
        owner=owner,
        host_network=tmpl.spec.host_network,
        source=source,
    )


def statefulset_from(model: StatefulSetModel, raw_template: Any, source: Source) -> Workload:
    """A StatefulSet and its ``replicas`` pods ``<name>-0``, ``<name>-1``, … with the labels the
    controller adds (``controller-revision-hash``, ``statefulset.kubernetes.io/pod-name``,
    ``apps.kubernetes.io/pod-index``; Cilium's label filter keeps none of them in identities)."""
    name = model.metadata.name or ""
    namespace = model.metadata.namespace or DEFAULT_NAMESPACE
    tmpl = model.spec.template
    revision = f"{name}-{template_hash(raw_template)}"
    pods = []
    for i in range(model.spec.replicas):
        labels = dict(tmpl.metadata.labels or {})
        labels |= {
            "controller-revision-hash": revision,
            "statefulset.kubernetes.io/pod-name": f"{name}-{i}",
            "apps.kubernetes.io/pod-index": str(i),
        }
        pods.append(
            _template_pod(tmpl, f"{name}-{i}", namespace, labels, f"StatefulSet/{name}", tmpl.spec.node_name,
                          source)
        )
    return Workload("StatefulSet", name, namespace, tuple(pods), source)


def daemonset_from(
    model: DaemonSetModel, raw_template: Any, nodes: Sequence[str], source: Source
) -> Workload:
    """A DaemonSet and its pods, one on each of ``nodes`` (the Nodes of the manifests; one pod on no
    node when there are none), named ``<name>-<suffix>`` with the labels the controller adds
    (``controller-revision-hash``, ``pod-template-generation``)."""
    name = model.metadata.name or ""
    namespace = model.metadata.namespace or DEFAULT_NAMESPACE
    tmpl = model.spec.template
    h = template_hash(raw_template)
    labels = dict(tmpl.metadata.labels or {})
    labels |= {"controller-revision-hash": f"{name}-{h}", "pod-template-generation": "1"}
    where: Sequence[str | None] = list(nodes) or [tmpl.spec.node_name]
    pods = tuple(
        _template_pod(
            tmpl, f"{name}-"[:MAX_GENERATED_PREFIX] + pod_suffix(name, h, i), namespace, labels,
            f"DaemonSet/{name}", node, source,
        )
        for i, node in enumerate(where)
    )
    return Workload("DaemonSet", name, namespace, pods, source)


def service_from(model: ServiceModel, source: Source) -> Service:
    spec = model.spec
    return Service(
        name=model.metadata.name or "",
        namespace=model.metadata.namespace or DEFAULT_NAMESPACE,
        selector=_pairs(spec.selector) if spec.selector is not None else None,
        ports=tuple(ServicePort(p.name, p.port, p.target_port, p.protocol.upper()) for p in spec.ports or ()),
        cluster_ip=spec.cluster_ip or ((spec.cluster_ips or [None])[0]),
        source=source,
        labels=_pairs(model.metadata.labels),
        cluster_ips=tuple(spec.cluster_ips or ()),
        ip_families=tuple(spec.ip_families or ()),
        ip_family_policy=spec.ip_family_policy,
    )


def endpoints_from(model: EndpointsModel, source: Source) -> ServiceEndpoints:
    addrs: list[str] = []
    ports: list[ServicePort] = []
    for subset in model.subsets or ():
        addrs.extend(a.ip for a in subset.addresses or ())
        ports.extend(ServicePort(p.name, p.port or 0, None, p.protocol.upper()) for p in subset.ports or ())
    return ServiceEndpoints(
        model.metadata.name or "",
        model.metadata.namespace or DEFAULT_NAMESPACE,
        tuple(addrs),
        tuple(dict.fromkeys(ports)),
        source,
    )


def endpoint_slice_from(model: EndpointSliceModel, source: Source) -> ServiceEndpoints:
    labels = model.metadata.labels or {}
    service = labels.get("kubernetes.io/service-name", model.metadata.name or "")
    addrs = [a for e in model.endpoints or () for a in e.addresses]
    ports = [ServicePort(p.name, p.port or 0, None, p.protocol.upper()) for p in model.ports or ()]
    return ServiceEndpoints(
        service, model.metadata.namespace or DEFAULT_NAMESPACE, tuple(addrs), tuple(ports), source
    )


def policy_from(model: api.CiliumNetworkPolicy | api.NetworkPolicy, source: Source) -> Policy:
    namespace = model.metadata.namespace or ""
    if model.kind != CCNP and not namespace:
        namespace = DEFAULT_NAMESPACE
    if model.kind == CCNP:
        namespace = ""
    return Policy(model.kind, model.metadata.name or "", namespace, model, source)
