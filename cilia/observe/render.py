"""Flow output: compact (one line per flow, the shape of ``hubble observe``), JSON lines, table.

Times are printed in UTC so that output is the same on every machine. With ``node_names`` (``cilia
observe --print-node-name``, as hubble's flag) each line names the node whose datapath or proxy saw
the flow. DNS flows of the agent's proxy print as hubble prints them: ``dns-request proxy`` /
``dns-response proxy`` with the query, answers and TTL; HTTP flows of the HTTP proxy as
``http-request`` (refused: ``HTTP/1.1 GET http://app-b/private``) / ``http-response`` (forwarded:
``HTTP/1.1 200 2ms (GET http://app-b/public)``), with the policies that decided.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from cilia.agent.views import Table
from cilia.identity.reserved import ReservedIdentity
from cilia.observe.flow import DnsInfo, Endpoint, Flow, HttpInfo, L7Type, PolicyRef, TlsInfo, Verdict, rfc3339
from cilia.policy.types import DropReason

ICMP_TYPES = {
    1: {0: "EchoReply", 3: "DestinationUnreachable", 5: "Redirect", 8: "EchoRequest", 11: "TimeExceeded"},
    58: {
        1: "DestinationUnreachable",
        2: "PacketTooBig",
        3: "TimeExceeded",
        128: "EchoRequest",
        129: "EchoReply",
    },
}
VERDICT_WORDS = {Verdict.FORWARDED: "ALLOWED", Verdict.DROPPED: "DENIED", Verdict.AUDIT: "AUDITED",
                 Verdict.REDIRECTED: "REDIRECTED"}
FORMATS = ("compact", "dict", "json", "jsonpb", "table")
DICT_SEPARATOR = "------------"  # between two flows of -o dict, as hubble prints it
RCODE_NAMES = {0: "NoError", 1: "FormErr", 2: "ServFail", 3: "NXDomain", 4: "NotImp", 5: "Refused"}


def timestamp(flow: Flow) -> str:
    """``Nov 27 07:40:01.123`` (UTC)."""
    t = flow.time
    return t.strftime("%b %d %H:%M:%S") + f".{t.microsecond // 1000:03d}"


def _identity_text(flow: Flow, ep: Endpoint, is_peer: bool) -> str:
    if flow.world_cidr and is_peer:
        return f"world cidr:{flow.world_cidr}"
    try:
        return ReservedIdentity(ep.identity).label_name if ep.identity < 256 else f"ID:{ep.identity}"
    except ValueError:
        return f"ID:{ep.identity}"


def endpoint_text(flow: Flow, ep: Endpoint, ip: str, port: int) -> str:
    """``default/app-a-1:43210 (ID:256)``, ``198.19.0.1:80 (world cidr:198.19.0.0/16)``; a side that
    is no pod but a Service's frontend is named by the Service (``default/backend:80``), as hubble."""
    svc = flow.source_service if ep is flow.source else flow.destination_service
    where = ep.pod or (str(svc) if svc is not None else ip)
    if not flow.l4.is_icmp:
        where += f":{port}"
    return f"{where} ({_identity_text(flow, ep, ep is flow.peer)})"


def dns_summary(dns: DnsInfo) -> str:
    """``DNS Query web.example.test. A`` / ``DNS Answer "198.19.0.5" TTL: 30 (Proxy web.example.test. A)``."""
    q = f"{dns.query} {','.join(dns.qtypes)}".rstrip()
    if dns.type is L7Type.REQUEST:
        return f"DNS Query {q}"
    if dns.rcode:
        return f"DNS Answer RCode: {RCODE_NAMES.get(dns.rcode, str(dns.rcode))} (Proxy {q})"
    ips = ",".join(dns.ips)
    return f'DNS Answer "{ips}" TTL: {dns.ttl} (Proxy {q})'


def http_summary(http: HttpInfo) -> str:
    """``HTTP/1.1 GET http://app-b/private`` / ``HTTP/1.1 200 2ms (GET http://app-b/public)``."""
    if http.type is L7Type.REQUEST:
        return f"{http.protocol} {http.method} {http.url}"
    return f"{http.protocol} {http.code} {http.latency_ns // 1_000_000}ms ({http.method} {http.url})"


