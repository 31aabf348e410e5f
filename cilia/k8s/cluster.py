"""Building a :class:`~cilia.k8s.objects.Cluster` from manifests: validate, then collect the objects.

Namespaces referenced but not declared exist implicitly; every namespace carries the
``kubernetes.io/metadata.name`` label; Deployments, StatefulSets and
DaemonSets expand into their pods (a Pod listed under the same name is kept instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO

from cilia.k8s import api, cidrgroup
from cilia.k8s.cilium_rules import Flags
from cilia.k8s.duplicates import duplicate_warnings, latest_documents
from cilia.k8s.errors import ManifestError, ValidationReport
from cilia.k8s.kinds import KNP, OBJECT_MODELS, POLICY_KINDS, NamespaceModel
from cilia.k8s.loader import LoadResult, load_paths
from cilia.k8s.objects import (
    CCNP,
    Cluster,
    DaemonSetModel,
    Deployment,
    DeploymentModel,
    EndpointSliceModel,
    EndpointsModel,
    Ignored,
    Namespace,
    Node,
    NodeModel,
    Pod,
    PodModel,
    Policy,
    Service,
    ServiceEndpoints,
    ServiceModel,
    Source,
    StatefulSetModel,
    Workload,
    daemonset_from,
    deployment_from,
    endpoint_slice_from,
    endpoints_from,
    make_namespace,
    node_from,
    pod_from,
    policy_from,
    service_from,
    statefulset_from,
)
from cilia.k8s.secrets import secret_values
from cilia.k8s.validate import validate_result


def build_cluster(result: LoadResult) -> Cluster:
    """Collect the objects of already-validated documents (invalid ones must be filtered before).

    A later document of the same object replaces an earlier one, as ``kubectl apply -f`` does
    (:mod:`cilia.k8s.duplicates`); the cluster's ``warnings`` say which.
    """
    documents = latest_documents(result.documents)
    declared: dict[str, Namespace] = {}
    pods: list[Pod] = []
    deployments: list[Deployment] = []
    workloads: list[Workload] = []
    daemonsets: list[tuple[DaemonSetModel, object, Source]] = []  # made once the Nodes are known
    services: list[Service] = []
    endpoints: list[ServiceEndpoints] = []
    policies: list[Policy] = []
    ignored: list[Ignored] = []
    groups: dict[str, cidrgroup.CIDRGroup] = {}  # by name: a later document wins, as with kubectl
    nodes: dict[str, Node] = {}
    for doc in documents:
        src = Source.of(doc)
        kind = doc.kind
        if kind in POLICY_KINDS:
            model_type = api.NetworkPolicy if kind == KNP else api.CiliumNetworkPolicy
            policies.append(policy_from(model_type.model_validate(doc.data), src))
        elif kind == "Namespace":
            m = NamespaceModel.model_validate(doc.data)
            declared[m.metadata.name or ""] = make_namespace(
                m.metadata.name or "", m.metadata.labels, source=src
            )
        elif kind == "Pod":
            pods.append(pod_from(PodModel.model_validate(doc.data), src))
        elif kind == "Deployment":
            d = deployment_from(DeploymentModel.model_validate(doc.data), doc.data["spec"]["template"], src)
            deployments.append(d)
            pods.extend(d.pods)
        elif kind == "StatefulSet":
            w = statefulset_from(StatefulSetModel.model_validate(doc.data), doc.data["spec"]["template"], src)
            workloads.append(w)
        elif kind == "DaemonSet":
            daemonsets.append((DaemonSetModel.model_validate(doc.data), doc.data["spec"]["template"], src))
        elif kind == "Service":
            services.append(service_from(ServiceModel.model_validate(doc.data), src))
        elif kind == "Endpoints":
            endpoints.append(endpoints_from(EndpointsModel.model_validate(doc.data), src))
        elif kind == "EndpointSlice":
            endpoints.append(endpoint_slice_from(EndpointSliceModel.model_validate(doc.data), src))
        elif kind == cidrgroup.KIND:
            groups[doc.name] = cidrgroup.group_from(cidrgroup.CIDRGroupModel.model_validate(doc.data), src)
        elif kind == "Node":
            nodes[doc.name] = node_from(NodeModel.model_validate(doc.data), src)
        elif kind == "Secret":
            pass  # values read below (headerMatches secrets)
        elif kind not in OBJECT_MODELS or kind == "ServiceAccount":
            ignored.append(Ignored(kind, doc.name, doc.namespace, src))
    workloads += [daemonset_from(m, tmpl, sorted(nodes), src) for m, tmpl, src in daemonsets]
    listed = {(p.namespace, p.name) for p in pods}
    pods += [p for w in workloads for p in w.pods if (p.namespace, p.name) not in listed]
    used = [p.namespace for p in pods] + [s.namespace for s in services] + [e.namespace for e in endpoints]
    used += [p.namespace for p in policies if p.kind != CCNP]
    namespaces = dict(declared)
    for ns in used:
        if ns and ns not in namespaces:
            namespaces[ns] = make_namespace(ns, declared=False)
    return Cluster(
        namespaces=tuple(namespaces[n] for n in sorted(namespaces)),
        pods=tuple(pods),
        deployments=tuple(deployments),
        workloads=tuple(workloads),
        services=tuple(services),
        endpoints=tuple(endpoints),
        policies=tuple(policies),
        ignored=tuple(ignored),
        cidr_groups=tuple(groups[n] for n in sorted(groups)),
        secrets=secret_values(documents),
        nodes=tuple(nodes[n] for n in sorted(nodes)),
        warnings=tuple(duplicate_warnings(result.documents)),
    )


def load_cluster_report(
    paths: Sequence[str | Path], *, stdin: IO[bytes] | None = None, flags: Flags = Flags()
) -> tuple[Cluster | None, ValidationReport]:
    """Load and validate; the cluster is ``None`` when anything is invalid."""
    result = load_paths(paths, stdin)
    report = validate_result(result, flags)
    return (build_cluster(result) if report.valid else None), report


def load_cluster(
    paths: Sequence[str | Path], *, stdin: IO[bytes] | None = None, flags: Flags = Flags()
) -> Cluster:
    """Load, validate and collect; raises :class:`ManifestError` with every problem if invalid."""
    cluster, report = load_cluster_report(paths, stdin=stdin, flags=flags)
    if cluster is None:
        raise ManifestError(list(report.errors))
    return cluster
