"""``cilia trace``: the verdict of a flow on each side and what decided it.

A packet must pass the source's egress policy and the destination's ingress policy (§4.3); each side
is the datapath lookup (§5.5) in that endpoint's MapState. For a drop the deciding rule is the deny
entry's rule (reason 181) or, for default deny (133), the policies that enforce default deny there.
toFQDNs rules decide on addresses a node learned from DNS answers (:mod:`cilia.analyze.learned`); a
default-deny drop towards an address they did not apply to says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cilia.analyze.cluster import Analysis
from cilia.analyze.flow import EndKind, FlowEnd, FlowTrace, SideState, SideVerdict
from cilia.analyze.peers import PortSpec, parse_peer, proto_name
from cilia.k8s.frozen import frozen
from cilia.policy.l7parser import L7Parser
from cilia.policy.types import Direction, DropReason, Entry, Key, RuleRef

if TYPE_CHECKING:  # imported where used: a trace without a Service or L7 rules needs neither module
    from cilia.analyze.l7verdict import L7Verdict
    from cilia.analyze.services import ServiceTarget
    from cilia.policy.l7 import L7Decision, L7PortPolicy, L7Request

REPLY_NOTE = (
    "replies of an allowed connection are not policy-checked (conntrack), so no reverse allow is "
    "needed; a new connection the other way is a different flow"
)
SYNTHETIC_NOTES = {
    "allow-localhost-ingress": "allow-localhost: the node may always reach its own pods",
    "allow-any-ingress": "no policy enforces ingress here, so all ingress is allowed",
    "allow-any-egress": "no policy enforces egress here, so all egress is allowed",
    "default-allow-ingress": (
        "ingress is enforced, but every policy selecting this pod sets enableDefaultDeny ingress: "
        "false, so what no deny covers is allowed"
    ),
    "default-allow-egress": (
        "egress is enforced, but every policy selecting this pod sets enableDefaultDeny egress: "
        "false, so what no deny covers is allowed"
    ),
}


def _names(refs: Sequence[RuleRef]) -> str:
    return "; ".join(r.describe() for r in refs)


def _synthetic(refs: Sequence[RuleRef]) -> str:
    for ref in refs:
        if ref.name in SYNTHETIC_NOTES:
            return SYNTHETIC_NOTES[ref.name]
    return ""


def port_policy(
    analysis: Analysis, identity: int, direction: Direction, port: PortSpec, node: str = ""
) -> L7PortPolicy | None:
    """The L7 policy of ``identity`` on ``port`` in ``direction``, if its proxy has one (``node``: as
    that node has it, for a host's)."""
    oracle = analysis.oracle_on(node) if node else analysis.oracle
    for p in oracle.endpoint_policy(identity).l7:
        if p.direction == direction and p.covers(port.proto, port.port):
            return p
    return None


def _request_text(
    parser: L7Parser, method: str, path: str, host: str, headers: dict[str, str], sni: str
) -> str:
    if parser is L7Parser.TLS:
        return f"TLS SNI {sni!r}" if sni else "TLS without SNI"
    if parser is L7Parser.DNS:
        return f"DNS query {sni!r}"
    extra = "".join(f" {k}: {v}" for k, v in sorted(headers.items()))
    return f"{method} {path} host {host!r}" + (f" headers{extra}" if extra else "")


def l7_verdict(
    analysis: Analysis,
    owner: FlowEnd,
    peer: FlowEnd,
    direction: Direction,
    port: PortSpec,
    entry: Entry | None,
    request: L7Request | None,
) -> L7Verdict | None:
    """What the proxy does when the deciding entry redirects (None: no redirect). A request is
    decided as the proxy would; without one, the result names the L7 rules that apply."""
    if entry is None or entry.deny or not entry.proxy_port:
        return None
    from cilia.analyze.l7verdict import L7Verdict  # here: only a redirecting entry has one (start-up)

    pp = port_policy(analysis, owner.identity, direction, port, owner.node)
    peer_id = analysis.identity_seen_by(peer, owner)
    if pp is None:  # a redirect without rules for the port: the proxy refuses (fail closed)
        decided = request is not None
        return L7Verdict("http", entry.proxy_port, decided, not decided, reason="no L7 policy")
    applying = [r for r in pp.rules if r.applies_to(peer_id)]
    constraining = tuple(
        sorted({ref for r in applying if r.http or r.server_names or r.dns for ref in r.refs})
    )
    parser = pp.parser
    decision: L7Decision | None = None
    text = ""
    if request is not None and parser is L7Parser.HTTP and request.is_http:
        method, path, host = request.method or "GET", request.path or "/", request.host
        headers = dict(request.headers)
        decision = pp.decide_http(peer_id, method, path, host, headers)
        text = _request_text(parser, method, path, host, headers, "")
    elif request is not None and parser is L7Parser.TLS and request.sni is not None:
        decision = pp.decide_sni(peer_id, request.sni)
        text = _request_text(parser, "", "", "", {}, request.sni)
    elif request is not None and parser is L7Parser.DNS and request.dns:
        decision = pp.decide_dns(peer_id, request.dns)
        text = _request_text(parser, "", "", "", {}, request.dns)
    if decision is None:
        return L7Verdict(str(parser), pp.proxy_port, False, True, rules=constraining)
    rules = decision.by if decision.allowed else decision.refused_by
    actions = tuple(
        f"{a.action} {a.name}" + (f": {a.value}" if a.value is not None else "") for a in decision.actions
    )
    return L7Verdict(
        str(parser),
        pp.proxy_port,
        True,
        decision.allowed,
        text,
        tuple(sorted(rules)),
        decision.rule.describe() if decision.rule is not None else "",
        actions,
        decision.reason,
    )


def side_verdict(
    analysis: Analysis,
    owner: FlowEnd,
    peer: FlowEnd,
    direction: Direction,
    port: PortSpec,
    request: L7Request | None = None,
) -> SideVerdict:
    """The verdict of ``owner``'s policy in ``direction`` for traffic with ``peer`` (and, when the
    deciding entry redirects to a proxy, the proxy's verdict on ``request``)."""
    where = direction.label
    if not owner.has_policy or (owner.kind is EndKind.NODE and not analysis.host_firewall):
        why = f"({owner.kind})"
        if owner.has_policy:
            why = "(host firewall off: no host policy, CCNP nodeSelector, in the manifests)"
        return SideVerdict(
            direction,
            owner.name,
            SideState.NO_POLICY,
            True,
            note=f"{owner.name} has no {where} policy of its own {why}: this side never drops",
        )
    side = analysis.side_of(owner, direction)
    peer_id = analysis.identity_seen_by(peer, owner)
    verdict = side.lookup(peer_id, port.proto, port.port)
    state = SideState.ENFORCED if side.enforced else SideState.UNENFORCED
    rules = tuple(sorted(verdict.entry.rules)) if verdict.entry is not None else ()
    if not side.enforced and owner.kind is EndKind.NODE:
        note = f"{where} is not enforced for {owner.name}: no host policy (nodeSelector) selects it "
        note += f"for {where}"
    elif not side.enforced:
        note = f"{where} is not enforced for {owner.name}: no policy selects it for {where}"
        if verdict.allowed and analysis.options.enforcement_mode == "never":
            note = "enforcement mode never: nothing is enforced"
    elif verdict.allowed:
        note = _synthetic(rules) or f"allowed by {_names(rules)}"
    elif verdict.reason == DropReason.POLICY_DENY:
        note = f"denied by {_names(rules)} (a deny always wins over allows)"
    elif verdict.reason == DropReason.AUTH_REQUIRED:
        note = f"allowed by {_names(rules)} only after mutual authentication, which this node does not do"
    else:
        by = _names(side.default_deny_by) or "the enforcement mode (always)"
        note = f"default deny: no allow rule matches; default deny is on because of {by}"
    if peer.kind is EndKind.NODE and peer_id != 1 and side.enforced:  # a node is remote but on itself
        note += f" ({peer.name} is identity {peer_id} here: a remote node)"
    l7 = None
    if verdict.allowed:
        l7 = l7_verdict(analysis, owner, peer, direction, port, verdict.entry, request)
    return SideVerdict(
        direction,
        owner.name,
        state,
        verdict.allowed and (l7 is None or l7.allowed),
        DropReason.NONE if verdict.allowed else verdict.reason,
        verdict.match_type,
        verdict.key,
        rules,
        tuple(side.default_deny_by) if side.enforced else (),
        note,
        l7,
    )


def fqdn_note(analysis: Analysis, dst: FlowEnd, egress: SideVerdict) -> str:
    """Why toFQDNs rules did not decide a default-deny drop towards an outside address ("" when
    they did, or no policy has any): never left for the user to guess."""
    if (
        not analysis.fqdn_selectors
        or dst.kind is not EndKind.EXTERNAL
        or egress.allowed
        or egress.reason != DropReason.POLICY_DENIED
        or (dst.learned is not None and dst.learned.selectors)
    ):
        return ""
    if dst.learned is not None:
        why = f"the node knows it only as {', '.join(dst.learned.names)}, which no toFQDNs selector matches"
    else:
        where = analysis.dns.where() if analysis.dns is not None else "no node state given"
        why = f"no node learned it from a DNS answer ({where})"
    return (
        f"toFQDNs rules ({', '.join(analysis.fqdn_selectors)}) were not applied to {dst.name}: {why}; "
        "on a node, a pod's lookup of a selected name through the DNS proxy gives its addresses fqdn "
        "identities (then trace --to fqdn:NAME)"
    )


def _covers(pp: Any, port: PortSpec) -> bool:
    """Does a toPorts entry name ``port``? A named port may stand for it (counted as covering)."""
    proto = str(pp.protocol or "ANY").upper()
    if proto not in ("ANY", proto_name(port.proto).upper()):
        return False
    if pp.port is None or str(pp.port) == "0":
        return True
    if not str(pp.port).isdigit():
        return True
    first = int(pp.port)
    return first <= port.port <= (pp.end_port or first)


def l7_note(analysis: Analysis, side: SideVerdict, port: PortSpec) -> str:
    """Which allowing rules carry Kafka/l7proto rules on this port: cilia has no proxy for them and
    enforces them at L4 only (``apply --allow-l4-only-l7``), so the verdict is "the port is open to
    this peer", not "every request is". (HTTP rules and serverNames are enforced by the proxy.)"""
    if not side.allowed or not side.rules:
        return ""
    refs = set(side.rules)
    found: dict[str, set[str]] = {}
    for rule in analysis.rules:
        for entry in rule.entries:
            if entry.ref not in refs:
                continue
            for pr in entry.l7:
                l7 = pr.rules
                kinds = {"kafka"} if l7 is not None and l7.kafka else set()
                kinds |= {"l7proto"} if l7 is not None and l7.l7proto else set()
                kinds |= {"listener"} if pr.listener is not None else set()
                if kinds and any(_covers(pp, port) for pp in pr.ports or ()):
                    found.setdefault(entry.ref.describe(), set()).update(kinds)
    if not found:
        return ""
    which = "; ".join(f"{ref} ({', '.join(sorted(k))})" for ref, k in sorted(found.items()))
    return (
        f"{side.direction.label} is allowed by rules whose L7 parts cilia has no proxy for and enforces "
        f"at L4 only: {which}; Cilium would pass each request through its proxy (apply --allow-l4-only-l7)"
    )


def trace_flow(
    analysis: Analysis, src: FlowEnd, dst: FlowEnd, port: PortSpec, request: L7Request | None = None
) -> FlowTrace:
    """Both sides of one flow ``src → dst`` on ``port`` (and the proxies' verdicts on ``request``)."""
    egress = side_verdict(analysis, src, dst, Direction.EGRESS, port, request)
    ingress = side_verdict(analysis, dst, src, Direction.INGRESS, port, request)
    notes = [fqdn_note(analysis, dst, egress),
             l7_note(analysis, egress, port), l7_note(analysis, ingress, port)]
    return FlowTrace(src, dst, port.proto, port.port, egress, ingress, tuple(n for n in notes if n))


@frozen
class TraceResult:
    """Every flow a trace question stands for (a Deployment peer means each of its pods; a Service
    each backend, ``service`` saying which Service port they stand for)."""

    flows: tuple[FlowTrace, ...]
    service: ServiceTarget | None = None

    @property
    def allowed(self) -> bool:
        if self.service is not None and not self.flows:
            return False  # no backend: the datapath drops (Service backend not found)
        return all(f.allowed for f in self.flows)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"allowed": self.allowed}
        if self.service is not None:
            out["service"] = self.service.to_dict()
        out["flows"] = [f.to_dict() for f in self.flows]
        out["reply"] = REPLY_NOTE
        return out


