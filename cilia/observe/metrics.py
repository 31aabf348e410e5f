"""Prometheus metrics of a node, with Cilium's and Hubble's metric names.

:class:`NodeMetrics` is a registry object fed from flows (:meth:`NodeMetrics.observe`), from the
datapath's per-packet counters (:meth:`NodeMetrics.set_datapath_counters`, the kernel metrics map)
and from the agent (policy count, regenerations, enforcement, map fill levels). ``serve(addr)``
exposes it over HTTP (the agent's ``--metrics-addr 127.0.0.1:9962``).

``cilium_drop_count_total`` / ``cilium_forward_count_total`` count packets, as Cilium's do: from the
kernel counters once the agent reports them, else (sim datapath) from the flows observed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from cilia.observe.flow import DnsInfo, Flow, HttpInfo, L7Type, TrafficDirection

REGENERATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
ENFORCEMENT_STATES = ("none", "ingress", "egress", "both")
# hubble's rcode label of hubble_dns_responses_total (its metrics' own names, not the DNS mnemonics)
DNS_RCODE_NAMES = {0: "No Error", 1: "Format Error", 2: "Server Failure", 3: "Non-Existent Domain",
                   4: "Not Implemented", 5: "Query Refused"}
# cilium_policy_implementation_delay: Cilium gives no buckets, so Prometheus' default ones
POLICY_DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _reason_label(flow: Flow) -> str:
    return flow.drop_reason.description or flow.drop_reason.name


class _PacketCounters(Collector):
    """``cilium_drop_count_total{reason,direction}`` and ``cilium_forward_count_total{direction}``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.from_flows: dict[tuple[str, str, str], int] = {}  # (verdict, reason, direction) -> n
        self.from_kernel: dict[tuple[str, str, str], int] | None = None
        self.bytes_from_kernel: dict[tuple[str, str, str], int] | None = None  # flows carry no sizes

    def collect(self) -> Iterator[CounterMetricFamily]:
        drops = CounterMetricFamily(
            "cilium_drop_count", "Dropped packets, by reason and direction", labels=["reason", "direction"]
        )
        fwd = CounterMetricFamily(
            "cilium_forward_count", "Forwarded packets, by direction", labels=["direction"]
        )
        with self._lock:
            counts = dict(self.from_kernel if self.from_kernel is not None else self.from_flows)
        fwd_by: dict[str, int] = {}
        for (verdict, reason, direction), n in sorted(counts.items()):
            if verdict == "dropped":
                drops.add_metric([reason, direction], n)
            else:
                fwd_by[direction] = fwd_by.get(direction, 0) + n
        for direction, n in sorted(fwd_by.items()):
            fwd.add_metric([direction], n)
        yield drops
        yield fwd
        with self._lock:
            sizes = dict(self.bytes_from_kernel) if self.bytes_from_kernel is not None else None
        if sizes is None:  # only the kernel counts bytes (the sim datapath has none)
            return
        drop_bytes = CounterMetricFamily(
            "cilium_drop_bytes", "Dropped bytes, by reason and direction", labels=["reason", "direction"]
        )
        fwd_bytes = CounterMetricFamily(
            "cilium_forward_bytes", "Forwarded bytes, by direction", labels=["direction"]
        )
        fwd_b: dict[str, int] = {}
        for (verdict, reason, direction), n in sorted(sizes.items()):
            if verdict == "dropped":
                drop_bytes.add_metric([reason, direction], n)
            else:
                fwd_b[direction] = fwd_b.get(direction, 0) + n
        for direction, n in sorted(fwd_b.items()):
            fwd_bytes.add_metric([direction], n)
        yield drop_bytes
        yield fwd_bytes


