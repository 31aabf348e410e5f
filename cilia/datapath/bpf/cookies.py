"""Rule cookies: a u32 per distinct set of rules, so a datapath event can name the rules that decided.

The kernel stores only the cookie; the cookie → rules table lives in user space and is persisted
as JSON (0600, atomic and durable: :mod:`cilia.store.files`) so that a restarted process can still
name the rules of entries and events produced before it started. Cookie 0 means "no rules". A file
that cannot be read (truncated, edited) never stops the datapath: it is kept aside as
``cookies.json.corrupt`` with a warning and the table starts empty; events of entries written before
then name no rules until the agent's first full sync has rewritten every entry with new cookies.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from cilia.policy.types import RuleRef
from cilia.store.files import write_json

log = logging.getLogger(__name__)


class CookieTable:
    """Allocates and remembers rule cookies; ``save()`` persists new allocations."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._by_rules: dict[frozenset[RuleRef], int] = {frozenset(): 0}
        self._by_cookie: dict[int, frozenset[RuleRef]] = {0: frozenset()}
        self._next = 1
        self._dirty = False
        self.recovered: str | None = None  # why the saved table was unreadable, if it was
        if path is not None and path.exists():
            try:
                self._load(path)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                self._by_rules = {frozenset(): 0}
                self._by_cookie = {0: frozenset()}
                self._next = 1
                self.recovered = f"{path}: {type(e).__name__}: {e}"
                aside = path.with_name(path.name + ".corrupt")
                os.replace(path, aside)
                log.warning("rule cookie table unreadable (%s); kept as %s, starting a new one",
                            self.recovered, aside)

    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("cookies"), dict):
            raise TypeError("expected an object with a 'cookies' object")
        for cookie_s, rules in data["cookies"].items():
            cookie = int(cookie_s)
            if not 0 < cookie < 2**32:
                raise ValueError(f"cookie {cookie} out of range")
            rs = frozenset(RuleRef(*r) for r in rules)
            self._by_rules[rs] = cookie
            self._by_cookie[cookie] = rs
        self._next = int(data["next"])
        if not max(self._by_cookie) < self._next < 2**32:
            raise ValueError(f"next cookie {self._next} not above every cookie")

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
        data = {
            "next": self._next,
            "cookies": {str(c): sorted(list(r) for r in rs) for c, rs in self._by_cookie.items() if c},
        }
        write_json(self.path, data, sort_keys=True)
        self._dirty = False
