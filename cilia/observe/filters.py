"""Flow filters, as ``hubble observe`` names them (``--verdict``, ``--from-pod``, ``--port`` …).

A :class:`FlowFilter` is a value; :meth:`FlowFilter.matches` says whether one flow passes. All given
criteria must hold (AND); a criterion given several times (e.g. two ``--verdict``) passes if any of
its values does (OR).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cilia.identity.reserved import ReservedIdentity
from cilia.observe.flow import (
    L4_NAMES,
    DnsInfo,
    Endpoint,
    Flow,
    HttpInfo,
    Service,
    TrafficDirection,
    Verdict,
    parse_rfc3339,
)
from cilia.policy.types import DropReason

DEFAULT_NAMESPACE = "default"
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h|d)")  # ASCII digits: \d takes "٣"
_PORT = re.compile(r"\A[0-9]{1,5}\Z")  # str.isdigit() takes "²", which int() then refuses
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
PROTOCOLS = {name.lower(): num for num, name in L4_NAMES.items()} | {"icmp": 1}
L7_PROTOCOLS = ("dns", "http")  # --protocol dns|http: the proxies' flows (hubble's l7 protocol names)
# --type, as hubble names event types: the proxy's L7 records, drops, policy verdicts of allowed flows
EVENT_TYPES = ("l7", "drop", "policy-verdict")
TCP_FLAGS = ("SYN", "FIN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")  # hubble's --tcp-flags names
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FilterError(ValueError):
    """A filter value that cannot be understood (the message names the flag and the value)."""


def parse_duration_ns(text: str) -> int:
    """``5m``, ``1h30m``, ``90s``, ``250ms`` → nanoseconds."""
    t = text.strip()
    pos, total = 0, 0
    for m in _DURATION.finditer(t):
        if m.start() != pos:
            break
        total += int(float(m.group(1)) * _UNIT_NS[m.group(2)])
        pos = m.end()
    if pos != len(t) or not t:
        raise FilterError(f"{text!r} is not a duration (examples: 30s, 5m, 1h30m)")
    return total


def parse_time_ns(text: str, now_ns: int) -> int:
    """A point in time: a duration ago (``5m``) or an RFC 3339 time (``2026-11-27T07:40:00Z``)."""
    try:
        return now_ns - parse_duration_ns(text)
    except FilterError:
        pass
    try:
        return parse_rfc3339(text)
    except ValueError:
        raise FilterError(
            f"{text!r} is neither a duration (5m) nor an RFC 3339 time (2026-11-27T07:40:00Z)"
        ) from None


@dataclass(frozen=True)
class PodMatch:
    """``[namespace/]name-prefix``; the namespace defaults to ``default``, as in hubble."""

    namespace: str
    prefix: str

    @classmethod
    def parse(cls, text: str) -> PodMatch:
        ns, sep, name = text.partition("/")
        if not sep:
            ns, name = DEFAULT_NAMESPACE, text
        if not ns:
            raise FilterError(f"pod {text!r}: empty namespace")
        return cls(ns, name)

    def matches(self, ep: Endpoint) -> bool:
        return bool(ep.pod_name) and ep.namespace == self.namespace and ep.pod_name.startswith(self.prefix)

    def matches_service(self, svc: Service | None) -> bool:
        """The same ``[namespace/]name-prefix`` test on a flow side's Service (``--from-service``)."""
        return svc is not None and svc.namespace == self.namespace and svc.name.startswith(self.prefix)


@dataclass(frozen=True)
class LabelMatch:
    """``key=value`` (any source) or ``source:key=value``; ``key`` alone: the key is present."""

    source: str
    key: str
    value: str | None

    @classmethod
    def parse(cls, text: str) -> LabelMatch:
        kv, eq, value = text.partition("=")
        source, colon, key = kv.partition(":")
        if not colon:
            source, key = "", kv
        if not key:
            raise FilterError(f"label {text!r}: expected key=value")
        return cls(source, key, value if eq else None)

    def matches(self, ep: Endpoint) -> bool:
        for lb in ep.labels:
            src, _, kv = lb.partition(":")
            key, _, value = kv.partition("=")
            if (
                key == self.key
                and (not self.source or src == self.source)
                and (self.value is None or value == self.value)
            ):
                return True
        return False


