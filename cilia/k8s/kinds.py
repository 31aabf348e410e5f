"""The kinds of Kubernetes object cilia reads, as records (:mod:`cilia.k8s.record`) of the fields it
reads: their names, the policy kinds' apiVersions, the non-policy kinds' lenient models.

Non-policy kinds check only the fields cilia reads and tolerate everything else a real object
carries (a Deployment has many fields cilia has no use for). Apart from :mod:`cilia.k8s.objects`
(the values built from them) so that checking a manifest does not build those (issue 15).
"""

from __future__ import annotations

from cilia.k8s import api
from cilia.k8s.record import Field, Record

DEFAULT_NAMESPACE = "default"

CNP = "CiliumNetworkPolicy"
CCNP = "CiliumClusterwideNetworkPolicy"
KNP = "NetworkPolicy"
POLICY_KINDS = {CNP: "cilium.io/v2", CCNP: "cilium.io/v2", KNP: "networking.k8s.io/v1"}


class Lenient(Record, extra="ignore"):
    """Base for non-policy kinds: checks what cilia reads, ignores the rest."""


class Meta(Lenient):
    name: str | None = None
    generate_name: str | None = Field(default=None, alias="generateName")
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class ContainerPortSpec(Lenient):
    name: str | None = None
    container_port: int = Field(alias="containerPort", ge=1, le=65535)
    protocol: str = "TCP"


class ContainerSpec(Lenient):
    name: str
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    ports: list[ContainerPortSpec] | None = None


class PodSpecModel(Lenient):
    containers: list[ContainerSpec] = Field(default_factory=list)
    service_account_name: str | None = Field(default=None, alias="serviceAccountName")
    node_name: str | None = Field(default=None, alias="nodeName")
    host_network: bool = Field(default=False, alias="hostNetwork")


class PodIPModel(Lenient):
    ip: str | None = None


class PodStatusModel(Lenient):
    pod_ip: str | None = Field(default=None, alias="podIP")
    pod_ips: list[PodIPModel] = Field(default_factory=list, alias="podIPs")  # dual stack: both families


class PodModel(Lenient):
    metadata: Meta
    spec: PodSpecModel = Field(default_factory=PodSpecModel)
    status: PodStatusModel | None = None


class PodTemplateModel(Lenient):
    metadata: Meta = Field(default_factory=Meta)
    spec: PodSpecModel


class DeploymentSpecModel(Lenient):
    replicas: int = Field(default=1, ge=0)
    selector: api.LabelSelector | None = None
    template: PodTemplateModel


class DeploymentModel(Lenient):
    metadata: Meta
    spec: DeploymentSpecModel


class StatefulSetSpecModel(Lenient):
    replicas: int = Field(default=1, ge=0)
    selector: api.LabelSelector | None = None
    template: PodTemplateModel


class StatefulSetModel(Lenient):
    metadata: Meta
    spec: StatefulSetSpecModel


class DaemonSetSpecModel(Lenient):
    selector: api.LabelSelector | None = None
    template: PodTemplateModel


class DaemonSetModel(Lenient):
    metadata: Meta
    spec: DaemonSetSpecModel


class NamespaceModel(Lenient):
    metadata: Meta


class ServicePortSpec(Lenient):
    name: str | None = None
    port: int = Field(ge=1, le=65535)
    target_port: int | str | None = Field(default=None, alias="targetPort")
    protocol: str = "TCP"


class ServiceSpecModel(Lenient):
    selector: dict[str, str] | None = None
    ports: list[ServicePortSpec] | None = None
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_ips: list[str] | None = Field(default=None, alias="clusterIPs")
    ip_families: list[str] | None = Field(default=None, alias="ipFamilies")
    ip_family_policy: str | None = Field(default=None, alias="ipFamilyPolicy")
    type: str | None = None


class ServiceModel(Lenient):
    metadata: Meta
    spec: ServiceSpecModel = Field(default_factory=ServiceSpecModel)


class EndpointAddressSpec(Lenient):
    ip: str


class EndpointPortSpec(Lenient):
    name: str | None = None
    port: int | None = None
    protocol: str = "TCP"


class EndpointSubsetSpec(Lenient):
    addresses: list[EndpointAddressSpec] | None = None
    ports: list[EndpointPortSpec] | None = None


class EndpointsModel(Lenient):
    metadata: Meta
    subsets: list[EndpointSubsetSpec] | None = None


class SliceEndpointSpec(Lenient):
    addresses: list[str] = Field(default_factory=list)


class EndpointSliceModel(Lenient):
    metadata: Meta
    endpoints: list[SliceEndpointSpec] | None = None
    ports: list[EndpointPortSpec] | None = None


class ServiceAccountModel(Lenient):
    metadata: Meta


class NodeAddressSpec(Lenient):
    type: str
    address: str


class NodeStatusModel(Lenient):
    addresses: list[NodeAddressSpec] | None = None


class NodeModel(Lenient):
    metadata: Meta
    status: NodeStatusModel | None = None


# The lenient models by kind, with the apiVersions Kubernetes serves them under.
OBJECT_MODELS: dict[str, tuple[type[Lenient], tuple[str, ...]]] = {
    "Namespace": (NamespaceModel, ("v1",)),
    "Pod": (PodModel, ("v1",)),
    "Deployment": (DeploymentModel, ("apps/v1",)),
    "StatefulSet": (StatefulSetModel, ("apps/v1",)),
    "DaemonSet": (DaemonSetModel, ("apps/v1",)),
    "Service": (ServiceModel, ("v1",)),
    "Endpoints": (EndpointsModel, ("v1",)),
    "EndpointSlice": (EndpointSliceModel, ("discovery.k8s.io/v1",)),
    "ServiceAccount": (ServiceAccountModel, ("v1",)),
    "Node": (NodeModel, ("v1",)),
}
