"""What the L7 proxy of one side of a flow does with it (:class:`L7Verdict`, a side's ``l7``).

Apart from :mod:`cilia.analyze.flow` so that a trace whose entries redirect to no proxy does not
build this class (start-up, issue 15).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cilia.policy.types import RuleRef


@dataclass(frozen=True)
class L7Verdict:
    """What the L7 proxy of one side does with the flow: the side's entry redirects the connection
    to the proxy of ``parser`` on ``proxy_port``. With a request (``decided``) the proxy's verdict
    on it; without one, only that L7 rules apply (the side's verdict is then the L4 one)."""

    parser: str  # http | tls | dns
    proxy_port: int
    decided: bool
    allowed: bool  # the proxy's verdict on the request (True when not decided)
    request: str = ""  # the request as decided ("GET /public host h", "SNI name")
    rules: tuple[RuleRef, ...] = ()  # the policies whose L7 rules allowed it / refused it / apply
    matched: str = ""  # the rule that matched (described)
    actions: tuple[str, ...] = ()  # header actions of headerMatches mismatches
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "parser": self.parser,
            "proxy_port": self.proxy_port,
            "decided": self.decided,
            "allowed": self.allowed,
        }
        if self.decided:
            out["request"] = self.request
            out["matched"] = self.matched or None
            out["actions"] = list(self.actions)
            out["reason"] = self.reason
        out["rules"] = [r.to_dict() for r in self.rules]
        return out
