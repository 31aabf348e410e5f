"""The flow record, with Hubble's field names (semantics.md §8, ``api/v1/flow/flow.proto``).

A :class:`Flow` is one policy verdict of the datapath: a drop, an allowed new connection, or a drop
that audit mode let through. Its JSON form (:meth:`Flow.to_json`) is what ``cilia observe -o json``
prints, what the durable flow log stores and what the agent serves; :func:`flow_from_json` reads it
back, so a flow survives every hop unchanged.

cilia's own additions to Hubble's fields: ``seq`` (resumable reads), ``default_deny_by`` (the
policies that turned default deny on, for a default-deny drop), ``world.cidr`` (the CIDR that
matched a world peer), ``suppressed`` (events the datapath's rate limit dropped before this one) and
``note`` (a drop no policy decided: the device had no endpoint, or its policy was not installed yet).

A DNS flow (the agent's DNS proxy saw a query or its answer) is Hubble's L7 flow: ``Type: L7`` and
``l7.dns`` (:class:`DnsInfo`), its event type the access log's (129). An HTTP flow (one request the
HTTP proxy decided) is the same with ``l7.http`` (:class:`HttpInfo`): ``l7.type`` RESPONSE for a
forwarded request (with its status and latency), REQUEST for one the proxy refused (code 403).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cilia.policy.types import DropReason, MatchType, RuleRef

# IP protocol number -> Hubble's l4 oneof name
L4_NAMES = {1: "ICMPv4", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}
L4_NUMBERS = {v: k for k, v in L4_NAMES.items()}

# Hubble's event_type.type: drops are monitor drop notifications, the rest policy verdicts
EVENT_DROP = 1
EVENT_POLICY_VERDICT = 5
EVENT_ACCESS_LOG = 129  # L7 records (DNS) of a proxy


class Verdict(StrEnum):
    FORWARDED = "FORWARDED"
    DROPPED = "DROPPED"
    AUDIT = "AUDIT"
    REDIRECTED = "REDIRECTED"  # allowed and handed to the node's proxy (the policy entry's proxy port)


class TrafficDirection(StrEnum):
    INGRESS = "INGRESS"
    EGRESS = "EGRESS"


@dataclass(frozen=True)
class PolicyRef:
    """Hubble's ``Policy`` (name, namespace, kind, labels, revision) plus cilia's ``rule``: which
    entry of the policy (``ingress[0]``; empty for a whole policy or a synthetic entry)."""

    name: str
    namespace: str
    kind: str
    labels: tuple[str, ...] = ()
    revision: int = 0
    rule: str = ""

    @classmethod
    def of(cls, ref: RuleRef, revision: int = 0) -> PolicyRef:
        """The Hubble form of an engine attribution; labels are the policy-derived labels (§2.6)."""
        if ref.kind == "reserved":
            labels: tuple[str, ...] = (f"reserved:io.cilium.policy.derived-from={ref.name}",)
        else:
            labels = (
                f"k8s:io.cilium.k8s.policy.derived-from={ref.kind}",
                f"k8s:io.cilium.k8s.policy.name={ref.name}",
            )
            if ref.namespace:
                labels += (f"k8s:io.cilium.k8s.policy.namespace={ref.namespace}",)
        rule = f"{ref.section}[{ref.index}]" if ref.index >= 0 else ""
        if rule and ref.spec_index:
            rule = f"specs[{ref.spec_index}].{rule}"
        return cls(ref.name, ref.namespace, ref.kind, labels, revision, rule)

    def describe(self) -> str:
        """``CiliumNetworkPolicy default/deny egressDeny[0]``."""
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return " ".join(p for p in (self.kind, where, self.rule) if p)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "kind": self.kind,
            "labels": list(self.labels),
            "revision": self.revision,
        }
        if self.rule:
            out["rule"] = self.rule
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PolicyRef:
        return cls(
            d.get("name", ""),
            d.get("namespace", ""),
            d.get("kind", ""),
            tuple(d.get("labels", ())),
            int(d.get("revision", 0)),
            d.get("rule", ""),
        )


@dataclass(frozen=True)
class Endpoint:
    """One side of a flow: Hubble's ``Endpoint``. ``ID`` is the local endpoint id (0 if not local)."""

    ID: int = 0
    identity: int = 0
    namespace: str = ""
    pod_name: str = ""
    labels: tuple[str, ...] = ()
    workloads: tuple[tuple[str, str], ...] = ()  # (kind, name) of the pod's owners: Hubble's workloads

    @property
    def pod(self) -> str:
        """``namespace/pod_name``, or "" when the side is not a pod."""
        return f"{self.namespace}/{self.pod_name}" if self.pod_name else ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ID": self.ID, "identity": self.identity}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.pod_name:
            out["pod_name"] = self.pod_name
        out["labels"] = list(self.labels)
        if self.workloads:
            out["workloads"] = [{"name": name, "kind": kind} for kind, name in self.workloads]
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Endpoint:
        return cls(
            int(d.get("ID", 0)),
            int(d.get("identity", 0)),
            d.get("namespace", ""),
            d.get("pod_name", ""),
            tuple(d.get("labels", ())),
            tuple((str(w.get("kind", "")), str(w.get("name", ""))) for w in d.get("workloads", ())),
        )


