"""Flows: the datapath's ring-buffer events, decoded once, named, and kept in a bounded ring.

This module is the one place that turns a raw datapath event into a flow record (endpoint and pod
names, identities, verdict, drop reason, the rules that decided); ``cilia observe`` builds on the
records served by the agent at ``/v1/flows``.

The agent's DNS proxy reports what it sees as :class:`cilia.proxy.records.DnsRecord` values (a
query, its answer, a refused query); a sink that can show them has ``ingest_dns``
(:class:`DnsSink`), as the observe pipeline does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from cilia.policy.types import DropReason, MatchType
from cilia.proxy.records import DnsRecord

PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}


@dataclass(frozen=True)
class FlowEndpoint:
    ip: str
    port: int
    identity: int
    pod: str = ""  # namespace/name when the address is a local pod


@dataclass(frozen=True)
class Flow:
    """One decoded verdict event, shaped after Hubble's flow (semantics.md §8)."""

    seq: int
    time: float
    verdict: str  # FORWARDED | DROPPED | AUDIT
    drop_reason: int
    drop_reason_desc: str
    direction: str  # ingress | egress (of the endpoint that decided)
    proto: str
    source: FlowEndpoint
    destination: FlowEndpoint
    match_type: str
    endpoint_id: int
    rules: tuple[str, ...] = ()  # RuleRef.describe() of the entry that decided

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rules"] = list(self.rules)
        return data


def verdict_name(allowed: bool, audited: bool) -> str:
    if audited:
        return "AUDIT"
    return "FORWARDED" if allowed else "DROPPED"


def reason_fields(reason: int) -> tuple[int, str]:
    try:
        r = DropReason(reason)
    except ValueError:
        return reason, f"reason {reason}"
    return int(r), r.name if r else ""


def match_type_name(value: int) -> str:
    try:
        return MatchType(value).hubble_name
    except ValueError:
        return str(value)


class FlowRing:
    """The last ``capacity`` flows, each with a sequence number for resumable reads."""

    def __init__(self, capacity: int = 4096) -> None:
        self._ring: deque[Flow] = deque(maxlen=capacity)
        self._next = 1
        self._lock = threading.Lock()
        self.lost = 0  # events the datapath reported as lost (ring buffer full)

    def next_seq(self) -> int:
        with self._lock:
            seq = self._next
            self._next += 1
            return seq

    def add(self, flow: Flow) -> None:
        with self._lock:
            self._ring.append(flow)

    def since(self, seq: int, limit: int) -> list[Flow]:
        """Flows with a sequence number greater than ``seq``, oldest first, at most ``limit``."""
        with self._lock:
            out = [f for f in self._ring if f.seq > seq]
        return out[:limit] if limit >= 0 else out

    def snapshot(self, since: int, limit: int) -> dict[str, Any]:
        flows = self.since(since, limit)
        return {
            "flows": [f.to_json() for f in flows],
            "last_seq": flows[-1].seq if flows else since,
            "lost": self.lost,
            "time": time.time(),
        }


def flow_from_event(
    ev: Any, seq: int, pods_by_ip: Mapping[str, str], rules_for: Callable[[int], Any] | None = None
) -> Flow:
    """Decode one datapath event (:class:`cilia.datapath.maps.events.PolicyEvent`): name the pods by
    address and the rules by the entry's cookie."""
    rules: tuple[str, ...] = ()
    if ev.cookie and rules_for is not None:
        rules = tuple(sorted(r.describe() for r in rules_for(ev.cookie) or ()))
    dropped = not ev.allowed
    reason, desc = reason_fields(int(ev.reason))
    return Flow(
        seq=seq,
        time=time.time(),
        verdict=verdict_name(ev.allowed, ev.audited),
        drop_reason=reason if dropped or ev.audited else 0,
        drop_reason_desc=desc if dropped or ev.audited else "",
        direction=ev.direction.label,
        proto=PROTO_NAMES.get(ev.proto, str(ev.proto)),
        source=FlowEndpoint(ev.src, ev.sport, ev.src_identity, pods_by_ip.get(ev.src, "")),
        destination=FlowEndpoint(ev.dst, ev.dport, ev.dst_identity, pods_by_ip.get(ev.dst, "")),
        match_type=match_type_name(int(ev.match_type)),
        endpoint_id=ev.endpoint_id,
        rules=rules,
    )


class DnsSink(Protocol):
    """A flow sink that also shows the DNS proxy's records."""

    def ingest_dns(self, record: DnsRecord) -> Any: ...


class FlowSink(Protocol):
    """Where the agent sends datapath events and what ``GET /v1/flows`` serves."""

    def ingest(self, event: Any) -> Any: ...

    def snapshot(self, since: int, limit: int) -> dict[str, Any]: ...


class RingSink:
    """The agent's own flow sink: :func:`flow_from_event` into a :class:`FlowRing`. ``pods``
    names local addresses (``ip -> namespace/pod``) at decoding time; ``rules_for`` maps a rule
    cookie to the rules (the datapath's cookie table)."""

    def __init__(
        self,
        pods: Callable[[], Mapping[str, str]],
        rules_for: Callable[[int], Any] | None = None,
        capacity: int = 4096,
    ) -> None:
        self.ring = FlowRing(capacity)
        self.pods = pods
        self.rules_for = rules_for

    def ingest(self, event: Any) -> Flow:
        flow = flow_from_event(event, self.ring.next_seq(), self.pods(), self.rules_for)
        self.ring.add(flow)
        return flow

    def snapshot(self, since: int, limit: int) -> dict[str, Any]:
        return self.ring.snapshot(since, limit)
