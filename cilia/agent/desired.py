"""The agent's in-memory copy of the desired state, kept current from store events, and the
Deployment controller (replica count → pod objects in the store).

Objects are stored as the Kubernetes objects the user applied; here they are parsed once into the
typed values of :mod:`cilia.k8s.objects` (pods, namespaces, policies) when their event arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple

from cilia.agent.errors import AgentError
from cilia.k8s import api
from cilia.k8s.cidrgroup import CIDRGroup, parse_group
from cilia.k8s.kinds import NamespaceModel
from cilia.k8s.objects import (
    CCNP,
    Deployment,
    DeploymentModel,
    EndpointsModel,
    Pod,
    PodModel,
    Policy,
    ServiceModel,
    Source,
    deployment_from,
    endpoints_from,
    make_namespace,
    pod_from,
    pod_suffix,
    policy_from,
    replica_pod_name,
    service_from,
)
from cilia.k8s.secrets import SecretModel, secret_value
from cilia.store import Delete, Event, EventType, Kind, ObjectKey, Op, Put

OWNER_ANNOTATION = "cilia.io/owner"  # Deployment/<name>, beside metadata.ownerReferences
NO_SOURCE = Source("", 0, 0, 0)


class PodKey(NamedTuple):
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class PolicyKey(NamedTuple):
    kind: str  # CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy | NetworkPolicy
    namespace: str  # "" for CCNP
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


class ChangeKind(StrEnum):
    """What a store event changed in the desired state (:meth:`DesiredState.apply`)."""

    NAMESPACE = "namespace"
    POD = "pod"
    DEPLOYMENT = "deployment"
    SERVICE = "service"  # a Service or its Endpoints
    POLICY = "policy"
    CIDR_GROUP = "cidrgroup"
    SECRET = "secret"


class ObjectError(AgentError, ValueError):
    """A stored object the agent cannot read (it was validated on apply, so this is a bug or a
    hand-written store entry); the agent reports it as a Warning event and skips the object."""


def parse_pod(obj: dict[str, Any]) -> Pod:
    try:
        pod = pod_from(PodModel.model_validate(obj), NO_SOURCE)
    except ValueError as e:
        raise ObjectError(f"pod: {e}") from e
    owner = ((obj.get("metadata") or {}).get("annotations") or {}).get(OWNER_ANNOTATION)
    if owner:
        pod = replace(pod, owner=owner)
    return pod


def parse_policy(obj: dict[str, Any]) -> Policy:
    try:
        model: api.CiliumNetworkPolicy | api.NetworkPolicy
        if obj.get("kind") == "NetworkPolicy":
            model = api.NetworkPolicy.model_validate(obj)
        else:
            model = api.CiliumNetworkPolicy.model_validate(obj)
    except ValueError as e:
        raise ObjectError(f"policy: {e}") from e
    return policy_from(model, NO_SOURCE)


@dataclass
class DesiredState:
    """What the store says should exist, indexed for the reconcile steps."""

    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)  # declared ones, with labels
    pods: dict[PodKey, Pod] = field(default_factory=dict)
    raw_pods: dict[PodKey, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[PodKey, dict[str, Any]] = field(default_factory=dict)
    services: dict[PodKey, Any] = field(default_factory=dict)
    service_endpoints: dict[PodKey, tuple[str, ...]] = field(default_factory=dict)  # selector-less backends
    policies: dict[PolicyKey, Policy] = field(default_factory=dict)
    cidr_groups: dict[str, CIDRGroup] = field(default_factory=dict)  # CiliumCIDRGroups by name
    # (namespace, name) -> the Secret's single value (headerMatches secret references); kept out of logs
    secrets: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    def secret_values(self) -> tuple[tuple[tuple[str, str], str], ...]:
        """The stored Secrets' values as EngineOptions.secrets takes them, sorted."""
        return tuple(sorted(self.secrets.items()))

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        """Labels of a namespace; a namespace never declared exists implicitly with only the
        ``kubernetes.io/metadata.name`` label, as in the manifests loader."""
        return make_namespace(namespace, self.namespaces.get(namespace)).label_map

    def apply(self, ev: Event) -> tuple[ChangeKind, Any] | None:
        """Fold one store event in; returns what changed as (what, key), None if irrelevant."""
        key, put = ev.key, ev.type is EventType.PUT
        if key.kind is Kind.NAMESPACES:
            if put:
                meta = NamespaceModel.model_validate(ev.value).metadata
                self.namespaces[key.name] = dict(meta.labels or {})
            else:
                self.namespaces.pop(key.name, None)
            return (ChangeKind.NAMESPACE, key.name)
        if key.kind is Kind.PODS:
            pk = PodKey(key.namespace, key.name)
            if put:
                self.pods[pk] = parse_pod(ev.value)
                self.raw_pods[pk] = ev.value
            else:
                self.pods.pop(pk, None)
                self.raw_pods.pop(pk, None)
            return (ChangeKind.POD, pk)
        if key.kind is Kind.DEPLOYMENTS:
            dk = PodKey(key.namespace, key.name)
            if put:
                self.deployments[dk] = ev.value
            else:
                self.deployments.pop(dk, None)
            return (ChangeKind.DEPLOYMENT, dk)
        if key.kind is Kind.SERVICES:
            sk = PodKey(key.namespace, key.name)
            if put:
                self.services[sk] = service_from(ServiceModel.model_validate(ev.value), NO_SOURCE)
            else:
                self.services.pop(sk, None)
            return (ChangeKind.SERVICE, sk)
        if key.kind is Kind.ENDPOINTS:
            ek = PodKey(key.namespace, key.name)
            if put:
                self.service_endpoints[ek] = endpoints_from(
                    EndpointsModel.model_validate(ev.value), NO_SOURCE
                ).addresses
            else:
                self.service_endpoints.pop(ek, None)
            return (ChangeKind.SERVICE, ek)
        if key.kind in (Kind.CNP, Kind.CCNP, Kind.KNP):
            if put:
                pol = parse_policy(ev.value)
                pkey = PolicyKey(pol.kind, pol.namespace, pol.name)
                self.policies[pkey] = pol
            else:
                kind = {Kind.CNP: "CiliumNetworkPolicy", Kind.CCNP: CCNP, Kind.KNP: "NetworkPolicy"}[key.kind]
                pkey = PolicyKey(kind, key.namespace, key.name)
                self.policies.pop(pkey, None)
            return (ChangeKind.POLICY, pkey)
        if key.kind is Kind.CIDR_GROUPS:
            if put:
                try:
                    self.cidr_groups[key.name] = parse_group(ev.value)
                except ValueError as e:
                    raise ObjectError(f"CiliumCIDRGroup: {e}") from e
            else:
                self.cidr_groups.pop(key.name, None)
            return (ChangeKind.CIDR_GROUP, key.name)
        if key.kind is Kind.SECRETS:
            sk = (key.namespace, key.name)
            value = _secret_value(ev.value) if put else None
            if value is None:  # not exactly one item: no value, the header match falls back (fail closed)
                self.secrets.pop(sk, None)
            else:
                self.secrets[sk] = value
            return (ChangeKind.SECRET, sk)
        return None


