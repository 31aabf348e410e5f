"""``cilia trace`` as users ask it: peers by kubectl names or labels (:mod:`cilia.analyze.peer_names`),
named ports resolved on the destination pod's container ports, and no ``--port`` at all — then one
verdict per port class the policies distinguish, or per port of a Service destination
(:mod:`cilia.analyze.every_port`).

Each flow is decided by :func:`cilia.analyze.trace.trace_flow`, so every form gives the same verdicts
and rules as ``cilia trace --from NS/POD --to NS/POD --port N/PROTO``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cilia.analyze.cluster import Analysis
from cilia.analyze.flow import FlowEnd
from cilia.analyze.peer_names import (
    LabelQuery,
    PortQuery,
    canonical_peer,
    resolve_labels,
    resolve_peer,
)
from cilia.analyze.peers import PeerError, PeerKind, PortSpec, parse_peer, parse_proto
from cilia.analyze.trace import TraceResult, trace_flow
from cilia.k8s.frozen import frozen
from cilia.k8s.objects import Service

if TYPE_CHECKING:  # L7 requests come from the caller
    from cilia.policy.l7 import L7Request


@frozen
class Ends:
    """A resolved side of a trace question: its flow ends and how it was named."""

    text: str
    ends: tuple[FlowEnd, ...]
    service: Service | None = None  # a Service destination (its backends are found per port)
    peer: str = ""  # the PEER argument it was given as (for Service translation)


def side_of(
    analysis: Analysis, peer: str | None, labels: LabelQuery | None, namespace: str | None, what: str
) -> Ends:
    """``--from``/``--to`` (PEER, kubectl name) or ``--from-labels``/``--to-labels``: one of them."""
    if (peer is None) == (labels is None):
        raise PeerError(f"give one of --{what} PEER and --{what}-labels LABELS")
    if labels is not None:
        ends = tuple(resolve_labels(analysis, labels))
        new = " (none in the manifests: a new pod with these labels)" if not ends[0].pod else ""
        return Ends(labels.describe() + new, ends)
    assert peer is not None
    canonical = canonical_peer(peer, namespace)
    if what == "to" and not canonical.startswith(("statefulset:", "daemonset:")):
        spec = parse_peer(canonical)
        if spec.kind in (PeerKind.SERVICE, PeerKind.IP):  # a Service, by name or ClusterIP
            # here: most questions name no Service (start-up, issue 15)
            from cilia.analyze.services import _service as find_service

            service = find_service(analysis, spec)
            if service is not None:
                return Ends(peer, (), service, canonical)
    return Ends(peer, tuple(resolve_peer(analysis, peer, namespace)), peer=canonical)


def _named_port(analysis: Analysis, end: FlowEnd, query: PortQuery) -> PortSpec:
    """The number of a named port on a destination pod, as its containerPorts give it."""
    if not end.local:
        raise PeerError(
            f"--port {query.text}: a port name is looked up on the destination pod's containerPorts; "
            f"{end.name} is not a pod, give a number"
        )
    ep = next((e for e in analysis.endpoints if e.name == end.name), None)
    if ep is None:
        raise PeerError(f"--port {query.text}: {end.name} has no container ports; give a number")
    for cp in ep.pod.ports:
        proto = parse_proto(cp.protocol)
        if (cp.name or "").lower() == query.name and (query.proto is None or proto == query.proto):
            return PortSpec(proto, cp.container_port)
    have = ", ".join(f"{cp.name}={cp.container_port}/{cp.protocol}" for cp in ep.pod.ports if cp.name)
    raise PeerError(
        f"--port {query.text}: pod {end.name} has no container port named {query.name!r}"
        + (f" (named ports: {have})" if have else " (it has no named ports)")
    )


def _service_port(service: Service, query: PortQuery) -> PortSpec:
    """A Service's port given by number or by its port name."""
    if query.spec is not None:
        return query.spec
    for sp in service.ports:
        proto = parse_proto(sp.protocol)
        if (sp.name or "").lower() == query.name and (query.proto is None or proto == query.proto):
            return PortSpec(proto, sp.port)
    names = ", ".join(f"{sp.name}={sp.port}" for sp in service.ports if sp.name) or "none"
    raise PeerError(
        f"--port {query.text}: Service {service.namespace}/{service.name} has no port of that name "
        f"(named ports: {names})"
    )


def trace_between(
    analysis: Analysis, src: Ends, dst: Ends, port: PortQuery, request: L7Request | None = None
) -> TraceResult:
    """Every flow from ``src``'s ends to ``dst``'s on ``port`` (a Service: each backend on its
    target port; a port name: each destination pod's own number for it)."""
    if dst.service is not None:
        from cilia.analyze.services import service_target

        sport = _service_port(dst.service, port)
        target = service_target(analysis, parse_peer(dst.peer), sport)
        assert target is not None  # dst.service was found by the same name
        return TraceResult(
            tuple(
                trace_flow(analysis, s, b.end, PortSpec(sport.proto, b.port), request)
                for s in src.ends
                for b in target.backends
            ),
            target,
        )
    specs = [port.spec if port.spec is not None else _named_port(analysis, d, port) for d in dst.ends]
    pairs = [(s, d, p) for s in src.ends for d, p in zip(dst.ends, specs, strict=True)]
    return TraceResult(tuple(trace_flow(analysis, s, d, p, request) for s, d, p in pairs))