@dataclass(frozen=True)
class HttpMatch:
    """hubble's HTTP filters: ``--http-method`` (exact, any case), ``--http-status`` (a code or a
    prefix such as ``4+``), ``--http-path`` / ``--http-url`` (regexes found anywhere in the value).
    Every given kind must hold; several values of one kind are alternatives."""

    methods: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    paths: tuple[re.Pattern[str], ...] = ()
    urls: tuple[re.Pattern[str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.methods or self.statuses or self.paths or self.urls)

    @classmethod
    def build(cls, methods: Iterable[str], statuses: Iterable[str], paths: Iterable[str],
              urls: Iterable[str]) -> HttpMatch:
        sts = []
        for st in statuses:
            if not re.fullmatch(r"[1-5]([0-9][0-9]|[0-9]\+|\+)", st):
                raise FilterError(f"--http-status {st!r}: expected a code (404) or a prefix (4+, 50+)")
            sts.append(st)

        def compiled(flag: str, values: Iterable[str]) -> tuple[re.Pattern[str], ...]:
            out = []
            for v in values:
                try:
                    out.append(re.compile(v))
                except re.error as e:
                    raise FilterError(f"{flag} {v!r}: not a regular expression: {e}") from None
            return tuple(out)

        return cls(tuple(m.upper() for m in methods), tuple(sts), compiled("--http-path", paths),
                   compiled("--http-url", urls))  # fmt: skip

    def matches(self, f: Flow) -> bool:
        h = f.l7
        if not isinstance(h, HttpInfo):
            return False
        code = str(h.code)
        return (
            (not self.methods or h.method.upper() in self.methods)
            and (not self.statuses or any(code.startswith(s.rstrip("+")) if s.endswith("+") else code == s
                                          for s in self.statuses))
            and (not self.paths or any(p.search(h.path) for p in self.paths))
            and (not self.urls or any(u.search(h.url) for u in self.urls))
        )  # fmt: skip


@dataclass(frozen=True)
class FlowFilter:
    """What ``cilia observe`` keeps. Empty tuples / None mean "no constraint"."""

    verdicts: tuple[Verdict, ...] = ()
    from_pods: tuple[PodMatch, ...] = ()
    to_pods: tuple[PodMatch, ...] = ()
    pods: tuple[PodMatch, ...] = ()  # either side
    namespaces: tuple[str, ...] = ()  # either side
    from_labels: tuple[LabelMatch, ...] = ()
    to_labels: tuple[LabelMatch, ...] = ()
    protocols: tuple[int, ...] = ()
    l7_protocols: tuple[str, ...] = ()  # "dns"; OR-ed with ``protocols``, as one --protocol flag
    types: tuple[str, ...] = ()  # EVENT_TYPES
    ports: tuple[int, ...] = ()  # either side's port
    since_ns: int | None = None
    until_ns: int | None = None
    http: HttpMatch = HttpMatch()
    ips: tuple[Network, ...] = ()  # either side's address (an address or a CIDR)
    from_ips: tuple[Network, ...] = ()
    to_ips: tuple[Network, ...] = ()
    identities: tuple[int, ...] = ()  # either side's security identity
    from_identities: tuple[int, ...] = ()
    to_identities: tuple[int, ...] = ()
    directions: tuple[TrafficDirection, ...] = ()
    drop_reasons: tuple[DropReason, ...] = ()
    tcp_flags: tuple[frozenset[str], ...] = ()  # each: flags that must all be set; any of them
    fqdns: tuple[re.Pattern[str], ...] = ()  # either side's DNS names (hubble's patterns)
    from_fqdns: tuple[re.Pattern[str], ...] = ()
    to_fqdns: tuple[re.Pattern[str], ...] = ()
    workloads: tuple[tuple[str, str], ...] = ()  # (kind or "", name): either side's owner
    from_workloads: tuple[tuple[str, str], ...] = ()
    to_workloads: tuple[tuple[str, str], ...] = ()
    services: tuple[PodMatch, ...] = ()  # either side's Service ([NS/]NAME prefix)
    from_services: tuple[PodMatch, ...] = ()
    to_services: tuple[PodMatch, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        verdicts: Iterable[str] = (),
        from_pods: Iterable[str] = (),
        to_pods: Iterable[str] = (),
        pods: Iterable[str] = (),
        namespaces: Iterable[str] = (),
        from_labels: Iterable[str] = (),
        to_labels: Iterable[str] = (),
        protocols: Iterable[str] = (),
        types: Iterable[str] = (),
        ports: Iterable[int | str] = (),
        since: str | None = None,
        until: str | None = None,
        now_ns: int = 0,
        http_methods: Iterable[str] = (),
        http_statuses: Iterable[str] = (),
        http_paths: Iterable[str] = (),
        http_urls: Iterable[str] = (),
        ips: Iterable[str] = (),
        from_ips: Iterable[str] = (),
        to_ips: Iterable[str] = (),
        identities: Iterable[str] = (),
        from_identities: Iterable[str] = (),
        to_identities: Iterable[str] = (),
        directions: Iterable[str] = (),
        drop_reasons: Iterable[str] = (),
        tcp_flags: Iterable[str] = (),
        fqdns: Iterable[str] = (),
        from_fqdns: Iterable[str] = (),
        to_fqdns: Iterable[str] = (),
        workloads: Iterable[str] = (),
        from_workloads: Iterable[str] = (),
        to_workloads: Iterable[str] = (),
        services: Iterable[str] = (),
        from_services: Iterable[str] = (),
        to_services: Iterable[str] = (),
    ) -> FlowFilter:
        """A filter from the CLI's strings (raises :class:`FilterError` naming a bad value)."""
        vs = []
        for v in verdicts:
            try:
                vs.append(Verdict(v.upper()))
            except ValueError:
                raise FilterError(f"--verdict {v!r}: use FORWARDED, DROPPED or AUDIT") from None
        protos, l7 = [], []
        for p in protocols:
            if p.lower() in L7_PROTOCOLS:
                l7.append(p.lower())
                continue
            num = PROTOCOLS.get(p.lower())
            if num is None:
                raise FilterError(
                    f"--protocol {p!r}: use one of tcp, udp, sctp, icmp (icmpv4), icmpv6, dns, http"
                )
            protos.append(num)
        kinds = []
        for t in types:
            if t.lower() not in EVENT_TYPES:
                raise FilterError(f"--type {t!r}: use one of {', '.join(EVENT_TYPES)}")
            kinds.append(t.lower())
        port_nums = []
        for p in ports:
            if not _PORT.match(str(p)) or not 0 <= int(p) <= 65535:
                raise FilterError(f"--port {p!r}: expected a number 0..65535")
            port_nums.append(int(p))
        return cls(
            verdicts=tuple(vs),
            from_pods=tuple(PodMatch.parse(p) for p in from_pods),
            to_pods=tuple(PodMatch.parse(p) for p in to_pods),
            pods=tuple(PodMatch.parse(p) for p in pods),
            namespaces=tuple(namespaces),
            from_labels=tuple(LabelMatch.parse(lb) for lb in from_labels),
            to_labels=tuple(LabelMatch.parse(lb) for lb in to_labels),
            protocols=tuple(protos),
            l7_protocols=tuple(l7),
            types=tuple(kinds),
            ports=tuple(port_nums),
            since_ns=parse_time_ns(since, now_ns) if since else None,
            until_ns=parse_time_ns(until, now_ns) if until else None,
            http=HttpMatch.build(http_methods, http_statuses, http_paths, http_urls),
            ips=tuple(_network("--ip", v) for v in ips),
            from_ips=tuple(_network("--from-ip", v) for v in from_ips),
            to_ips=tuple(_network("--to-ip", v) for v in to_ips),
            identities=tuple(_identity("--identity", v) for v in identities),
            from_identities=tuple(_identity("--from-identity", v) for v in from_identities),
            to_identities=tuple(_identity("--to-identity", v) for v in to_identities),
            directions=tuple(_direction(v) for v in directions),
            drop_reasons=tuple(_drop_reason(v) for v in drop_reasons),
            tcp_flags=tuple(_tcp_flags(v) for v in tcp_flags),
            fqdns=tuple(_fqdn("--fqdn", v) for v in fqdns),
            from_fqdns=tuple(_fqdn("--from-fqdn", v) for v in from_fqdns),
            to_fqdns=tuple(_fqdn("--to-fqdn", v) for v in to_fqdns),
            workloads=tuple(_workload("--workload", v) for v in workloads),
            from_workloads=tuple(_workload("--from-workload", v) for v in from_workloads),
            to_workloads=tuple(_workload("--to-workload", v) for v in to_workloads),
            services=tuple(_service("--service", v) for v in services),
            from_services=tuple(_service("--from-service", v) for v in from_services),
            to_services=tuple(_service("--to-service", v) for v in to_services),
        )

    def matches(self, f: Flow) -> bool:
        src, dst = f.source, f.destination
        checks = (
            not self.verdicts or f.verdict in self.verdicts,
            not self.from_pods or any(p.matches(src) for p in self.from_pods),
            not self.to_pods or any(p.matches(dst) for p in self.to_pods),
            not self.pods or any(p.matches(src) or p.matches(dst) for p in self.pods),
            not self.namespaces or src.namespace in self.namespaces or dst.namespace in self.namespaces,
            all(lb.matches(src) for lb in self.from_labels),
            all(lb.matches(dst) for lb in self.to_labels),
            (not self.protocols and not self.l7_protocols) or f.l4.proto in self.protocols
            or ("dns" in self.l7_protocols and isinstance(f.l7, DnsInfo))
            or ("http" in self.l7_protocols and isinstance(f.l7, HttpInfo)),
            not self.http or self.http.matches(f),
            not self.types or _event_type(f) in self.types,
            not self.ports or _ports(f) & set(self.ports),
            self.since_ns is None or f.time_ns >= self.since_ns,
            self.until_ns is None or f.time_ns <= self.until_ns,
            not self.ips or _in(f.ip_source, self.ips) or _in(f.ip_destination, self.ips),
            not self.from_ips or _in(f.ip_source, self.from_ips),
            not self.to_ips or _in(f.ip_destination, self.to_ips),
            not self.identities or src.identity in self.identities or dst.identity in self.identities,
            not self.from_identities or src.identity in self.from_identities,
            not self.to_identities or dst.identity in self.to_identities,
            not self.directions or f.traffic_direction in self.directions,
            not self.drop_reasons or (f.dropped and f.drop_reason in self.drop_reasons),
            not self.tcp_flags or any(want <= _flow_tcp_flags(f) for want in self.tcp_flags),
            not self.fqdns or _named(f.source_names, self.fqdns) or _named(f.destination_names, self.fqdns),
            not self.from_fqdns or _named(f.source_names, self.from_fqdns),
            not self.to_fqdns or _named(f.destination_names, self.to_fqdns),
            not self.workloads or _owned(src, self.workloads) or _owned(dst, self.workloads),
            not self.from_workloads or _owned(src, self.from_workloads),
            not self.to_workloads or _owned(dst, self.to_workloads),
            not self.services or any(m.matches_service(f.source_service)
                                     or m.matches_service(f.destination_service) for m in self.services),
            not self.from_services or any(m.matches_service(f.source_service) for m in self.from_services),
            not self.to_services or any(m.matches_service(f.destination_service) for m in self.to_services),
        )
        return all(checks)

    def apply(self, flows: Iterable[Flow], last: int | None = None) -> list[Flow]:
        """The matching flows, oldest first; with ``last``, only the newest ``last`` of them."""
        out = [f for f in flows if self.matches(f)]
        return out[-last:] if last is not None and last > 0 else ([] if last == 0 else out)

    def stream(self, flows: Iterable[Flow]) -> Iterator[Flow]:
        return (f for f in flows if self.matches(f))


class FilterSet:
    """hubble's filters with ``--not``: a flow is shown when it passes ``include`` and does not pass
    ``exclude`` (the filter built from every flag preceded by ``--not``; as in hubble, those flags
    together make one filter — different ones AND, values of one OR — whose matches are left out)."""

    def __init__(self, include: FlowFilter, exclude: FlowFilter | None = None) -> None:
        self.include, self.exclude = include, exclude

    def matches(self, f: Flow) -> bool:
        return self.include.matches(f) and not (self.exclude is not None and self.exclude.matches(f))


def _network(flag: str, text: str) -> Network:
    """An address (a /32 or /128) or a CIDR, as hubble's IP filters take them."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False) if "/" in text else ipaddress.ip_network(
            ipaddress.ip_address(text.strip()))
    except ValueError:
        raise FilterError(f"{flag} {text!r}: expected an IP address or a CIDR (198.18.0.10, 198.19.0.0/16)") \
            from None


def _in(ip: str, nets: tuple[Network, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr.version == n.version and addr in n for n in nets)


def _identity(flag: str, text: str) -> int:
    """A numeric identity or a reserved identity's name (``world``, ``host``, ``reserved:world`` …)."""
    t = text.strip()
    if re.fullmatch(r"[0-9]{1,10}", t) and int(t) <= 0xFFFFFFFF:
        return int(t)
    name = t.lower().removeprefix("reserved:")
    for rid in ReservedIdentity:
        if rid.label_name == name:
            return int(rid)
    names = ", ".join(r.label_name for r in ReservedIdentity if r)
    raise FilterError(f"{flag} {text!r}: expected a numeric identity or one of {names}")


def _direction(text: str) -> TrafficDirection:
    try:
        return TrafficDirection(text.strip().upper())
    except ValueError:
        raise FilterError(f"--traffic-direction {text!r}: expected ingress or egress") from None


def _drop_reason(text: str) -> DropReason:
    """hubble's drop reason names (``POLICY_DENIED``, ``POLICY_DENY`` …), any case."""
    name = text.strip().upper()
    if name in DropReason.__members__ and name != "NONE":
        return DropReason[name]
    names = ", ".join(r.name for r in DropReason if r)
    raise FilterError(f"--drop-reason-desc {text!r}: expected one of {names}")


def _tcp_flags(text: str) -> frozenset[str]:
    """``SYN`` or ``SYN,ACK``: every flag of one value must be set."""
    flags = frozenset(p.strip().upper() for p in text.split(","))
    unknown = sorted(flags - set(TCP_FLAGS))
    if unknown:
        raise FilterError(f"--tcp-flags {text!r}: unknown flag {unknown[0]} (use {', '.join(TCP_FLAGS)})")
    return flags


_FQDN_PATTERN = re.compile(r"\A[-a-zA-Z0-9_.*]+\Z")


def _fqdn(flag: str, text: str) -> re.Pattern[str]:
    """A DNS name or a pattern with ``*`` (``*.example.com``): ``*`` stands for any characters a
    DNS label may hold, within one label; case-insensitive, a trailing dot optional — as hubble."""
    t = text.strip().lower().rstrip(".")
    if not t or not _FQDN_PATTERN.match(t):
        raise FilterError(f"{flag} {text!r}: expected a DNS name or a pattern such as *.example.com")
    return re.compile(r"\A" + re.escape(t).replace(r"\*", "[-a-z0-9_]*") + r"\Z")


def _named(names: tuple[str, ...], patterns: tuple[re.Pattern[str], ...]) -> bool:
    return any(p.match(n.lower().rstrip(".")) for n in names for p in patterns)


def _workload(flag: str, text: str) -> tuple[str, str]:
    """``NAME`` or ``KIND/NAME`` (``Deployment/app-a``), as hubble's workload filters."""
    kind, sep, name = text.strip().rpartition("/")
    if not name or (sep and not kind):
        raise FilterError(f"{flag} {text!r}: expected NAME or KIND/NAME (Deployment/app-a)")
    return kind, name


def _service(flag: str, text: str) -> PodMatch:
    """``[NAMESPACE/]NAME-PREFIX`` of a Service (namespace ``default`` when left out), as hubble."""
    try:
        return PodMatch.parse(text.strip())
    except FilterError:
        raise FilterError(f"{flag} {text!r}: expected [NAMESPACE/]NAME (default/backend)") from None


def _owned(ep: Endpoint, wanted: tuple[tuple[str, str], ...]) -> bool:
    return any(name == n and (not kind or kind == k) for kind, name in wanted for k, n in ep.workloads)


def _flow_tcp_flags(f: Flow) -> frozenset[str]:
    """The TCP flags a flow records: cilia's verdict events are of a connection's first packet (SYN)."""
    return frozenset({"SYN"}) if f.l4.proto == 6 and f.l4.syn else frozenset()


def _event_type(f: Flow) -> str:
    if f.l7 is not None:
        return "l7"
    return "drop" if f.dropped else "policy-verdict"


def _ports(f: Flow) -> set[int]:
    if f.l4.is_icmp:
        return set()
    return {f.l4.source_port, f.l4.destination_port}
