"""The events ring buffer (``cilia_events``) and its per-endpoint rate limit (``cilia_evrl``).

The datapath emits an event for every drop and every allowed new connection (semantics.md §4.9),
at most ``events_per_sec`` per endpoint; events suppressed by the limit are counted and the next
emitted event of that endpoint carries the count.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
from collections.abc import Callable
from ctypes import Structure, c_uint8, c_uint16, c_uint32, c_uint64
from dataclasses import dataclass

from cilia.datapath.bpf.libbpf import MapFd, RingBuffer
from cilia.policy.types import Direction, DropReason, MatchType

MAP = "cilia_events"
RATELIMIT_MAP = "cilia_evrl"
RING_BYTES = 1 << 20

F_ALLOWED = 0x1
F_AUDITED = 0x2
F_EXACT = 0x4
F_NO_ENDPOINT = 0x8
F_NOT_READY = 0x10
F_REDIRECTED = 0x20


class RawEvent(Structure):
    _fields_ = [
        ("ts_ns", c_uint64),
        ("ep_id", c_uint32),
        ("ifindex", c_uint32),
        ("src_identity", c_uint32),
        ("dst_identity", c_uint32),
        ("cookie", c_uint32),
        ("suppressed", c_uint32),
        ("saddr", c_uint8 * 16),
        ("daddr", c_uint8 * 16),
        ("sport", c_uint16),
        ("dport", c_uint16),
        ("reason", c_uint16),
        ("proto", c_uint8),
        ("family", c_uint8),
        ("direction", c_uint8),
        ("match_type", c_uint8),
        ("lpm_prefix", c_uint8),
        ("flags", c_uint8),
        ("proxy_port", c_uint16),  # in the struct's tail padding: the size stays 80
    ]


class RatelimitValue(Structure):
    _fields_ = [("window_ns", c_uint64), ("count", c_uint32), ("suppressed", c_uint32)]


EVENT_SIZE = ctypes.sizeof(RawEvent)
RATELIMIT_VALUE_SIZE = ctypes.sizeof(RatelimitValue)


@dataclass(frozen=True)
class PolicyEvent:
    """One decoded datapath event: a drop or an allowed new connection."""

    ts_ns: int
    endpoint_id: int  # 0 when the device had no endpoint entry
    ifindex: int
    direction: Direction
    allowed: bool
    audited: bool
    reason: DropReason
    match_type: MatchType
    exact: bool  # decided by the exact-identity entry (else the wildcard one)
    lpm_prefix: int
    cookie: int  # names the rules via the cookie table; 0 = none
    src_identity: int
    dst_identity: int
    family: int
    proto: int
    src: str
    dst: str
    sport: int
    dport: int  # ICMP: the type
    suppressed_before: int
    no_endpoint: bool
    not_ready: bool
    redirected: bool = False  # allowed and sent to the node's proxy on proxy_port (Hubble: REDIRECTED)
    proxy_port: int = 0


def decode(data: bytes) -> PolicyEvent:
    """Decode one ring buffer record."""
    if len(data) < EVENT_SIZE:
        raise ValueError(f"event record of {len(data)} bytes, expected {EVENT_SIZE}")
    r = RawEvent.from_buffer_copy(data[:EVENT_SIZE])
    n = 4 if r.family == 4 else 16

    def addr(raw: ctypes.Array) -> str:
        return str(ipaddress.ip_address(bytes(raw)[:n])) if r.family in (4, 6) else ""

    return PolicyEvent(
        ts_ns=int(r.ts_ns), endpoint_id=int(r.ep_id), ifindex=int(r.ifindex),
        direction=Direction(r.direction), allowed=bool(r.flags & F_ALLOWED),
        audited=bool(r.flags & F_AUDITED), reason=DropReason(r.reason) if not r.flags & F_ALLOWED or
        r.flags & F_AUDITED else DropReason.NONE, match_type=MatchType(r.match_type),
        exact=bool(r.flags & F_EXACT), lpm_prefix=int(r.lpm_prefix), cookie=int(r.cookie),
        src_identity=int(r.src_identity), dst_identity=int(r.dst_identity), family=int(r.family),
        proto=int(r.proto), src=addr(r.saddr), dst=addr(r.daddr), sport=socket.ntohs(r.sport),
        dport=socket.ntohs(r.dport), suppressed_before=int(r.suppressed),
        no_endpoint=bool(r.flags & F_NO_ENDPOINT), not_ready=bool(r.flags & F_NOT_READY),
        redirected=bool(r.flags & F_REDIRECTED), proxy_port=int(r.proxy_port),
    )


class EventsReader:
    """Consumes the ring buffer; ``poll`` calls ``callback`` for each decoded event."""

    def __init__(self, m: MapFd, callback: Callable[[PolicyEvent], None]) -> None:
        self.m = m
        self.rb = RingBuffer(m.fd, lambda data: callback(decode(data)))

    def poll(self, timeout_ms: int = 100) -> int:
        n = self.rb.poll(timeout_ms)
        if self.rb.errors:
            raise self.rb.errors.pop(0)
        return n

    def close(self) -> None:
        self.rb.close()


def dump(m: MapFd) -> list[PolicyEvent]:
    """Drain the events currently queued (this consumes them)."""
    out: list[PolicyEvent] = []
    reader = EventsReader(m, out.append)
    try:
        while reader.poll(0) > 0:
            pass
    finally:
        reader.close()
    return out
