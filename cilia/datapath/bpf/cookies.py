"""Rule cookies: a u32 per distinct set of rules, so a datapath event can name the rules that decided.

The kernel stores only the cookie; the cookie → rules table lives in user space and is persisted
as JSON (atomic rename) so that a restarted process can still name the rules of entries and events
produced before it started. Cookie 0 means "no rules".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cilia.policy.types import RuleRef


class CookieTable:
    """Allocates and remembers rule cookies; ``save()`` persists new allocations."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._by_rules: dict[frozenset[RuleRef], int] = {frozenset(): 0}
        self._by_cookie: dict[int, frozenset[RuleRef]] = {0: frozenset()}
        self._next = 1
        self._dirty = False
        if path is not None and path.exists():
            data = json.loads(path.read_text())
            for cookie_s, rules in data["cookies"].items():
                rs = frozenset(RuleRef(*r) for r in rules)
                self._by_rules[rs] = int(cookie_s)
                self._by_cookie[int(cookie_s)] = rs
            self._next = int(data["next"])

    def cookie_for(self, rules: frozenset[RuleRef]) -> int:
        c = self._by_rules.get(rules)
        if c is None:
            c = self._next
            self._next += 1
            self._by_rules[rules] = c
            self._by_cookie[c] = rules
            self._dirty = True
        return c

    def rules_for(self, cookie: int) -> frozenset[RuleRef] | None:
        """The rules a cookie stands for; None for a cookie this table never allocated."""
        return self._by_cookie.get(cookie)

    def __len__(self) -> int:
        return len(self._by_cookie) - 1

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "next": self._next,
            "cookies": {str(c): sorted(list(r) for r in rs) for c, rs in self._by_cookie.items() if c},
        }
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, self.path)
        self._dirty = False
