"""The flow pipeline: decode once → enrich → attribute → ring, log, metrics.

The agent calls :meth:`FlowPipeline.ingest` for each datapath event (a raw ring-buffer record or a
decoded :class:`cilia.datapath.maps.events.PolicyEvent`). The flow it makes names both sides
(:mod:`cilia.observe.enrich`) and the rules that decided (:mod:`cilia.observe.attribute`), turns
forwards that only audited policies would drop into AUDIT (:mod:`cilia.observe.audit`), and goes to
the bounded in-memory ring (served at ``/v1/flows``), the durable flow log and the metrics.

The agent's DNS proxy reports its queries, answers and refusals through :meth:`FlowPipeline.ingest_dns`:
each becomes Hubble's L7 DNS flow (a refused query is a DROPPED one), named like the others, kept in
the same ring and log (not counted in the policy-verdict metrics: the datapath's verdict on the query
was counted already).

The HTTP proxy's access log gives one record per request; the agent decides it again with the
engine's L7 policy for attribution and calls :meth:`FlowPipeline.ingest_http` once per policy the
proxy evaluated (egress, ingress): an L7 HTTP flow, FORWARDED or DROPPED (a 403 of the proxy), with
the policies that allowed it or whose L7 rules did not match, kept in the ring and the log and
counted in Hubble's http metrics.

A new pipeline over the same state directory continues the sequence numbers of the log and refills
its ring from the log's tail, so an agent restart loses no history.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cilia.agent.flows import FlowRing
from cilia.datapath.maps.events import PolicyEvent, decode
from cilia.observe.attribute import attribute
from cilia.observe.audit import classify
from cilia.observe.enrich import NodeView, endpoint_of, names_of, services_of, world_cidr
from cilia.observe.flow import (
    L4,
    DnsInfo,
    Flow,
    HttpInfo,
    L7Type,
    PolicyRef,
    TlsInfo,
    TrafficDirection,
    Verdict,
)
from cilia.observe.http_template import HttpFlowTemplates
from cilia.observe.log import DEFAULT_FILES, DEFAULT_MAX_BYTES, FlowLog
from cilia.observe.metrics import NodeMetrics
from cilia.policy.types import Direction, DropReason, MatchType, RuleRef
from cilia.proxy.dns.msg import type_name
from cilia.proxy.http.accesslog import HttpRecord, TlsRecord
from cilia.proxy.records import DnsRecord

DEFAULT_RING = 16384
NOT_READY = "endpoint policy not ready: dropped until its first policy is installed"
NO_ENDPOINT = "no endpoint on this device: dropped"
RulesFor = Callable[[int], "frozenset[RuleRef] | None"]


def policy_log(rules: Iterable[RuleRef]) -> tuple[str, ...]:
    """Hubble's ``policy_log``: the ``spec.log`` values of the rules that decided a flow (Cilium 1.18
    fills it for allowed flows only, cilium/cilium#42044; cilia for drops a rule decided too)."""
    return tuple(sorted({r.log for r in rules if r.log}))


def boot_offset_ns() -> int:
    """wall clock − CLOCK_MONOTONIC: the datapath stamps events with ``bpf_ktime_get_ns``."""
    return time.time_ns() - time.monotonic_ns()


