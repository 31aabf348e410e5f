"""The metrics map (``cilia_metrics``): per-CPU packet/byte counters by direction × verdict/reason,
plus the lost (ring buffer full) and suppressed (rate limit) event counters."""

from __future__ import annotations

import ctypes
from ctypes import Structure, c_uint32, c_uint64
from typing import NamedTuple

from cilia.datapath.bpf.libbpf import MapFd, num_possible_cpus
from cilia.policy.types import Direction, DropReason

MAP = "cilia_metrics"
MAX_ENTRIES = 64
DIR_STRIDE = 8
EVENTS_LOST = 16
EVENTS_SUPPRESSED = 17

# slot -> (verdict, reason) as `cilium bpf metrics list` names them
SLOTS: dict[int, tuple[str, DropReason | str]] = {
    0: ("forwarded", DropReason.NONE),
    1: ("dropped", DropReason.POLICY_DENIED),
    2: ("dropped", DropReason.POLICY_DENY),
    3: ("dropped", DropReason.AUTH_REQUIRED),
    4: ("audited", DropReason.NONE),  # would have been dropped; audit mode let it through
    5: ("forwarded", "reply"),  # conntrack reply, no policy lookup
    6: ("dropped", "unknown endpoint"),
    7: ("dropped", "endpoint policy not ready"),
}
# the second per-direction block (index EXT_BASE + direction * DIR_STRIDE + slot)
EXT_BASE = 32
EXT_SLOTS: dict[int, tuple[str, DropReason | str]] = {
    0: ("dropped", DropReason.OUTSIDE_LAB),
    1: ("redirected", "to proxy"),
    2: ("dropped", DropReason.PROXY_LOOKUP_FAILED),
}


class MetricValue(Structure):
    _fields_ = [("packets", c_uint64), ("bytes", c_uint64)]


VALUE_SIZE = ctypes.sizeof(MetricValue)


class MetricRow(NamedTuple):
    direction: str  # ingress | egress | "" for event counters
    verdict: str
    reason: str
    packets: int
    bytes: int


def _reason_text(r: DropReason | str) -> str:
    if isinstance(r, DropReason):
        return r.description if r else ""
    return r


class MetricsMap:
    """Typed access to the per-CPU counters (summed over the possible CPUs)."""

    def __init__(self, m: MapFd) -> None:
        self.m = m
        self.ncpu = num_possible_cpus()

    def read(self, index: int) -> tuple[int, int]:
        vals = (MetricValue * self.ncpu)()
        if not self.m.lookup(c_uint32(index), vals):
            return (0, 0)
        return (sum(v.packets for v in vals), sum(v.bytes for v in vals))

    def dump(self, include_zero: bool = False) -> list[MetricRow]:
        """Every counter row, in index order."""
        rows = []
        for d in Direction:
            for slot, (verdict, reason) in SLOTS.items():
                pk, by = self.read(int(d) * DIR_STRIDE + slot)
                if pk or include_zero:
                    rows.append(MetricRow(d.label, verdict, _reason_text(reason), pk, by))
            for slot, (verdict, reason) in EXT_SLOTS.items():
                pk, by = self.read(EXT_BASE + int(d) * DIR_STRIDE + slot)
                if pk or include_zero:
                    rows.append(MetricRow(d.label, verdict, _reason_text(reason), pk, by))
        for idx, name in ((EVENTS_LOST, "events lost"), (EVENTS_SUPPRESSED, "events suppressed")):
            pk, _ = self.read(idx)
            if pk or include_zero:
                rows.append(MetricRow("", name, "", pk, 0))
        return rows

    def counts(self) -> dict[tuple[str, str, str], int]:
        """``{(direction, verdict, reason): packets}`` for every non-zero counter."""
        return {(r.direction, r.verdict, r.reason): r.packets for r in self.dump()}