def trace(
    analysis: Analysis, src: str, dst: str, port: PortSpec, request: L7Request | None = None
) -> TraceResult:
    """Trace every (source, destination) pair the PEER arguments stand for (a Deployment: each
    pod; ``fqdn:NAME``: each address the node learned for the name). With ``request`` the L7
    proxies on the way decide it too."""
    from cilia.analyze.services import service_target  # here: most questions name no Service (start-up)

    sources = analysis.resolve(src)
    target = service_target(analysis, parse_peer(dst), port)
    if target is not None:  # translated to each backend first, as the datapath does
        return TraceResult(
            tuple(
                trace_flow(analysis, s, b.end, PortSpec(port.proto, b.port), request)
                for s in sources
                for b in target.backends
            ),
            target,
        )
    dests = analysis.resolve(dst)
    return TraceResult(tuple(trace_flow(analysis, s, d, port, request) for s in sources for d in dests))


# --------------------------------------------------------------------------- text


L7_REFUSAL = {"http": "HTTP 403 Access denied", "tls": "TLS connection closed", "dns": "DNS REFUSED"}


def _verdict_word(side: SideVerdict) -> str:
    if side.refused_at_l7 and side.l7 is not None:
        return f"DENIED at L7 ({L7_REFUSAL.get(side.l7.parser, 'refused')})"
    if side.allowed:
        return "ALLOWED"
    return f"DENIED ({int(side.reason)} {side.reason.description})"