class FlowPipeline:
    """Turns datapath events into flows and keeps them (ring, optional log, optional metrics)."""

    def __init__(
        self,
        view: Callable[[], NodeView] = NodeView,
        rules_for: RulesFor | None = None,
        *,
        state_dir: Path | None = None,
        capacity: int = DEFAULT_RING,
        log_max_bytes: int = DEFAULT_MAX_BYTES,
        log_files: int = DEFAULT_FILES,
        metrics: NodeMetrics | None = None,
        clock_offset_ns: int | None = None,
    ) -> None:
        self.view = view
        self.rules_for = rules_for
        self.metrics = metrics
        self.ring = FlowRing(capacity)
        self.log = FlowLog(state_dir, log_max_bytes, log_files) if state_dir is not None else None
        self.offset_ns = boot_offset_ns() if clock_offset_ns is None else clock_offset_ns
        self.suppressed = 0  # events the datapath's rate limit suppressed (sum of the reported counts)
        self.unknown_cookies = 0
        self._seq = 0
        self._http_templates = HttpFlowTemplates()
        self._lock = threading.Lock()
        if self.log is not None:
            for flow in self.log.tail(capacity):
                self.ring.add(flow)  # type: ignore[arg-type]
            self._seq = self.log.last_seq()  # continue the log's numbering

    def ingest(self, event: PolicyEvent | bytes) -> Flow:
        """One datapath event → one flow, kept in the ring, the log and the metrics."""
        ev = decode(event) if isinstance(event, bytes | bytearray) else event
        with self._lock:  # one order for ring, log and sequence numbers
            self._seq += 1
            flow = self._named(self.make_flow(ev, self._seq))
            self.ring.add(flow)  # type: ignore[arg-type]
            if self.log is not None:
                self.log.append(flow)
        if self.metrics is not None:
            self.metrics.observe(flow)
        self.suppressed += ev.suppressed_before
        return flow

    def _named(self, flow: Flow, view: NodeView | None = None) -> Flow:
        """The flow with the DNS names the node learned for its two addresses (toFQDNs) and the
        Services of its two sides (:func:`~cilia.observe.enrich.services_of`)."""
        view = self.view() if view is None else view
        src, dst = names_of(view, flow.ip_source), names_of(view, flow.ip_destination)
        if src or dst:
            flow = replace(flow, source_names=src, destination_names=dst)
        if view.services and not flow.l4.is_icmp:
            l4 = flow.l4
            src_svc, dst_svc = services_of(view, flow.ip_source, flow.ip_destination, l4.source_port,
                                           l4.destination_port, l4.proto)
            if src_svc is not None or dst_svc is not None:
                flow = replace(flow, source_service=src_svc, destination_service=dst_svc)
        return flow

    def ingest_dns(self, record: DnsRecord) -> Flow:
        """One record of the DNS proxy → one L7 flow, kept in the ring and the log."""
        with self._lock:
            self._seq += 1
            flow = self._named(self.make_dns_flow(record, self._seq))
            self.ring.add(flow)  # type: ignore[arg-type]
            if self.log is not None:
                self.log.append(flow)
        if self.metrics is not None:
            self.metrics.observe_dns(flow)
        return flow

    def ingest_http(self, record: HttpRecord, direction: Direction, allowed: bool,
                    allowed_by: Iterable[RuleRef] = (), denied_by: Iterable[RuleRef] = ()) -> Flow:
        """One request the HTTP proxy decided for one policy (``direction``) → one L7 flow, kept in
        the ring and the log, counted in the http metrics."""
        with self._lock:
            self._seq += 1
            flow = self._named(self.make_http_flow(record, direction, allowed, allowed_by, denied_by,
                                                   self._seq))
            self.ring.add(flow)  # type: ignore[arg-type]
            if self.log is not None:
                self.log.append(flow)
        if self.metrics is not None:
            self.metrics.observe_http(flow)
        return flow

    def ingest_tls(self, record: TlsRecord, direction: Direction, allowed: bool,
                   allowed_by: Iterable[RuleRef] = (), denied_by: Iterable[RuleRef] = ()) -> Flow:
        """One TLS ClientHello the proxy decided by its server name for one policy → one L7 flow
        (FORWARDED, or DROPPED: the connection was closed), kept in the ring and the log."""
        with self._lock:
            self._seq += 1
            view = self.view()
            ingress = direction == Direction.INGRESS
            by_refs = tuple(allowed_by) if allowed else ()
            denied_refs = () if allowed else tuple(denied_by)
            by = tuple(sorted(PolicyRef.of(x, view.revision) for x in by_refs))
            denied = tuple(sorted(PolicyRef.of(x, view.revision) for x in denied_refs))
            flow = self._named(Flow(
                seq=self._seq, time_ns=record.time_ns,
                verdict=Verdict.FORWARDED if allowed else Verdict.DROPPED,
                traffic_direction=TrafficDirection.INGRESS if ingress else TrafficDirection.EGRESS,
                source=endpoint_of(view, record.client[0], record.client_identity),
                destination=endpoint_of(view, record.server[0], record.server_identity),
                ip_source=record.client[0], ip_destination=record.server[0],
                l4=L4(6, record.client[1], record.server[1]), node_name=view.node_name,
                ingress_allowed_by=by if ingress else (), egress_allowed_by=() if ingress else by,
                ingress_denied_by=denied if ingress else (), egress_denied_by=() if ingress else denied,
                policy_log=policy_log(by_refs or denied_refs), l7=TlsInfo(L7Type.REQUEST, record.sni),
            ), view)  # fmt: skip
            self.ring.add(flow)  # type: ignore[arg-type]
            if self.log is not None:
                self.log.append(flow)
        return flow

    def ingest_http_many(
        self, items: Iterable[tuple[HttpRecord, Direction, bool, Iterable[RuleRef], Iterable[RuleRef]]]
    ) -> list[Flow]:
        """:meth:`ingest_http` for a burst of the access log: one lock, one write of the flow log;
        the requests of one shape after the first are copies of its flow
        (:mod:`cilia.observe.http_template`)."""
        with self._lock:
            view = self.view()
            names: dict[str, tuple[str, ...]] = {}
            flows, lines = [], []
            for record, direction, allowed, by, refused in items:
                self._seq += 1
                seq = self._seq
                src, dst = record.client[0], record.server[0]
                if src not in names:
                    names[src] = names_of(view, src)
                if dst not in names:
                    names[dst] = names_of(view, dst)
                by, refused = frozenset(by), frozenset(refused)
                if record.shape:  # the parser's shape id stands for the record's constant fields
                    key: tuple[Any, ...] = (record.shape, direction, allowed, by, refused, names[src],
                                            names[dst])  # fmt: skip
                else:
                    key = (direction, allowed, by, refused, src, record.server, record.client_identity,
                           record.server_identity, record.status, record.protocol, record.method,
                           record.path, record.host, record.headers, names[src], names[dst])  # fmt: skip

                latency = record.latency_ns if allowed else 0
                args = (record, direction, allowed, by, refused, seq, view)
                flow, line = self._http_templates.make(view, key, seq, record.time_ns, record.client[1],
                                                       latency, self._http_flow, args)  # fmt: skip
                flows.append(flow)
                lines.append(line)
            for flow in flows:
                self.ring.add(flow)  # type: ignore[arg-type]
            if self.log is not None:
                self.log.append_many(flows, [(line + "\n").encode() for line in lines])
        if self.metrics is not None:
            self.metrics.observe_http_many(flows)
        return flows

    def _http_flow(self, r: HttpRecord, direction: Direction, allowed: bool, by: Iterable[RuleRef],
                   refused: Iterable[RuleRef], seq: int, view: NodeView) -> Flow:  # fmt: skip
        """The HTTP flow of one request the slow way: made and named from ``view``."""
        return self._named(self.make_http_flow(r, direction, allowed, by, refused, seq, view), view)

    def make_http_flow(
        self, r: HttpRecord, direction: Direction, allowed: bool, allowed_by: Iterable[RuleRef],
        denied_by: Iterable[RuleRef], seq: int, view: NodeView | None = None,
    ) -> Flow:  # fmt: skip
        """Hubble's HTTP flow: REQUEST for a refused request (code 403), RESPONSE with the status
        and latency for a forwarded one."""
        view = self.view() if view is None else view
        info = HttpInfo(
            L7Type.RESPONSE if allowed else L7Type.REQUEST,
            r.status,
            r.method,
            f"http://{r.host or r.server[0]}{r.path or '/'}",
            r.protocol,
            r.headers,
            r.latency_ns if allowed else 0,
        )
        ingress = direction == Direction.INGRESS
        allowed_by, denied_by = tuple(allowed_by), tuple(denied_by)
        by = tuple(sorted(PolicyRef.of(x, view.revision) for x in allowed_by)) if allowed else ()
        denied = () if allowed else tuple(sorted(PolicyRef.of(x, view.revision) for x in denied_by))
        return Flow(
            seq=seq,
            time_ns=r.time_ns,
            verdict=Verdict.FORWARDED if allowed else Verdict.DROPPED,
            traffic_direction=TrafficDirection.INGRESS if ingress else TrafficDirection.EGRESS,
            source=endpoint_of(view, r.client[0], r.client_identity),
            destination=endpoint_of(view, r.server[0], r.server_identity),
            ip_source=r.client[0],
            ip_destination=r.server[0],
            l4=L4(6, r.client[1], r.server[1]),
            node_name=view.node_name,
            ingress_allowed_by=by if ingress else (),
            egress_allowed_by=() if ingress else by,
            ingress_denied_by=denied if ingress else (),
            egress_denied_by=() if ingress else denied,
            policy_log=policy_log(allowed_by if allowed else denied_by),
            l7=info,
        )

    def make_dns_flow(self, r: DnsRecord, seq: int) -> Flow:
        """Hubble's DNS flow for one proxy record: the pod's query to the server it asked (the
        answer keeps that direction, as the proxy saw it), named from the node's view."""
        view = self.view()
        info = DnsInfo(
            L7Type.RESPONSE if r.response else L7Type.REQUEST,
            r.query.rstrip(".") + ".",
            qtypes=(type_name(r.qtype),),
            ips=r.ips,
            ttl=r.ttl,
            rcode=r.rcode,
            rrtypes=("A",) if r.ips else (),
            latency_ns=r.latency_ns,
        )
        return Flow(
            seq=seq,
            time_ns=r.time_ns,
            verdict=Verdict.DROPPED if r.refused else Verdict.FORWARDED,
            traffic_direction=TrafficDirection.EGRESS,
            source=endpoint_of(view, r.client[0], r.client_identity),
            destination=endpoint_of(view, r.server[0], r.server_identity),
            ip_source=r.client[0],
            ip_destination=r.server[0],
            l4=L4(r.proto, r.client[1], r.server[1]),
            node_name=view.node_name,
            l7=info,
        )

    def make_flow(self, ev: PolicyEvent, seq: int) -> Flow:
        """Enrich and attribute one event (no side effects)."""
        view = self.view()
        egress = ev.direction == Direction.EGRESS
        src = endpoint_of(view, ev.src, ev.src_identity)
        dst = endpoint_of(view, ev.dst, ev.dst_identity)
        owner_identity, peer_identity = (
            (ev.src_identity, ev.dst_identity) if egress else (ev.dst_identity, ev.src_identity)
        )
        peer_ip = ev.dst if egress else ev.src

        rules: frozenset[RuleRef] = frozenset()
        if ev.cookie and self.rules_for is not None:
            found = self.rules_for(ev.cookie)
            if found is None:
                self.unknown_cookies += 1
            rules = found or frozenset()
        reason = ev.reason if (not ev.allowed or ev.audited) else DropReason.NONE
        match_type = ev.match_type
        audited = ev.audited
        policy = view.policies.get(owner_identity)
        default_deny = policy.default_deny_by[ev.direction] if policy is not None else ()

        full = view.audit_policies.get(owner_identity)
        if ev.allowed and not ev.audited and full is not None:
            v = classify(full, ev.direction, peer_identity, ev.proto, ev.dport)
            if v is not None:  # only audited policies drop it
                audited, reason, match_type = True, v.reason, v.match_type
                rules = v.entry.rules if v.entry is not None else frozenset()
                default_deny = full.default_deny_by[ev.direction]

        note = NOT_READY if ev.not_ready else NO_ENDPOINT if ev.no_endpoint else ""
        if note:  # the datapath dropped before any policy lookup: no rule to name
            att = attribute(DropReason.NONE, (), ())
        else:
            att = attribute(reason, rules, default_deny, view.revision)
        if audited:
            verdict = Verdict.AUDIT
        else:
            verdict = Verdict.FORWARDED if ev.allowed else Verdict.DROPPED
            if ev.redirected:
                verdict = Verdict.REDIRECTED
        icmp = ev.proto in (1, 58)
        l4 = L4(
            ev.proto,
            0 if icmp else ev.sport,
            0 if icmp else ev.dport,
            ev.dport if icmp else 0,
            syn=ev.proto == 6 and ev.allowed and not ev.audited,
        )
        ingress = not egress
        return Flow(
            seq=seq,
            time_ns=ev.ts_ns + self.offset_ns,
            verdict=verdict,
            traffic_direction=TrafficDirection.EGRESS if egress else TrafficDirection.INGRESS,
            source=src,
            destination=dst,
            ip_source=ev.src,
            ip_destination=ev.dst,
            l4=l4,
            drop_reason=DropReason(reason),
            policy_match_type=MatchType(match_type),
            node_name=view.node_name,
            ingress_allowed_by=att.allowed_by if ingress else (),
            egress_allowed_by=att.allowed_by if egress else (),
            ingress_denied_by=att.denied_by if ingress else (),
            egress_denied_by=att.denied_by if egress else (),
            default_deny_by=att.default_deny_by,
            policy_log=policy_log(rules) if att.allowed_by or att.denied_by else (),
            world_cidr=world_cidr(view, peer_ip, peer_identity),
            suppressed=ev.suppressed_before,
            note=note,
        )

    def snapshot(self, since: int, limit: int) -> dict[str, object]:
        """What ``GET /v1/flows`` serves: the ring's flows after ``since`` plus counters."""
        out = self.ring.snapshot(since, limit)
        out["suppressed"] = self.suppressed
        return out

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
