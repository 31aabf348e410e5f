"""Attribution: which policies a verdict names (semantics.md §5.5, §8).

* an allow names the allow rule(s) of the entry that matched (the entry's rule cookie);
* an explicit deny (181) names the deny rule(s);
* a default deny (133) names no rule, since none matched: it names the policies that turned default
  deny on for that direction (``default_deny_by``; empty when the enforcement mode did);
* authentication required (189) names the allow rule(s) that require it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cilia.observe.flow import PolicyRef
from cilia.policy.types import DropReason, RuleRef


@dataclass(frozen=True)
class Attribution:
    allowed_by: tuple[PolicyRef, ...] = ()
    denied_by: tuple[PolicyRef, ...] = ()
    default_deny_by: tuple[PolicyRef, ...] = ()


def refs(rules: Iterable[RuleRef], revision: int = 0) -> tuple[PolicyRef, ...]:
    """Hubble Policy records of rules, sorted, one per distinct rule."""
    return tuple(PolicyRef.of(r, revision) for r in sorted(set(rules)))


def attribute(
    reason: DropReason, rules: Iterable[RuleRef], default_deny_by: Iterable[RuleRef], revision: int = 0
) -> Attribution:
    """The attribution of one verdict: ``reason`` is NONE for an allow, ``rules`` are the rules of
    the entry that decided (the cookie's), ``default_deny_by`` the owner's for that direction."""
    if reason == DropReason.POLICY_DENY:
        return Attribution(denied_by=refs(rules, revision))
    if reason == DropReason.POLICY_DENIED:
        return Attribution(default_deny_by=refs(default_deny_by, revision))
    return Attribution(allowed_by=refs(rules, revision))