def render_l7(l7: L7Verdict) -> list[str]:
    """The proxy's part of a side, in trace text."""
    head = f"          L7: {l7.parser} proxy (port {l7.proxy_port})"
    names = _names(l7.rules)
    if not l7.decided:
        if not names:
            return [f"{head}: no L7 rule restricts this peer; the proxy allows every request"]
        return [
            f"{head}: L7 rules apply: {names}; decided at L4 only "
            "(give a request: --http-*/--tls-sni, or http:/tls: in verify)"
        ]
    if l7.allowed:
        lines = [f"{head}: {l7.request}: ALLOWED, {l7.reason}" + (f" ({names})" if names else "")]
        lines += [f"          header action: {a}" for a in l7.actions]
        return lines
    return [f"{head}: {l7.request}: REFUSED, {l7.reason}" + (f"; L7 rules of {names}" if names else "")]


def render_side(side: SideVerdict) -> list[str]:
    head = f"  {side.direction.label:<7} {side.owner}: {_verdict_word(side)}"
    lines = [head, f"          {side.note}"]
    if side.key is not None:
        lines.append(f"          entry: {describe_key(side.key)} (match {side.match_type.hubble_name})")
    if side.l7 is not None:
        lines.extend(render_l7(side.l7))
    return lines


def describe_key(k: Key) -> str:
    """``identity 258, TCP 80`` / ``any identity, any protocol``."""
    peer = "any identity" if k.identity == 0 else f"identity {k.identity}"
    if k.proto == 0:
        return f"{peer}, any protocol"
    lo, hi = k.port_range
    if (lo, hi) == (0, 0xFFFF):
        ports = "any port"
    else:
        ports = str(lo) if lo == hi else f"{lo}-{hi}"
    return f"{peer}, {proto_name(k.proto)} {ports}"


