"""What decided a flow, in one line and as data: the dropping side's deny rule or default deny (with
the policies that turned it on), or the allowing rules of each side that has a policy. Shared by
``cilia trace`` without ``--port`` (one verdict per port class) and the cells of ``cilia
connectivity -o json``, so both name the same rule for the same flow."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cilia.analyze.flow import FlowTrace, SideState, SideVerdict
from cilia.policy.types import DropReason, RuleRef


def _names(refs: Iterable[RuleRef]) -> str:
    return "; ".join(r.describe() for r in refs)


def _why(side: SideVerdict) -> tuple[str, tuple[RuleRef, ...], str]:
    """(reason word, rules, text) of one side's verdict."""
    if not side.allowed:
        if side.refused_at_l7:
            return "l7-refused", side.rules, f"refused at L7 ({_names(side.rules)})"
        if side.reason == DropReason.POLICY_DENY:
            return "deny-rule", side.rules, f"denied by {_names(side.rules)}"
        if side.reason == DropReason.AUTH_REQUIRED:
            return "auth-required", side.rules, f"needs authentication ({_names(side.rules)})"
        by = _names(side.default_deny_by) or "enforcement mode always"
        return "default-deny", side.default_deny_by, f"default deny ({by})"
    if side.state == SideState.NO_POLICY:
        return "no-policy", (), "no policy of its own"
    if side.state == SideState.UNENFORCED:
        return "not-enforced", (), "not enforced"
    if side.rules and all(r.index < 0 for r in side.rules):  # synthetic entries (allow-localhost, …)
        return "default-allow", side.rules, f"allowed ({_names(side.rules)})"
    return "allow-rule", side.rules, f"allowed by {_names(side.rules) or 'default allow'}"


def side_summary(side: SideVerdict) -> dict[str, Any]:
    """One side of a flow as data: who, verdict, why and the rules."""
    reason, rules, text = _why(side)
    return {
        "direction": side.direction.label,
        "endpoint": side.owner,
        "allowed": side.allowed,
        "reason": reason,
        "rules": [r.describe() for r in rules],
        "text": text,
    }


def decided_by(flow: FlowTrace) -> dict[str, Any]:
    """The flow's verdict and what decided it: the dropping side (``side`` names it) or, for an
    allowed flow, both sides (``side`` is None)."""
    dropping = flow.decided_by
    sides = [side_summary(flow.egress), side_summary(flow.ingress)]
    if dropping is not None:
        which = sides[0] if dropping is flow.egress else sides[1]
        return {
            "allowed": False,
            "side": which["direction"],
            "text": f"{which['direction']} of {which['endpoint']}: {which['text']}",
            "sides": sides,
        }
    parts = [f"{s['direction']} of {s['endpoint']}: {s['text']}" for s in sides if s["reason"] != "no-policy"]
    return {
        "allowed": True,
        "side": None,
        "text": "; ".join(parts) or "no policy on either side",
        "sides": sides,
    }
