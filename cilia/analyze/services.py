"""Services as a flow's destination (``svc:NAMESPACE/NAME`` or a Service's ClusterIP).

The datapath translates a packet to a ClusterIP before any policy sees it (Cilium's load balancer
on the client's egress; cilia's service map likewise): the client's egress policy and the backend's
ingress policy decide the flow to the *backend* on the *target port*. So a Service destination
stands for one flow per backend, each on its translated port:

* a Service with a selector: the pods of its namespace whose labels match it, the port's
  ``targetPort`` (a number, the port itself when unset, or a named container port of each pod — a
  pod without that name is no backend for the port, as the endpoints controller skips it);
* a Service without one: the addresses of its Endpoints/EndpointSlice and the port of the same name;
* a headless Service (``clusterIP: None``) has no virtual address: its pods are reached directly on
  the port given.

A Service's IPv6 ClusterIP (dual stack, or SingleStack IPv6) stands for the backends' IPv6
addresses (a pod's IPv6 podIP, else its IPv4 address's lab twin; the IPv6 Endpoints addresses), as
the datapath's IPv6 service map translates; ``svc:NAMESPACE/NAME`` takes the Service's primary family.

A Service port that does not exist is bad input; a port with no backend is a drop (Cilium's
"Service backend not found").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cilia.analyze.peers import PeerError, PeerKind, PeerSpec, PortSpec, proto_name
from cilia.datapath.dualstack import ipv6_of
from cilia.k8s.objects import Service, ServicePort

if TYPE_CHECKING:
    from cilia.analyze.cluster import Analysis
    from cilia.analyze.flow import FlowEnd

NO_BACKEND = "Service backend not found"


@dataclass(frozen=True)
class Backend:
    """One backend of a Service port: who it is and the port a packet reaches it on."""

    end: FlowEnd
    port: int


@dataclass(frozen=True)
class ServiceTarget:
    """A Service port as a flow's destination, and its backends after translation."""

    namespace: str
    name: str
    cluster_ip: str  # "" when the manifests give none; "None" for a headless Service
    port: int
    proto: int
    target: str  # the targetPort as written ("8080", "http"); the port itself when unset
    backends: tuple[Backend, ...]

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"

    def describe(self) -> str:
        where = f" (ClusterIP {self.cluster_ip})" if self.cluster_ip and not self.headless else ""
        return f"service {self.namespace}/{self.name}{where} {self.port}/{proto_name(self.proto)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "cluster_ip": self.cluster_ip or None,
            "port": self.port,
            "protocol": proto_name(self.proto),
            "target_port": self.target,
            "headless": self.headless,
            "backends": [{"name": b.end.name, "ip": b.end.ip, "port": b.port} for b in self.backends],
        }


def _service(analysis: Analysis, spec: PeerSpec) -> Service | None:
    """The Service a destination names: ``svc:NS/NAME``, or an IP that is a Service's ClusterIP."""
    services = analysis.cluster.services
    if spec.kind is PeerKind.SERVICE:
        found = next((s for s in services if s.namespace == spec.namespace and s.name == spec.name), None)
        if found is None:
            known = ", ".join(sorted(f"{s.namespace}/{s.name}" for s in services)) or "none"
            raise PeerError(f"no Service {spec.namespace}/{spec.name} in the manifests (Services: {known})")
        return found
    if spec.kind is PeerKind.IP:
        # here: the agent's modules cost start-up (issue 15)
        from cilia.agent.services import SERVICE_RANGE, SERVICE_RANGE6

        addr = ipaddress.ip_address(spec.ip)
        found = next((s for s in services if s.cluster_ip and s.cluster_ip == spec.ip), None) or next(
            (s for s in services if any(ipaddress.ip_address(a) == addr for a in s.addresses)), None)
        lab_range = next((r for r in (SERVICE_RANGE, SERVICE_RANGE6) if addr in r), None)
        if found is None and lab_range is not None:
            # a lab ClusterIP the manifests do not carry: read as an outside address it would be
            # answered as world, which no packet to it ever is
            raise PeerError(
                f"{spec.ip} is in the lab's Service range ({lab_range}) but no Service in the manifests "
                "has this clusterIP; name the Service instead: svc:NAMESPACE/NAME"
            )
        return found
    return None


def _service_port(service: Service, port: PortSpec) -> ServicePort:
    proto = proto_name(port.proto).upper()
    found = next((p for p in service.ports if p.port == port.port and p.protocol.upper() == proto), None)
    if found is None:
        have = ", ".join(f"{p.port}/{p.protocol}" for p in service.ports) or "none"
        raise PeerError(
            f"Service {service.namespace}/{service.name} has no port {port} (its ports: {have}); "
            "give the Service's port, which the datapath translates to each backend's target port"
        )
    return found


def service_target(analysis: Analysis, spec: PeerSpec, port: PortSpec) -> ServiceTarget | None:
    """The Service a destination stands for, with its backends on this port (None: not a Service)."""
    service = _service(analysis, spec)
    if service is None:
        return None
    sport = _service_port(service, port)
    headless = service.cluster_ip == "None"
    # the family of the address the flow goes to: a ClusterIP's own, else the Service's primary one
    v6 = ":" in spec.ip if spec.kind is PeerKind.IP else service.families[0] == "IPv6"
    front = spec.ip if spec.kind is PeerKind.IP else next(
        (a for a in service.addresses if (":" in a) == v6), service.cluster_ip or "")
    target = sport.target_port if sport.target_port not in (None, "", 0) else sport.port
    backends: list[Backend] = []
    if service.selector:
        wanted = dict(service.selector)
        # a hostNetwork pod is a backend too: its node (Cilium's backend address is the node's)
        for pod in [*(ep.pod for ep in analysis.endpoints), *analysis.host_network_pods]:
            labels = pod.label_map
            if pod.namespace != service.namespace or any(labels.get(k) != v for k, v in wanted.items()):
                continue
            if headless:
                number: int | None = port.port
            elif isinstance(target, int) or str(target).isdigit():
                number = int(target)
            else:  # a named port: this pod's container port of that name and protocol
                number = next(
                    (p.container_port for p in pod.ports
                     if p.name == target and p.protocol.upper() == sport.protocol.upper()),
                    None,
                )
            if number is not None:
                end = analysis.resolve(f"{pod.namespace}/{pod.name}")[0]
                if v6 and end.ip and ":" not in end.ip:  # the pod's IPv6 address
                    six = next((a for a in pod.addresses if ":" in a), None) or ipv6_of(end.ip)
                    end = replace(end, ip=six)
                backends.append(Backend(end, number))
    else:
        for eps in analysis.cluster.endpoints:
            if eps.namespace != service.namespace or eps.service != service.name:
                continue
            if headless:
                number = port.port
            else:
                ports = [p for p in eps.ports if p.protocol.upper() == sport.protocol.upper()]
                match = next((p for p in ports if (p.name or "") == (sport.name or "")), None)
                if match is None and len(ports) == 1 and len(service.ports) == 1:
                    match = ports[0]
                number = match.port if match is not None and match.port else None
            if number is None:
                continue
            for ip in eps.addresses:
                if (":" in ip) == v6:  # the EndpointSlice addresses of the ClusterIP's family
                    backends.append(Backend(analysis.resolve(ip)[0], number))
    return ServiceTarget(
        namespace=service.namespace,
        name=service.name,
        cluster_ip=front,
        port=sport.port,
        proto=int(port.proto),
        target=str(port.port if headless else target),
        backends=tuple(dict.fromkeys(backends)),
    )