def tls_summary(tls: TlsInfo) -> str:
    """``TLS ClientHello SNI www.example.com``."""
    return f"TLS ClientHello SNI {tls.sni or '(none)'}"


def l4_summary(flow: Flow) -> str:
    if isinstance(flow.l7, HttpInfo):
        return http_summary(flow.l7)
    if isinstance(flow.l7, TlsInfo):
        return tls_summary(flow.l7)
    if flow.l7 is not None:
        return dns_summary(flow.l7)
    l4 = flow.l4
    if l4.is_icmp:
        name = ICMP_TYPES.get(l4.proto, {}).get(l4.icmp_type, f"type {l4.icmp_type}")
        return f"{l4.name} {name}"
    if l4.name == "TCP" and l4.syn:
        return "TCP Flags: SYN"
    return l4.name


def _names(refs: Iterable[PolicyRef]) -> str:
    return "; ".join(r.describe() for r in refs)


def attribution_text(flow: Flow) -> str:
    """What decided: ``by CiliumNetworkPolicy default/deny egressDeny[0]`` and the like."""
    if flow.note:
        return flow.note
    would = "would be " if flow.verdict is Verdict.AUDIT else ""
    if flow.drop_reason == DropReason.POLICY_DENIED:
        by = _names(flow.default_deny_by) or "the enforcement mode"
        return f"{would}default deny by {by}, no rule allows it"
    if flow.drop_reason == DropReason.POLICY_DENY:
        return f"{would}denied by {_names(flow.denied_by) or 'a deny rule'}"
    if flow.drop_reason == DropReason.AUTH_REQUIRED:
        return f"{would}held for authentication by {_names(flow.allowed_by) or 'an allow rule'}"
    return f"by {_names(flow.allowed_by)}" if flow.allowed_by else ""


def _when(flow: Flow, node_names: bool) -> str:
    return f"{timestamp(flow)} [{flow.node_name}]" if node_names and flow.node_name else timestamp(flow)


def compact(flow: Flow, node_names: bool = False) -> str:
    """One line, hubble's compact shape, plus the rules that decided."""
    src = endpoint_text(flow, flow.source, flow.ip_source, flow.l4.source_port)
    dst = endpoint_text(flow, flow.destination, flow.ip_destination, flow.l4.destination_port)
    if isinstance(flow.l7, HttpInfo):
        kind = "http-request" if flow.l7.type is L7Type.REQUEST else "http-response"
        line = f"{_when(flow, node_names)}: {src} -> {dst} {kind} {VERDICT_WORDS[flow.verdict]} "
        line += f"({http_summary(flow.l7)})"
        if flow.dropped and flow.denied_by:
            line += f" no L7 rule of {_names(flow.denied_by)} matches"
        elif flow.allowed_by:
            line += f" by {_names(flow.allowed_by)}"
        return line
    if isinstance(flow.l7, TlsInfo):
        line = f"{_when(flow, node_names)}: {src} -> {dst} tls-client-hello {VERDICT_WORDS[flow.verdict]} "
        line += f"({tls_summary(flow.l7)})"
        if flow.dropped and flow.denied_by:
            line += f" no serverNames of {_names(flow.denied_by)} matches"
        elif flow.allowed_by:
            line += f" by {_names(flow.allowed_by)}"
        return line
    if flow.l7 is not None:
        kind = "dns-request" if flow.l7.type is L7Type.REQUEST else "dns-response"
        line = f"{_when(flow, node_names)}: {src} -> {dst} {kind} proxy {VERDICT_WORDS[flow.verdict]} "
        return line + f"({dns_summary(flow.l7)})" + (f" {flow.note}" if flow.note else "")
    parts = [
        f"{_when(flow, node_names)}: {src} -> {dst}",
        f"policy-verdict:{flow.policy_match_type.hubble_name}",
        flow.traffic_direction.value,
        VERDICT_WORDS[flow.verdict],
        f"({l4_summary(flow)})",
    ]
    by = attribution_text(flow)
    if flow.drop_reason:
        parts.append(flow.drop_reason.description + (":" if by else ""))
    if by:
        parts.append(by)
    if flow.suppressed:
        parts.append(f"[{flow.suppressed} earlier events suppressed]")
    return " ".join(parts)


