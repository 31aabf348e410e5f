"""Lint findings: stable rule ids, what each one means, and the finding value."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    ERROR = "error"  # real Cilium would refuse or misread the manifest
    WARNING = "warning"  # valid, but very likely not what the author meant
    INFO = "info"


# Stable ids: never renumber; retire an id rather than reuse it.
RULES: dict[str, tuple[Severity, str]] = {
    "CL001": (Severity.ERROR, "field that Cilium does not have (e.g. deny:, fromPorts)"),
    "CL002": (Severity.ERROR, "policy that real Cilium would reject"),
    "CL003": (Severity.WARNING, "policy that selects no pod"),
    "CL004": (Severity.WARNING, "peer selector that matches no pod"),
    "CL005": (Severity.WARNING, "allow rule fully shadowed by a deny"),
    "CL006": (Severity.WARNING, "deny-only policy that turns on default deny for the whole direction"),
    "CL007": (Severity.WARNING, "egress default deny without a DNS (53/UDP) allow"),
    "CL008": (Severity.WARNING, "named port that maps to different numbers across pods"),
    "CL009": (Severity.WARNING, "deprecated fromRequires/toRequires"),
    "CL010": (Severity.WARNING, "CiliumNetworkPolicy endpointSelector that names a namespace"),
    "CL011": (Severity.WARNING, "policy direction contradicts its name"),
    "CL012": (Severity.WARNING, "ICMP type 0 (EchoReply), which Cilium 1.18 reads as every ICMP type"),
    "CL013": (Severity.WARNING, "Kafka/l7proto rules, which cilia has no proxy for (enforced at L4 only)"),
    "CL014": (Severity.WARNING, "IPv4-mapped IPv6 CIDR (::ffff:a.b.c.d), which matches no IPv4 traffic"),
    "CL015": (Severity.WARNING, "cidrGroupRef/cidrGroupSelector that matches no CiliumCIDRGroup"),
    "CL016": (Severity.WARNING, "object defined twice: a later document of the same name replaces it"),
    "CL017": (Severity.WARNING, "host policy nodeSelector that selects no Node (label filter included)"),
    "CL018": (Severity.WARNING, "fromNodes/toNodes selector that selects no other Node"),
}


@dataclass(frozen=True)
class Finding:
    """One lint finding: where (file:line:col, field path, policy), what and why, and how to fix it."""

    rule: str
    file: str
    line: int
    column: int
    policy: str  # Kind/namespace/name
    path: str
    message: str
    fix: str

    @property
    def severity(self) -> Severity:
        return RULES[self.rule][0]

    def location(self) -> str:
        return f"{self.file}:{self.line}:{self.column}" if self.line else self.file

    def sort_key(self) -> tuple[Any, ...]:
        return (self.file, self.line, self.column, self.rule, self.path, self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"severity": str(self.severity), **asdict(self)}
