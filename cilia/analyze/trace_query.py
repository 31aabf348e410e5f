"""``cilia trace`` as users ask it: peers by kubectl names or labels (:mod:`cilia.analyze.peer_names`),
named ports resolved on the destination pod's container ports, and no ``--port`` at all — then one
verdict per port class the policies distinguish (:mod:`cilia.analyze.portclasses`, the classes
``cilia connectivity`` computes), or per port of a Service destination.

Each flow is decided by :func:`cilia.analyze.trace.trace_flow`, so every form gives the same verdicts
and rules as ``cilia trace --from NS/POD --to NS/POD --port N/PROTO``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cilia.analyze.cluster import Analysis
from cilia.analyze.flow import FlowEnd, FlowTrace
from cilia.analyze.peer_names import (
    LabelQuery,
    PortQuery,
    canonical_peer,
    resolve_labels,
    resolve_peer,
)
from cilia.analyze.peers import PeerError, PeerKind, PortSpec, parse_peer, parse_proto
from cilia.analyze.services import _service as find_service  # (svc:NS/NAME or a ClusterIP)
from cilia.analyze.services import service_target
from cilia.analyze.trace import REPLY_NOTE, TraceResult, trace_flow
from cilia.k8s.objects import Service
from cilia.policy.types import Proto

if TYPE_CHECKING:  # port classes come from connectivity (every_port), L7 requests from the caller
    from cilia.analyze.portclasses import PortClass
    from cilia.policy.l7 import L7Request


@dataclass(frozen=True)
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


# --------------------------------------------------------------------------- without --port


@dataclass(frozen=True)
class PortVerdict:
    """The verdict of a question on one port class (or one port of a Service)."""

    label: str
    port: PortSpec
    result: TraceResult

    def first_deciding(self) -> FlowTrace | None:
        """The flow whose deciding rule is shown: the first denied one, else the first."""
        flows = self.result.flows
        return next((f for f in flows if not f.allowed), flows[0] if flows else None)

    def to_dict(self) -> dict[str, Any]:
        from cilia.analyze.deciding import decided_by  # the every-port answers name the deciding rule

        flow = self.first_deciding()
        return {
            "port_class": self.label,
            "port": str(self.port),
            "allowed": self.result.allowed,
            "flows_allowed": sum(1 for f in self.result.flows if f.allowed),
            "flows": len(self.result.flows),
            "decided_by": decided_by(flow) if flow is not None else None,
            "trace": self.result.to_dict(),
        }


@dataclass(frozen=True)
class EveryPort:
    """A question without ``--port``: one verdict per port class (or Service port)."""

    src: str
    dst: str
    verdicts: tuple[PortVerdict, ...]
    of_service: bool = False

    @property
    def allowed(self) -> bool:
        return all(v.result.allowed for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "from": self.src,
            "to": self.dst,
            "port": None,
            "per": "service-port" if self.of_service else "port-class",
            "port_classes": [v.to_dict() for v in self.verdicts],
            "reply": REPLY_NOTE,
        }


def every_port(
    analysis: Analysis,
    src: Ends,
    dst: Ends,
    request: L7Request | None = None,
    classes: Sequence[PortClass] | None = None,
) -> EveryPort:
    """The question on each port class the policies distinguish (tried on the class's representative
    port; every port of a class has the same verdict), or on each port of a Service."""
    if dst.service is not None:
        verdicts = []
        for sp in dst.service.ports:
            spec = PortSpec(parse_proto(sp.protocol), sp.port)
            result = trace_between(analysis, src, dst, PortQuery(str(spec), spec), request)
            verdicts.append(PortVerdict(f"{spec} ({sp.name})" if sp.name else str(spec), spec, result))
        return EveryPort(src.text, dst.text, tuple(verdicts), of_service=True)
    if classes is None:
        from cilia.analyze.connectivity import classes_of  # here: the matrix's numpy costs start-up

        classes = classes_of(analysis)
    out = []
    for cls in classes:
        spec = PortSpec(Proto(cls.proto), cls.port)
        result = trace_between(analysis, src, dst, PortQuery(str(spec), spec), request)
        out.append(PortVerdict(cls.label, spec, result))
    return EveryPort(src.text, dst.text, tuple(out))


def _verdict_word(v: PortVerdict) -> str:
    flows = v.result.flows
    if v.result.allowed:
        return "ALLOWED" + (f" ({len(flows)} flows)" if len(flows) > 1 else "")
    if not flows:
        return "DENIED (no backend)"
    denied = sum(1 for f in flows if not f.allowed)
    return "DENIED" + (f" ({denied} of {len(flows)} flows)" if len(flows) > 1 else "")


def render_every_port(answer: EveryPort) -> str:
    """The verdict of each port class and the rule that decided it; classes with the same verdict
    and deciding rule share one block (the policies of a real repository cut dozens of classes)."""
    import textwrap  # here: only this rendering wraps (start-up, issue 15)

    from cilia.analyze.deciding import decided_by

    what = "port of the Service" if answer.of_service else "port class the policies distinguish"
    lines = [f"{answer.src} -> {answer.dst}: every {what} ({len(answer.verdicts)})", ""]
    blocks: dict[tuple[str, str], list[PortVerdict]] = {}
    for v in answer.verdicts:
        flow = v.first_deciding()
        why = decided_by(flow)["text"] if flow is not None else ""
        blocks.setdefault((_verdict_word(v), why), []).append(v)
    for (word, why), same in blocks.items():
        v = same[0]
        tried = "" if len(same) > 1 or v.label.startswith(str(v.port)) else f" (tried {v.port})"
        text = ", ".join(x.label for x in same) + f"{tried}: {word}"
        lines += textwrap.wrap(text, width=100, subsequent_indent="    ", break_on_hyphens=False)
        if why:
            lines.append(f"  {why}")
    lines += [
        "",
        "trace --port PORT shows one port in full (each side's entry and notes).",
        f"reply traffic: {REPLY_NOTE}",
    ]
    return "\n".join(lines) + "\n"