class NodeMetrics:
    """The node's metrics registry (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._packets = _PacketCounters()
        self.registry.register(self._packets)
        r = self.registry
        self.policy = Gauge("cilium_policy", "Number of policy rules loaded", registry=r)
        self.regeneration = Histogram(
            "cilium_endpoint_regeneration_time_stats_seconds", "Endpoint regeneration time",
            ["scope", "status"], buckets=REGENERATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.enforcement = Gauge(
            "cilium_policy_endpoint_enforcement_status",
            "Endpoints by the directions their policy enforces",
            ["enforcement"],
            registry=r,
        )
        self.verdicts = Counter(
            "hubble_policy_verdicts", "Policy verdicts of flows", ["direction", "match", "action"], registry=r
        )
        self.flows = Counter("hubble_flows_processed", "Flows processed", ["verdict", "type"], registry=r)
        self.drops = Counter(
            "hubble_drop", "Dropped flows, by reason and protocol", ["reason", "protocol"], registry=r
        )
        self.map_entries = Gauge(
            "cilia_policy_map_entries", "Policy map entries of an endpoint", ["endpoint"], registry=r
        )
        self.map_capacity = Gauge("cilia_policy_map_capacity", "Policy map capacity per endpoint", registry=r)
        self.map_pressure = Gauge(
            "cilia_bpf_map_pressure", "Fill level of a BPF map (0..1)", ["map_name"], registry=r
        )
        self.events_lost = Gauge("cilia_events_lost", "Datapath events lost (ring buffer full)", registry=r)
        self.events_suppressed = Gauge(
            "cilia_events_suppressed", "Datapath events suppressed by the per-endpoint rate limit", registry=r
        )
        # Hubble's http metrics (httpV2): reporter "client" for the egress proxy, "server" for ingress
        self.http_requests = Counter(
            "hubble_http_requests", "HTTP requests the proxy decided", ["method", "protocol", "reporter"],
            registry=r,
        )  # fmt: skip
        self.http_responses = Counter(
            "hubble_http_responses", "HTTP responses (403: refused by policy)",
            ["method", "protocol", "status", "reporter"], registry=r,
        )  # fmt: skip
        self.http_duration = Histogram(
            "hubble_http_request_duration_seconds", "HTTP request to response headers, through the proxy",
            ["method", "reporter"], buckets=HTTP_BUCKETS, registry=r,
        )  # fmt: skip
        # Hubble's dns metrics: queries (rcode "" — or "Policy denied" for a refused one), answers
        self.dns_queries = Counter(
            "hubble_dns_queries", "Number of DNS queries observed", ["rcode", "qtypes", "ips_returned"],
            registry=r,
        )  # fmt: skip
        self.dns_responses = Counter(
            "hubble_dns_responses", "Number of DNS responses observed", ["rcode", "qtypes", "ips_returned"],
            registry=r,
        )  # fmt: skip
        self.dns_response_types = Counter(
            "hubble_dns_response_types", "Number of DNS response records, by type", ["type", "qtypes"],
            registry=r,
        )  # fmt: skip
        self._http_children: dict[tuple[str, str, int, str], tuple[Any, Any, Any]] = {}
        self.policy_max_revision = Gauge(
            "cilium_policy_max_revision", "Highest policy revision number in the agent", registry=r
        )
        self.policy_changes = Counter(
            "cilium_policy_change", "Number of policy changes by outcome", ["outcome"], registry=r
        )
        self._policy_revision_seen: int | None = None
        self.policy_delay = Histogram(
            "cilium_policy_implementation_delay",
            "Time between a policy change and it being fully deployed into the datapath",
            ["source"], buckets=POLICY_DELAY_BUCKETS, registry=r,
        )  # fmt: skip
        # toFQDNs, node-wide (cilia's DNS cache is the node's, not one per endpoint as Cilium's)
        self.fqdn_active_names = Gauge("cilium_fqdn_active_names", "Names in the DNS cache", registry=r)
        self.fqdn_active_ips = Gauge("cilium_fqdn_active_ips", "Addresses in the DNS cache", registry=r)
        self.fqdn_zombies = Gauge(
            "cilium_fqdn_alive_zombie_connections",
            "Expired addresses kept because connections to them are still open", registry=r,
        )  # fmt: skip
        self.fqdn_selectors = Gauge(
            "cilium_fqdn_selectors", "toFQDNs selectors of the node's policies", registry=r
        )
        for state in ENFORCEMENT_STATES:
            self.enforcement.labels(state).set(0)

    # -- feeds -----------------------------------------------------------------------------------
    def observe(self, flow: Flow) -> None:
        """Count one flow."""
        direction = flow.traffic_direction.value.lower()
        action = flow.verdict.value.lower()
        self.verdicts.labels(direction, flow.policy_match_type.hubble_name, action).inc()
        self.flows.labels(flow.verdict.value, "PolicyVerdict" if not flow.dropped else "Drop").inc()
        if flow.dropped:
            self.drops.labels(flow.drop_reason.name, flow.l4.name).inc()
        key = (
            "dropped" if flow.dropped else "forwarded",
            _reason_label(flow) if flow.dropped else "",
            direction,
        )
        with self._packets._lock:
            self._packets.from_flows[key] = self._packets.from_flows.get(key, 0) + 1

    def observe_http(self, flow: Flow) -> None:
        """Count one HTTP flow of the proxy (request, response, duration)."""
        h = flow.l7
        if not isinstance(h, HttpInfo):
            return
        reporter = "client" if flow.traffic_direction is TrafficDirection.EGRESS else "server"
        key = (h.method, h.protocol, h.code, reporter)
        children = self._http_children.get(key)
        if children is None:  # labels() costs more than the increments: once per label set
            children = (
                self.http_requests.labels(h.method, h.protocol, reporter),
                self.http_responses.labels(h.method, h.protocol, str(h.code), reporter),
                self.http_duration.labels(h.method, reporter),
            )
            if len(self._http_children) < 4096:  # methods and codes come from clients: bounded
                self._http_children[key] = children
        children[0].inc()
        children[1].inc()
        if not flow.dropped:
            children[2].observe(h.latency_ns / 1e9)

    def observe_http_many(self, flows: list[Flow]) -> None:
        """:meth:`observe_http` for a burst: each label set's counters incremented once."""
        counts: dict[tuple[str, str, int, str], int] = {}
        for flow in flows:
            h = flow.l7
            if not isinstance(h, HttpInfo):
                continue
            reporter = "client" if flow.traffic_direction is TrafficDirection.EGRESS else "server"
            key = (h.method, h.protocol, h.code, reporter)
            counts[key] = counts.get(key, 0) + 1
            if not flow.dropped:
                self._http_children_of(key)[2].observe(h.latency_ns / 1e9)
        for key, n in counts.items():
            children = self._http_children_of(key)
            children[0].inc(n)
            children[1].inc(n)

    def _http_children_of(self, key: tuple[str, str, int, str]) -> tuple[Any, Any, Any]:
        children = self._http_children.get(key)
        if children is None:
            method, protocol, code, reporter = key
            children = (
                self.http_requests.labels(method, protocol, reporter),
                self.http_responses.labels(method, protocol, str(code), reporter),
                self.http_duration.labels(method, reporter),
            )
            if len(self._http_children) < 4096:  # methods and codes come from clients: bounded
                self._http_children[key] = children
        return children

    def observe_dns(self, flow: Flow) -> None:
        """Count one DNS flow of the proxy as hubble's dns handler does: a dropped (refused) query
        and a query are ``hubble_dns_queries_total``, an answer ``hubble_dns_responses_total`` and
        one ``hubble_dns_response_types_total`` per record type."""
        d = flow.l7
        if not isinstance(d, DnsInfo):
            return
        qtypes, ips = ",".join(d.qtypes), str(len(d.ips))
        if flow.dropped:
            self.dns_queries.labels("Policy denied", qtypes, ips).inc()
        elif d.type is L7Type.REQUEST:
            self.dns_queries.labels("", qtypes, ips).inc()
        else:
            self.dns_responses.labels(DNS_RCODE_NAMES.get(d.rcode, str(d.rcode)), qtypes, ips).inc()
            for rrtype in d.rrtypes:
                self.dns_response_types.labels(rrtype, qtypes).inc()

    def set_datapath_counters(self, rows: Iterable[Any]) -> None:
        """The kernel's counters (:class:`cilia.datapath.maps.metrics.MetricRow` rows): packets by
        direction/verdict/reason, and the lost / suppressed event counters."""
        counts: dict[tuple[str, str, str], int] = {}
        sizes: dict[tuple[str, str, str], int] = {}
        for row in rows:
            if not row.direction:
                if row.verdict == "events lost":
                    self.events_lost.set(row.packets)
                elif row.verdict == "events suppressed":
                    self.events_suppressed.set(row.packets)
                continue
            verdict = "dropped" if row.verdict == "dropped" else "forwarded"
            key = (verdict, row.reason if verdict == "dropped" else "", row.direction)
            counts[key] = counts.get(key, 0) + row.packets
            sizes[key] = sizes.get(key, 0) + row.bytes
        with self._packets._lock:
            self._packets.from_kernel = counts
            self._packets.bytes_from_kernel = sizes

    def set_policy_count(self, n: int) -> None:
        self.policy.set(n)

    def set_policy_revision(self, revision: int) -> None:
        """The policy repository's revision: ``cilium_policy_max_revision``, and each step since the
        last one read is one change (``cilium_policy_change_total{outcome="success"}``: a change
        the repository did not take never bumps it)."""
        self.policy_max_revision.set(revision)
        seen = self._policy_revision_seen
        if seen is not None and revision > seen:
            self.policy_changes.labels("success").inc(revision - seen)
        self._policy_revision_seen = revision

    def observe_policy_delay(self, source: str, seconds: float) -> None:
        """One policy change from its arrival at the agent to the end of its datapath sync
        (``source``: ``custom-resource`` for Cilium's policy kinds, ``k8s`` for NetworkPolicy)."""
        self.policy_delay.labels(source).observe(seconds)

    def set_fqdn(self, names: int, ips: int, zombies: int, selectors: int) -> None:
        """The DNS cache's size, the expired addresses still in use, the toFQDNs selectors."""
        self.fqdn_active_names.set(names)
        self.fqdn_active_ips.set(ips)
        self.fqdn_zombies.set(zombies)
        self.fqdn_selectors.set(selectors)

    def observe_regeneration(self, seconds: float, ok: bool = True, scope: str = "total") -> None:
        self.regeneration.labels(scope, "success" if ok else "failure").observe(seconds)

    def set_enforcement(self, counts: Mapping[str, int]) -> None:
        """Endpoints per state ``none | ingress | egress | both``."""
        for state in ENFORCEMENT_STATES:
            self.enforcement.labels(state).set(counts.get(state, 0))

    def set_map_fill(self, entries: Mapping[int, int], capacity: int) -> None:
        """Policy map entries per endpoint id, and the per-endpoint capacity; the pressure of the
        fullest endpoint map is exported as ``cilia_bpf_map_pressure{map_name="cilia_policy"}``."""
        self.map_entries.clear()
        for ep, n in entries.items():
            self.map_entries.labels(str(ep)).set(n)
        self.map_capacity.set(capacity)
        self.map_pressure.labels("cilia_policy").set(
            max(entries.values(), default=0) / capacity if capacity else 0
        )

    # -- output ----------------------------------------------------------------------------------
    def render(self) -> str:
        """The exposition text (what ``/metrics`` serves)."""
        return generate_latest(self.registry).decode()

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """One sample's value (0 if absent), for tests and status output."""
        v = self.registry.get_sample_value(name, dict(labels or {}))
        return 0.0 if v is None else v

    def serve(self, addr: str) -> Any:
        """Serve ``/metrics`` on ``host:port`` in a background thread; returns the HTTP server
        (``shutdown()`` stops it)."""
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"metrics address {addr!r}: expected HOST:PORT, e.g. 127.0.0.1:9962")
        server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        return server


def serve(metrics: NodeMetrics, addr: str) -> Any:
    """``metrics.serve(addr)``."""
    return metrics.serve(addr)