@dataclass(frozen=True)
class L4:
    """The transport header: ``proto`` is the IP protocol; for ICMP ``icmp_type`` replaces ports."""

    proto: int
    source_port: int = 0
    destination_port: int = 0
    icmp_type: int = 0
    syn: bool = False  # a TCP event of a new connection: the datapath saw a pure SYN

    @property
    def name(self) -> str:
        return L4_NAMES.get(self.proto, f"proto-{self.proto}")

    @property
    def is_icmp(self) -> bool:
        return self.proto in (1, 58)

    def to_json(self) -> dict[str, Any]:
        if self.is_icmp:
            body: dict[str, Any] = {"type": self.icmp_type}
        else:
            body = {"source_port": self.source_port, "destination_port": self.destination_port}
            if self.syn:
                body["flags"] = {"SYN": True}
        return {self.name: body}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> L4:
        ((name, body),) = d.items()
        proto = L4_NUMBERS.get(name) or int(name.removeprefix("proto-"))
        if proto in (1, 58):
            return cls(proto, icmp_type=int(body.get("type", 0)))
        return cls(
            proto,
            int(body.get("source_port", 0)),
            int(body.get("destination_port", 0)),
            syn=bool(body.get("flags", {}).get("SYN", False)),
        )


class L7Type(StrEnum):
    REQUEST = "REQUEST"
    RESPONSE = "RESPONSE"


@dataclass(frozen=True)
class DnsInfo:
    """Hubble's ``l7`` record of a DNS query (``REQUEST``) or its answer (``RESPONSE``) as the agent's
    DNS proxy saw it: ``query`` ends with a dot, ``rcode`` is the answer's (0 NOERROR, 5 REFUSED)."""

    type: L7Type
    query: str
    qtypes: tuple[str, ...] = ("A",)
    ips: tuple[str, ...] = ()
    ttl: int = 0
    rcode: int = 0
    rrtypes: tuple[str, ...] = ()
    latency_ns: int = 0
    observation_source: str = "proxy"

    def to_json(self) -> dict[str, Any]:
        dns: dict[str, Any] = {"query": self.query}
        if self.ips:
            dns["ips"] = list(self.ips)
        if self.ttl:
            dns["ttl"] = self.ttl
        if self.rcode:
            dns["rcode"] = self.rcode
        dns["qtypes"] = list(self.qtypes)
        if self.rrtypes:
            dns["rrtypes"] = list(self.rrtypes)
        dns["observation_source"] = self.observation_source
        out: dict[str, Any] = {"type": self.type.value}
        if self.latency_ns:
            out["latency_ns"] = self.latency_ns
        out["dns"] = dns
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DnsInfo:
        dns = d.get("dns", {})
        return cls(
            L7Type(d.get("type", "REQUEST")),
            dns.get("query", ""),
            tuple(dns.get("qtypes", ())),
            tuple(dns.get("ips", ())),
            int(dns.get("ttl", 0)),
            int(dns.get("rcode", 0)),
            tuple(dns.get("rrtypes", ())),
            int(d.get("latency_ns", 0)),
            dns.get("observation_source", "proxy"),
        )


@dataclass(frozen=True)
class HttpInfo:
    """Hubble's ``l7`` record of one HTTP request the proxy decided: ``l7.http.{code, method, url,
    protocol, headers}`` and ``l7.latency_ns`` (request → response headers)."""

    type: L7Type
    code: int
    method: str
    url: str
    protocol: str = "HTTP/1.1"
    headers: tuple[tuple[str, str], ...] = ()
    latency_ns: int = 0

    @property
    def path(self) -> str:
        """The URL's path (with the query), as ``--http-path`` matches it."""
        rest = self.url.split("://", 1)[1] if "://" in self.url else self.url
        i = rest.find("/")
        return rest[i:] if i >= 0 else "/"

    def to_json(self) -> dict[str, Any]:
        http: dict[str, Any] = {}
        if self.code:
            http["code"] = self.code
        http["method"] = self.method
        http["url"] = self.url
        http["protocol"] = self.protocol
        if self.headers:
            http["headers"] = [{"key": k, "value": v} for k, v in self.headers]
        out: dict[str, Any] = {"type": self.type.value}
        if self.latency_ns:
            out["latency_ns"] = self.latency_ns
        out["http"] = http
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HttpInfo:
        http = d.get("http", {})
        return cls(
            L7Type(d.get("type", "REQUEST")),
            int(http.get("code", 0)),
            http.get("method", ""),
            http.get("url", ""),
            http.get("protocol", ""),
            tuple((h.get("key", ""), h.get("value", "")) for h in http.get("headers", ())),
            int(d.get("latency_ns", 0)),
        )


