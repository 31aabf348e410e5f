"""``cilia verify``: expectations that fail the build.

An expectations file is YAML (``apiVersion: cilia.io/v1alpha1`` and ``kind: Expectations`` optional)::

    expectations:
    - {from: default/app-a, to: deployment:default/app-b, port: 80, protocol: TCP, expect: deny}

``from``/``to`` are PEER arguments (:mod:`cilia.analyze.peers`; ``fqdn:NAME`` stands for the
addresses a node learned for NAME, so the analysis needs that node's DNS cache); ``protocol`` is
TCP (default), UDP, SCTP, ICMP or ICMPv6 (for ICMP ``port`` is the ICMP type); ``expect`` is
``allow`` or ``deny``. An expectation about a Deployment (or a name with several addresses) holds
only if it holds for every pod (address) of it. Without ``port`` it is about every port class the
policies distinguish (as ``cilia trace`` without ``--port``; to a Service: each of its ports), and
holds only if it holds on each.

An expectation may carry a request for the L7 proxies on the way: ``http: {method, path, host,
headers: {NAME: VALUE}}`` (method defaults to GET, path to /), ``tls: {sni: NAME}`` or ``dns: {name:
NAME}`` (a query through the DNS proxy); a request a proxy refuses (HTTP 403, TLS server name not
allowed, DNS REFUSED) is ``deny``::

    - {from: default/app-a, to: deployment:default/app-b, port: 80,
       http: {method: POST, path: /x}, expect: deny}
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cilia.analyze.cluster import Analysis
from cilia.analyze.connectivity import FlowVerdicts, classes_of
from cilia.analyze.flow import EndKind
from cilia.analyze.peers import PeerError, PeerKind, PortSpec, parse_peer, parse_port, parse_proto
from cilia.analyze.portclasses import PortClass
from cilia.analyze.services import _service as find_service  # (svc:NS/NAME or a ClusterIP)
from cilia.analyze.trace import TraceResult, render_flows, trace
from cilia.k8s.errors import Error
from cilia.k8s.loader import parse_text, read_text
from cilia.k8s.source import format_path
from cilia.policy.l7 import L7Request
from cilia.policy.types import Proto


class HTTPRequest(BaseModel):
    """An HTTP request for the proxies: ``method`` (default GET), ``path`` (default /, query
    included), ``host`` (the Host header), ``headers``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str | None = None
    path: str | None = None
    host: str | None = None
    headers: dict[str, str] | None = None


class DNSRequest(BaseModel):
    """A DNS query through the DNS proxy: the name asked for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str


class TLSRequest(BaseModel):
    """A TLS connection's ClientHello: the server name (SNI) it asks for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sni: str


class Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    from_: str = Field(alias="from")
    to: str
    port: int | None = None  # None: every port class (every port of a Service)
    protocol: str = "TCP"
    http: HTTPRequest | None = None
    tls: TLSRequest | None = None
    dns: DNSRequest | None = None
    expect: Literal["allow", "deny"]
    description: str | None = None

    @property
    def request(self) -> L7Request | None:
        """The request the L7 proxies decide (None: the flow is decided at L4)."""
        if self.http is None and self.tls is None and self.dns is None:
            return None
        h = self.http or HTTPRequest()
        return L7Request(
            h.method or ("GET" if self.http is not None else ""),
            h.path or ("/" if self.http is not None else ""),
            h.host or "",
            dict(h.headers or {}),
            self.tls.sni if self.tls is not None else None,
            self.dns.name if self.dns is not None else None,
        )

    def request_text(self) -> str:
        parts = []
        if self.http is not None:
            r = self.request
            assert r is not None
            parts.append(f"http {r.method} {r.path}" + (f" host {r.host}" if r.host else ""))
            parts.extend(f"{k}: {v}" for k, v in sorted(r.headers.items()))
        if self.tls is not None:
            parts.append(f"tls sni {self.tls.sni}")
        if self.dns is not None:
            parts.append(f"dns {self.dns.name}")
        return " ".join(parts)