def json_line(flow: Flow) -> str:
    """One JSON object per line (``-o json``), Hubble's field names."""
    return json.dumps(flow.to_json(), sort_keys=False)


def jsonpb_line(flow: Flow) -> str:
    """``-o jsonpb``: hubble's GetFlowsResponse — the flow under ``flow``, with its node and time."""
    return json.dumps({"flow": flow.to_json(), "node_name": flow.node_name, "time": rfc3339(flow.time_ns)})


def _event_kind(flow: Flow) -> str:
    if isinstance(flow.l7, HttpInfo):
        return "http-request" if flow.l7.type is L7Type.REQUEST else "http-response"
    if isinstance(flow.l7, TlsInfo):
        return "tls-client-hello"
    if flow.l7 is not None:
        return "dns-request" if flow.l7.type is L7Type.REQUEST else "dns-response"
    return f"policy-verdict:{flow.policy_match_type.hubble_name} {flow.traffic_direction.value}"


def dict_block(flow: Flow, node_names: bool = False) -> str:
    """``-o dict``: one ``KEY: value`` line per field, keys right-aligned, as hubble prints them
    (blocks are separated by :data:`DICT_SEPARATOR`)."""
    src = endpoint_text(flow, flow.source, flow.ip_source, flow.l4.source_port)
    dst = endpoint_text(flow, flow.destination, flow.ip_destination, flow.l4.destination_port)
    rows = [("TIMESTAMP", timestamp(flow)), *((("NODE", flow.node_name),) if node_names else ()),
            ("SOURCE", src), ("DESTINATION", dst), ("TYPE", _event_kind(flow)),
            ("VERDICT", flow.verdict.value), ("SUMMARY", l4_summary(flow))]
    if flow.drop_reason:
        rows.append(("DROP REASON", flow.drop_reason.name))
    by = attribution_text(flow)
    if by:
        rows.append(("DECIDED BY", by.removeprefix("by ")))
    return "\n".join(f"{k:>11}: {v}" for k, v in rows)


def line(flow: Flow, fmt: str, node_names: bool = False) -> str:
    """One flow in a streaming format (``compact``, ``dict``, ``json``, ``jsonpb``); no newline."""
    if fmt == "json":
        return json_line(flow)
    if fmt == "jsonpb":
        return jsonpb_line(flow)
    if fmt == "dict":
        return dict_block(flow, node_names)
    return compact(flow, node_names)


# hubble's table columns (TIMESTAMP SOURCE DESTINATION TYPE VERDICT SUMMARY), then cilia's DECIDED BY
TABLE_HEADERS = ("TIMESTAMP", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY", "DECIDED BY")


def table_row(flow: Flow, node_names: bool = False) -> tuple[str, ...]:
    src = endpoint_text(flow, flow.source, flow.ip_source, flow.l4.source_port)
    dst = endpoint_text(flow, flow.destination, flow.ip_destination, flow.l4.destination_port)
    summary = l4_summary(flow) + (f", {flow.drop_reason.description}" if flow.drop_reason else "")
    node = (flow.node_name,) if node_names else ()
    return (
        timestamp(flow),
        *node,
        src,
        dst,
        _event_kind(flow),
        flow.verdict.value,
        summary,
        attribution_text(flow).removeprefix("by "),
    )


def table(flows: Iterable[Flow], node_names: bool = False) -> str:
    """``-o table``: aligned columns with a header (a NODE column with ``node_names``)."""
    headers = (TABLE_HEADERS[0], "NODE", *TABLE_HEADERS[1:]) if node_names else TABLE_HEADERS
    return Table(headers, tuple(table_row(f, node_names) for f in flows)).render()


def render(flows: Iterable[Flow], fmt: str, node_names: bool = False) -> str:
    """All flows in one format (:data:`FORMATS`)."""
    if fmt == "table":
        return table(flows, node_names)
    if fmt == "dict":
        return "".join(f"{DICT_SEPARATOR}\n" * (i > 0) + dict_block(f, node_names) + "\n"
                       for i, f in enumerate(flows))
    return "".join(line(f, fmt, node_names) + "\n" for f in flows)