@dataclass(frozen=True)
class TlsInfo:
    """cilia's ``l7`` record of one TLS ClientHello the proxy decided by its server name
    (``serverNames``; TLS is not terminated). Hubble has no such record: Envoy logs none."""

    type: L7Type
    sni: str  # "" when the ClientHello named no server

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type.value, "tls": {"sni": self.sni}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TlsInfo:
        return cls(L7Type(d.get("type", "REQUEST")), str(d.get("tls", {}).get("sni", "")))


@dataclass(frozen=True)
class Service:
    """Hubble's ``Service`` of a flow side: the Kubernetes Service whose frontend (ClusterIP:port)
    the address was, or the connection was addressed to (``source_service`` / ``destination_service``)."""

    name: str
    namespace: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace}

    @classmethod
    def from_json(cls, d: Any) -> Service | None:
        if not isinstance(d, dict) or not d.get("name"):
            return None
        return cls(str(d.get("name", "")), str(d.get("namespace", "")))


def l7_from_json(d: dict[str, Any]) -> DnsInfo | HttpInfo | TlsInfo:
    """The ``l7`` object of a flow: HTTP, TLS or DNS."""
    if "http" in d:
        return HttpInfo.from_json(d)
    return TlsInfo.from_json(d) if "tls" in d else DnsInfo.from_json(d)


@dataclass(frozen=True)
class Flow:
    """One policy verdict event (see the module docstring for the fields that are cilia's own)."""

    seq: int
    time_ns: int  # wall clock, ns since the epoch
    verdict: Verdict
    traffic_direction: TrafficDirection
    source: Endpoint
    destination: Endpoint
    ip_source: str
    ip_destination: str
    l4: L4
    drop_reason: DropReason = DropReason.NONE
    policy_match_type: MatchType = MatchType.NONE
    node_name: str = ""
    ingress_allowed_by: tuple[PolicyRef, ...] = ()
    egress_allowed_by: tuple[PolicyRef, ...] = ()
    ingress_denied_by: tuple[PolicyRef, ...] = ()
    egress_denied_by: tuple[PolicyRef, ...] = ()
    default_deny_by: tuple[PolicyRef, ...] = ()
    policy_log: tuple[str, ...] = ()  # spec.log values of the rules that decided (Hubble's policy_log)
    world_cidr: str = ""
    suppressed: int = 0
    note: str = ""
    l7: DnsInfo | HttpInfo | TlsInfo | None = None
    source_names: tuple[str, ...] = ()  # DNS names the node learned for the address (Hubble's field)
    destination_names: tuple[str, ...] = ()
    source_service: Service | None = None  # Hubble's source_service / destination_service
    destination_service: Service | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def dropped(self) -> bool:
        return self.verdict is Verdict.DROPPED

    @property
    def owner(self) -> Endpoint:
        """The endpoint whose policy decided: the source for egress, the destination for ingress."""
        return self.source if self.traffic_direction is TrafficDirection.EGRESS else self.destination

    @property
    def peer(self) -> Endpoint:
        return self.destination if self.traffic_direction is TrafficDirection.EGRESS else self.source

    @property
    def allowed_by(self) -> tuple[PolicyRef, ...]:
        ingress = self.traffic_direction is TrafficDirection.INGRESS
        return self.ingress_allowed_by if ingress else self.egress_allowed_by

    @property
    def denied_by(self) -> tuple[PolicyRef, ...]:
        ingress = self.traffic_direction is TrafficDirection.INGRESS
        return self.ingress_denied_by if ingress else self.egress_denied_by

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.time_ns / 1e9, dt.UTC)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``cilia observe -o json`` (Hubble's names; empty fields left out)."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "time": rfc3339(self.time_ns),
            "verdict": self.verdict.value,
        }
        if self.drop_reason:
            out["drop_reason"] = int(self.drop_reason)
            out["drop_reason_desc"] = self.drop_reason.name
        if self.l7 is not None:
            out["Type"] = "L7"
            out["event_type"] = {"type": EVENT_ACCESS_LOG}
        else:
            out["event_type"] = {"type": EVENT_DROP if self.dropped else EVENT_POLICY_VERDICT}
        if self.node_name:
            out["node_name"] = self.node_name
        out["IP"] = {
            "source": self.ip_source,
            "destination": self.ip_destination,
            "ipVersion": "IPv6" if ":" in self.ip_source else "IPv4",
        }
        out["l4"] = self.l4.to_json()
        out["source"] = self.source.to_json()
        out["destination"] = self.destination.to_json()
        out["traffic_direction"] = self.traffic_direction.value
        if self.l7 is not None:
            out["l7"] = self.l7.to_json()
        out["policy_match_type"] = int(self.policy_match_type)
        out["is_reply"] = False
        for name in (
            "ingress_allowed_by",
            "egress_allowed_by",
            "ingress_denied_by",
            "egress_denied_by",
            "default_deny_by",
        ):
            refs = getattr(self, name)
            if refs:
                out[name] = [r.to_json() for r in refs]
        if self.policy_log:
            out["policy_log"] = list(self.policy_log)
        if self.world_cidr:
            out["world"] = {"cidr": self.world_cidr}
        if self.suppressed:
            out["suppressed"] = self.suppressed
        if self.note:
            out["note"] = self.note
        if self.source_names:
            out["source_names"] = list(self.source_names)
        if self.destination_names:
            out["destination_names"] = list(self.destination_names)
        if self.source_service is not None:
            out["source_service"] = self.source_service.to_json()
        if self.destination_service is not None:
            out["destination_service"] = self.destination_service.to_json()
        out.update(self.extra)
        return out