def _secret_value(obj: dict[str, Any]) -> str | None:
    try:
        return secret_value(SecretModel.model_validate(obj))
    except ValueError:  # validated on apply; a hand-written entry gives no value (the error would quote it)
        return None


# --------------------------------------------------------------------------- Deployment controller


def _pod_object(pod: Pod, raw_template: dict[str, Any], deployment: str) -> dict[str, Any]:
    meta = dict(raw_template.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    annotations[OWNER_ANNOTATION] = f"Deployment/{deployment}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "labels": dict(pod.labels),
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}],
        },
        "spec": raw_template.get("spec") or {},
    }


def owned_pods(state: DesiredState, deployment: PodKey) -> list[Pod]:
    owner = f"Deployment/{deployment.name}"
    return [p for k, p in state.pods.items() if k.namespace == deployment.namespace and p.owner == owner]


def owner_of(pod: Pod) -> PodKey | None:
    """The Deployment a controller-made pod belongs to."""
    if pod.owner and pod.owner.startswith("Deployment/"):
        return PodKey(pod.namespace, pod.owner.split("/", 1)[1])
    return None


def deployment_ops(state: DesiredState, revision: int, only: set[PodKey] | None = None) -> list[Op]:
    """Store writes that bring every Deployment (or those in ``only``) to its replica count with
    the current template, and remove pods whose Deployment is gone.

    The first pods of a Deployment get the names the manifest loader gives them (so offline
    analysis and the node agree); a replacement gets a new name (index derived from the store
    ``revision``, which only grows), as a ReplicaSet's new pod does.
    """
    ops: list[Op] = []
    by_owner: dict[PodKey, list[Pod]] = {}
    for pod in state.pods.values():
        owner = owner_of(pod)
        if owner is not None and (only is None or owner in only):
            by_owner.setdefault(owner, []).append(pod)
    for dk in sorted(state.deployments if only is None else only & state.deployments.keys()):
        raw = state.deployments[dk]
        try:
            model = DeploymentModel.model_validate(raw)
        except ValueError:
            continue  # validated on apply; a broken hand-written entry is skipped, not fatal
        template = (raw.get("spec") or {}).get("template") or {}
        dep = deployment_from(model, template, NO_SOURCE)
        current = by_owner.get(dk, [])
        keep = [p for p in current if dict(p.labels).get("pod-template-hash") == dep.template_hash]
        stale = [p for p in current if p not in keep]
        # Scale down newest-name-last; deterministic.
        keep.sort(key=lambda p: p.name)
        excess = keep[dep.replicas :]
        keep = keep[: dep.replicas]
        for p in stale + excess:
            ops.append(Delete(Kind.PODS.key(p.namespace, p.name), missing_ok=True))
        names = {p.name for p in keep}
        wanted = dep.replicas - len(keep)
        for candidate in _candidate_pods(dep, revision, initial=not keep):
            if wanted <= 0:
                break
            if candidate.name in names or PodKey(candidate.namespace, candidate.name) in state.pods:
                continue
            obj = _pod_object(candidate, template, dk.name)
            ops.append(Put(Kind.PODS.key(candidate.namespace, candidate.name), obj))
            names.add(candidate.name)
            wanted -= 1
    for owner, pods in sorted(by_owner.items()):
        if owner not in state.deployments:
            ops.extend(Delete(Kind.PODS.key(p.namespace, p.name), missing_ok=True) for p in pods)
    return ops


def _candidate_pods(dep: Deployment, revision: int, initial: bool) -> list[Pod]:
    """The manifest's own pod names for a Deployment with no pods yet; otherwise replacement
    names from indices no earlier revision produced (a replaced pod never gets its old name)."""
    if initial or not dep.pods:
        return list(dep.pods)
    base = (revision + 1) * 1000
    out = []
    for i, tmpl_pod in enumerate(dep.pods):
        suffix = pod_suffix(dep.name, dep.template_hash, base + i)
        out.append(replace(tmpl_pod, name=replica_pod_name(dep.name, dep.template_hash, suffix)))
    return out


def key_of_pod(pk: PodKey) -> ObjectKey:
    return Kind.PODS.key(pk.namespace, pk.name)