def render_learned(end: FlowEnd) -> list[str]:
    """How an outside address got its identity from DNS answers a node saw (nothing otherwise)."""
    if end.learned is None:
        return []
    names = ", ".join(end.learned.names)
    if end.learned.selectors:
        how = f"fqdn identity for toFQDNs {', '.join(end.learned.selectors)}"
    else:
        how = "no toFQDNs selector matches these names, so it is a plain outside address"
    return [f"  {end.name}: learned from DNS answers for {names}; {how}"]


def render_flow(flow: FlowTrace) -> list[str]:
    port = f"{flow.port}/{proto_name(flow.proto)}"
    lines = [
        f"flow {flow.src.name} (identity {flow.src.identity}) -> {flow.dst.name} (identity "
        f"{flow.dst.identity}) {port}",
        *render_learned(flow.src),
        *render_learned(flow.dst),
        *render_side(flow.egress),
        *render_side(flow.ingress),
        *(f"  note: {n}" for n in flow.notes),
    ]
    decided = flow.decided_by
    if decided is None:
        lines.append("  verdict: ALLOWED")
    elif decided.refused_at_l7:
        lines.append(f"  verdict: DENIED at {decided.direction.label} of {decided.owner} by its L7 proxy")
    else:
        lines.append(f"  verdict: DENIED at {decided.direction.label} of {decided.owner}")
    if flow.policy_log:
        lines.append(f"  policy log: {', '.join(flow.policy_log)}")
    return lines