_KNOWN = {
    "seq",
    "time",
    "verdict",
    "drop_reason",
    "drop_reason_desc",
    "event_type",
    "Type",
    "l7",
    "node_name",
    "IP",
    "l4",
    "source",
    "destination",
    "traffic_direction",
    "policy_match_type",
    "is_reply",
    "ingress_allowed_by",
    "egress_allowed_by",
    "ingress_denied_by",
    "egress_denied_by",
    "default_deny_by",
    "policy_log",
    "world",
    "suppressed",
    "note",
    "source_names",
    "destination_names",
    "source_service",
    "destination_service",
}


def flow_from_json(d: dict[str, Any]) -> Flow:
    """Read back :meth:`Flow.to_json` (unknown keys are kept in ``extra``)."""

    def refs(name: str) -> tuple[PolicyRef, ...]:
        return tuple(PolicyRef.from_json(r) for r in d.get(name, ()))

    ip = d.get("IP", {})
    return Flow(
        seq=int(d.get("seq", 0)),
        time_ns=parse_rfc3339(d["time"]),
        verdict=Verdict(d["verdict"]),
        traffic_direction=TrafficDirection(d["traffic_direction"]),
        source=Endpoint.from_json(d.get("source", {})),
        destination=Endpoint.from_json(d.get("destination", {})),
        ip_source=ip.get("source", ""),
        ip_destination=ip.get("destination", ""),
        l4=L4.from_json(d["l4"]),
        drop_reason=DropReason(int(d.get("drop_reason", 0))),
        policy_match_type=MatchType(int(d.get("policy_match_type", 0))),
        node_name=d.get("node_name", ""),
        ingress_allowed_by=refs("ingress_allowed_by"),
        egress_allowed_by=refs("egress_allowed_by"),
        ingress_denied_by=refs("ingress_denied_by"),
        egress_denied_by=refs("egress_denied_by"),
        default_deny_by=refs("default_deny_by"),
        policy_log=tuple(str(v) for v in d.get("policy_log", ())),
        world_cidr=d.get("world", {}).get("cidr", ""),
        suppressed=int(d.get("suppressed", 0)),
        note=d.get("note", ""),
        l7=l7_from_json(d["l7"]) if "l7" in d else None,
        source_names=tuple(str(n) for n in d.get("source_names", ())),
        destination_names=tuple(str(n) for n in d.get("destination_names", ())),
        source_service=Service.from_json(d.get("source_service")),
        destination_service=Service.from_json(d.get("destination_service")),
        extra={k: v for k, v in d.items() if k not in _KNOWN},
    )


def rfc3339(time_ns: int) -> str:
    """``2026-11-27T07:40:01.123456789Z`` (UTC, nanoseconds, as Hubble prints times)."""
    secs, ns = divmod(time_ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"


def parse_rfc3339(text: str) -> int:
    """ns since the epoch of an RFC 3339 time (any fraction length; ``Z`` or an offset)."""
    t = text.strip()
    frac_ns = 0
    if "." in t:
        head, rest = t.split(".", 1)
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        frac_ns = int((digits + "000000000")[:9])
        t = head + rest
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    when = dt.datetime.fromisoformat(t)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp()) * 1_000_000_000 + frac_ns