class ExpectationsFile(BaseModel):
    """The file. ``apiVersion``/``kind`` are optional; with them (``cilia.io/v1alpha1``,
    ``Expectations``) the file can sit next to manifests: loaders list it as an ignored kind."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["cilia.io/v1alpha1"] | None = Field(default=None, alias="apiVersion")
    kind: Literal["Expectations"] | None = None
    expectations: list[Expectation]


@dataclass(frozen=True)
class PlacedExpectation:
    """An expectation and where it is written."""

    expectation: Expectation
    file: str
    line: int
    index: int

    @property
    def port_spec(self) -> PortSpec | None:
        """The port asked about (None: every port class)."""
        if self.expectation.port is None:
            return None
        return parse_port(str(self.expectation.port), self.expectation.protocol)

    def describe(self) -> str:
        e = self.expectation
        request = f" {e.request_text()}" if e.request is not None else ""
        port = self.port_spec or "every port"
        return f"{e.from_} -> {e.to} {port}{request} expect {e.expect}"


def load_expectations(path: str | Path) -> list[PlacedExpectation]:
    """Read and check an expectations file; :class:`cilia.k8s.errors.Error` with file:line on any
    problem (peers and ports are parsed here too, so a typo is caught before anything runs)."""
    file = str(path)
    text = read_text(file)
    docs, errors, _ = parse_text(text, file)
    if errors:
        raise errors[0]
    if len(docs) != 1:
        raise Error("expected one YAML document with `expectations:`", file=file)
    doc = docs[0]
    try:
        model = ExpectationsFile.model_validate(doc.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        line, col = doc.position(loc)
        raise Error(first["msg"], file=file, line=line, column=col, path=format_path(loc)) from None
    placed = []
    for i, exp in enumerate(model.expectations):
        line, col = doc.position(("expectations", i))
        try:
            parse_peer(exp.from_)
            parse_peer(exp.to)
            if exp.port is not None:
                parse_port(str(exp.port), exp.protocol)
        except PeerError as exc:
            raise Error(str(exc), file=file, line=line, column=col, path=f"expectations[{i}]") from None
        placed.append(PlacedExpectation(exp, file, line, i))
    return placed


@dataclass(frozen=True)
class VerifyResult:
    """One expectation's outcome: the expectation as placed, the verdict found and its trace."""

    placed: PlacedExpectation
    actual: str  # allow | deny | mixed
    trace: TraceResult | None  # None: passed on the fast path (a failed one is always traced)

    @property
    def passed(self) -> bool:
        return self.actual == self.placed.expectation.expect

    def to_dict(self) -> dict[str, Any]:
        e = self.placed.expectation
        out: dict[str, Any] = {
            "index": self.placed.index,
            "line": self.placed.line,
            "from": e.from_,
            "to": e.to,
            "port": e.port,
            "protocol": e.protocol,
            **({"http": e.http.model_dump(exclude_none=True)} if e.http is not None else {}),
            **({"tls": e.tls.model_dump()} if e.tls is not None else {}),
            **({"dns": e.dns.model_dump()} if e.dns is not None else {}),
            "expect": e.expect,
            "actual": self.actual,
            "passed": self.passed,
        }
        if not self.passed and self.trace is not None:
            out["trace"] = self.trace.to_dict()
        return out


@dataclass(frozen=True)
class VerifyReport:
    """Every expectation's outcome."""

    results: tuple[VerifyResult, ...]

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "results": [r.to_dict() for r in self.results]}


# From this many expectations on, L3/L4 expectations are first decided on the connectivity matrix's
# sets (no MapState per identity); only those that fail are traced, for the explanation.
FAST_PATH_MIN = 20


def _fast_actual(fast: FlowVerdicts, analysis: Analysis, placed: PlacedExpectation) -> str | None:
    e = placed.expectation
    if e.request is not None or parse_peer(e.to).kind is PeerKind.SERVICE:
        return None
    try:
        sources, dests = analysis.resolve(e.from_), analysis.resolve(e.to)
    except PeerError:
        return None  # the trace below reports it
    if any(end.kind is EndKind.NODE for end in (*sources, *dests)):
        return None  # a node's identity depends on where it is decided: traced
    port = placed.port_spec
    if port is None:
        return None  # every port class: traced
    verdicts = {fast.allowed(s, d, port.proto, port.port) for s in sources for d in dests}
    if None in verdicts or not verdicts:
        return None
    return "mixed" if len(verdicts) > 1 else ("allow" if verdicts == {True} else "deny")


def verify(analysis: Analysis, expectations: list[PlacedExpectation]) -> VerifyReport:
    """Check each expectation; peers that do not resolve raise :class:`PeerError` (bad input)."""
    results = []
    fast = FlowVerdicts(analysis) if len(expectations) >= FAST_PATH_MIN else None
    classes = functools.cache(lambda: classes_of(analysis))  # for expectations without a port, once
    for placed in expectations:
        e = placed.expectation
        actual = _fast_actual(fast, analysis, placed) if fast is not None else None
        if actual is not None and actual == e.expect:
            results.append(VerifyResult(placed, actual, None))
            continue
        try:
            result = _trace_expectation(analysis, placed, classes)
        except PeerError as exc:
            raise PeerError(f"{placed.file}:{placed.line}: {exc}") from None
        verdicts = {f.allowed for f in result.flows}
        actual = "mixed" if len(verdicts) > 1 else ("allow" if verdicts == {True} else "deny")
        results.append(VerifyResult(placed, actual, result))
    return VerifyReport(tuple(results))


def _trace_expectation(
    analysis: Analysis, placed: PlacedExpectation, classes: Callable[[], list[PortClass]]
) -> TraceResult:
    """The trace of one expectation: on its port, or on every port class (every port of a Service
    destination), the flows of all of them together."""
    e = placed.expectation
    port = placed.port_spec
    if port is not None:
        return trace(analysis, e.from_, e.to, port, e.request)
    spec = parse_peer(e.to)
    service = find_service(analysis, spec) if spec.kind in (PeerKind.SERVICE, PeerKind.IP) else None
    if service is not None:
        ports = [PortSpec(parse_proto(sp.protocol), sp.port) for sp in service.ports]
    else:
        ports = [PortSpec(Proto(c.proto), c.port) for c in classes()]
    flows = []
    for p in ports:
        flows.extend(trace(analysis, e.from_, e.to, p, e.request).flows)
    return TraceResult(tuple(flows))


def render_text(report: VerifyReport) -> str:
    lines = []
    for r in report.results:
        status = "ok  " if r.passed else "FAIL"
        lines.append(f"{status} {r.placed.file}:{r.placed.line}: {r.placed.describe()}: {r.actual}")
        if not r.passed and r.trace is not None:
            wrong = [f for f in r.trace.flows if f.allowed != (r.placed.expectation.expect == "allow")]
            lines.extend("     " + line if line else "" for line in render_flows(wrong))
    lines.append(f"{report.passed} passed, {report.failed} failed")
    return "\n".join(lines) + "\n"
