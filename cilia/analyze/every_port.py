"""``cilia trace`` without ``--port``: one verdict per port class the policies distinguish
(:mod:`cilia.analyze.portclasses`, the classes ``cilia connectivity`` computes), or per port of a
Service destination, each decided by :func:`cilia.analyze.trace_query.trace_between`.

Apart from :mod:`cilia.analyze.trace_query` so that a trace with ``--port`` does not build these
classes (start-up, issue 15).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cilia.analyze.cluster import Analysis
from cilia.analyze.flow import FlowTrace
from cilia.analyze.peer_names import PortQuery
from cilia.analyze.peers import PortSpec, parse_proto
from cilia.analyze.trace import REPLY_NOTE, TraceResult
from cilia.analyze.trace_query import Ends, trace_between
from cilia.policy.types import Proto

if TYPE_CHECKING:  # port classes come from connectivity, L7 requests from the caller
    from cilia.analyze.portclasses import PortClass
    from cilia.policy.l7 import L7Request


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