def render_flows(flows: Sequence[FlowTrace]) -> list[str]:
    """Flows as trace text; pod pairs with the same identities as an earlier pair (same verdicts,
    same rules) are listed under it instead of repeated."""
    lines: list[str] = []
    groups: dict[tuple[int, int, int], list[FlowTrace]] = {}
    for flow in flows:  # (Service backends may differ in port: a named target port)
        groups.setdefault((flow.src.identity, flow.dst.identity, flow.port), []).append(flow)
    for same in groups.values():
        if lines:
            lines.append("")
        lines.extend(render_flow(same[0]))
        if len(same) > 1:
            lines.append(f"  same identities, same verdict: {len(same) - 1} more pod pair(s):")
            lines.extend(f"    {f.src.name} -> {f.dst.name}" for f in same[1:])
    return lines


def render_service(result: TraceResult) -> tuple[list[str], list[str]]:
    """The lines before and after the flows of a Service destination."""
    svc = result.service
    if svc is None:
        return [], []
    if svc.headless:
        how = "headless: no translation, its pods are reached directly"
    else:
        how = f"translated to target port {svc.target} of each backend before policy, as the datapath does"
    head = [f"{svc.describe()}: {len(svc.backends)} backend(s); {how}"]
    head += [f"  backend {b.end.name} " + (f"{b.end.ip}:{b.port}" if b.end.ip else f"port {b.port}")
             for b in svc.backends]
    if not svc.backends:
        from cilia.analyze.services import NO_BACKEND

        return head, ["", f"verdict: DENIED: no backend ({NO_BACKEND})"]
    denied = sum(1 for f in result.flows if not f.allowed)
    if not denied:
        return [*head, ""], ["", f"verdict: ALLOWED to every backend ({len(result.flows)} flow(s))"]
    return [*head, ""], ["", f"verdict: DENIED for {denied} of {len(result.flows)} flow(s) to the backends"]


def render_text(result: TraceResult) -> str:
    head, tail = render_service(result)
    lines = head + render_flows(result.flows) + tail
    lines += ["", f"reply traffic: {REPLY_NOTE}"]
    return "\n".join(lines) + "\n"
