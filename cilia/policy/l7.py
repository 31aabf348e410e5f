"""The L7 policy model: what the proxies enforce on a port whose policy entries redirect to them.

One :class:`L7PortPolicy` exists per (endpoint, direction, protocol, port) with a redirect. It lists
the :class:`L7Rule` of every peer selector that Cilium 1.18 would put in Envoy's
``PortNetworkPolicy`` for that port (pkg/envoy/server.go ``getDirectionNetworkPolicy``): a selector
with L7 rules contributes them, a selector allowed on the same port without L7 rules contributes an
allow-everything rule for its peers. A request is allowed when any rule whose remotes contain the
source identity (or that applies to any peer) matches it.

HTTP matching is Cilium's translation to Envoy (``getHTTPRule``): ``method``, ``path`` and ``host``
are RE2 regexes matched against the whole ``:method``, ``:path`` (query string included) and
``:authority`` values; ``headers`` entries are ``"Name: value"`` (exact value) or a bare name
(presence); ``headerMatches`` without a mismatch action are exact (or presence, for an empty value)
matches, and with an action (LOG, ADD, DELETE, REPLACE) they never refuse a request but tell the
proxy what to do to it (:class:`HeaderAction`). Header names are case-insensitive.

This module only decides; :mod:`cilia.policy.l7resolve` builds these values from rules.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cilia.policy.l7parser import DEFAULT_PROXY_PORTS as DEFAULT_PROXY_PORTS  # re-exported
from cilia.policy.l7parser import L7Parser
from cilia.policy.types import Direction, RuleRef

# Mismatch actions of headerMatches (pkg/policy/api/http.go MismatchAction).
MISMATCH_NONE = ""
MISMATCH_LOG = "LOG"
MISMATCH_ADD = "ADD"
MISMATCH_DELETE = "DELETE"
MISMATCH_REPLACE = "REPLACE"
MISMATCH_ACTIONS = (MISMATCH_LOG, MISMATCH_ADD, MISMATCH_DELETE, MISMATCH_REPLACE)

# Cilium's answer to a refused HTTP request (the connection stays usable).
DENIED_STATUS = 403
DENIED_BODY = "Access denied\r\n"


# --------------------------------------------------------------------------- RE2


def _re2() -> Any:
    import re2  # google-re2: the regex engine Envoy and Go use, with their syntax

    return re2


@functools.lru_cache(maxsize=4096)
def compile_re2(pattern: str) -> Any:
    """The compiled RE2 regex (cached); raises ``ValueError`` with RE2's message if it is invalid."""
    re2 = _re2()
    opts = re2.Options()
    opts.log_errors = False
    try:
        return re2.compile(pattern, opts)
    except re2.error as e:
        msg = e.args[0] if e.args else str(e)
        if isinstance(msg, bytes):
            msg = msg.decode("utf-8", "replace")
        raise ValueError(f"invalid RE2 regex {pattern!r}: {msg}") from None


def re2_error(pattern: str) -> str | None:
    """RE2's complaint about ``pattern``, or None when RE2 (hence Go and Envoy) accepts it."""
    try:
        compile_re2(pattern)
    except ValueError as e:
        return str(e)
    return None


def full_match(pattern: str, value: str) -> bool:
    """Does the RE2 regex match the whole value (Envoy's safe_regex semantics)?"""
    return compile_re2(pattern).fullmatch(value) is not None


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class HeaderMatch:
    """One header condition: ``value`` None means the header must be present.

    ``mismatch`` is "" (the request is refused on a mismatch) or an action (LOG, ADD, DELETE,
    REPLACE) that lets the request through and changes or logs the header. ``secret`` names the
    Secret whose value is the expected value; :mod:`cilia.policy.l7resolve` puts the Secret's value
    in ``value`` (falling back to the inline value as Cilium does) and sets ``unresolved`` when
    neither exists, which makes the match fail (Cilium's inverted empty match).
    """

    name: str
    value: str | None = None
    mismatch: str = MISMATCH_NONE
    secret: tuple[str, str] | None = None  # (namespace, name) of a Secret in the manifests
    unresolved: bool = False

    def describe(self) -> str:
        v = "<secret>" if self.secret else ("" if self.value is None else self.value)
        s = self.name if self.value is None and not self.secret else f"{self.name}: {v}"
        return f"{s} (mismatch {self.mismatch})" if self.mismatch else s


@dataclass(frozen=True)
class HeaderAction:
    """What the proxy does to a request's header because a headerMatches entry with a mismatch
    action did not match (LOG only logs)."""

    action: str  # LOG | ADD | DELETE | REPLACE
    name: str
    value: str | None = None


@dataclass(frozen=True)
class HTTPRule:
    """One ``http`` rule; every non-empty part must match. The empty rule matches every request."""

    method: str = ""
    path: str = ""
    host: str = ""
    headers: tuple[HeaderMatch, ...] = ()

    @property
    def has_side_effects(self) -> bool:
        """Header matches with mismatch actions: Cilium then evaluates every rule, not the first."""
        return any(h.mismatch for h in self.headers)

    def describe(self) -> str:
        fields = (("method", self.method), ("path", self.path), ("host", self.host))
        parts = [f"{k}={v!r}" for k, v in fields if v]
        parts.extend(f"header {h.describe()!r}" for h in self.headers)
        return " ".join(parts) if parts else "any request"

    def check(
        self, method: str, path: str, host: str, headers: Mapping[str, str]
    ) -> tuple[bool, tuple[HeaderAction, ...]]:
        """Whether the request matches, and the header actions the match implies."""
        if self.method and not full_match(self.method, method):
            return False, ()
        if self.path and not full_match(self.path, path):
            return False, ()
        if self.host and not full_match(self.host, host):
            return False, ()
        lower = {k.lower(): v for k, v in headers.items()}
        actions: list[HeaderAction] = []
        for h in self.headers:
            got = lower.get(h.name.lower())
            if h.unresolved:
                return False, ()  # a Secret that does not exist and no inline value: never matches
            presence = h.value is None or h.value == ""
            ok = got is not None if presence else got == h.value
            if ok:
                continue
            if not h.mismatch:
                return False, ()
            if h.mismatch == MISMATCH_ADD:
                actions.append(HeaderAction(h.mismatch, h.name, h.value))
            elif h.mismatch == MISMATCH_DELETE:
                if not presence and got is not None:  # only a wrong value is removed
                    actions.append(HeaderAction(h.mismatch, h.name))
            elif h.mismatch == MISMATCH_REPLACE:
                actions.append(HeaderAction(h.mismatch, h.name, h.value))
            else:
                actions.append(HeaderAction(MISMATCH_LOG, h.name, got))
        return True, tuple(actions)


@dataclass(frozen=True)
class L7Rule:
    """One selector's policy on one port (Envoy's ``PortNetworkPolicyRule``).

    ``remotes`` are the peer identities (None: any peer). ``http`` None means every request is
    allowed for these remotes (a selector allowed on this port without L7 rules). ``server_names``
    () means any SNI. ``dns`` holds DNS matchName/matchPattern patterns for the DNS parser.
    """

    remotes: frozenset[int] | None
    http: tuple[HTTPRule, ...] | None
    server_names: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    refs: frozenset[RuleRef] = frozenset()

    def applies_to(self, remote: int) -> bool:
        return self.remotes is None or remote in self.remotes


@dataclass(frozen=True)
class L7Decision:
    """The proxy's verdict on one request. ``by`` names the policies whose L7 rules allowed it,
    ``refused_by`` those whose L7 rules applied to the source and did not match."""

    allowed: bool
    by: frozenset[RuleRef]
    refused_by: frozenset[RuleRef]
    rule: HTTPRule | None = None  # the first HTTP rule that matched (None: a rule without HTTP rules)
    actions: tuple[HeaderAction, ...] = ()  # header actions of the matching rules (mismatch actions)
    reason: str = ""  # one line for people: which rule decided, or why nothing matched


@dataclass(frozen=True)
class L7PortPolicy:
    """What one proxy enforces on one (endpoint, direction, proto, port) with a redirect."""

    direction: Direction
    proto: int
    port: int
    parser: L7Parser
    proxy_port: int
    rules: tuple[L7Rule, ...]
    end_port: int = 0  # inclusive end of a port range with L7 rules, 0 for a single port
    identity: int = 0  # the endpoint (subject) identity the policy belongs to

    def covers(self, proto: int, port: int) -> bool:
        return proto == self.proto and self.port <= port <= max(self.port, self.end_port)

    def decide_http(
        self, remote: int, method: str, path: str, host: str, headers: Mapping[str, str] | None = None
    ) -> L7Decision:
        """Decide one HTTP request from peer identity ``remote`` as the proxy does."""
        headers = headers or {}
        by: set[RuleRef] = set()
        refused: set[RuleRef] = set()
        actions: list[HeaderAction] = []
        first: HTTPRule | None = None
        allowed = False
        reason = ""
        for r in self.rules:
            if not r.applies_to(remote):
                continue
            if r.http is None:
                allowed = True
                by |= r.refs
                reason = reason or "allowed for this peer without HTTP rules"
                continue
            matched = False
            for h in r.http:
                ok, acts = h.check(method, path, host, headers)
                if ok:
                    matched = True
                    actions.extend(acts)
                    if first is None:
                        first = h
                        reason = f"matches http rule {h.describe()}"
                    if not h.has_side_effects:
                        break
            if matched:
                allowed = True
                by |= r.refs
            else:
                refused |= r.refs
        if not allowed:
            reason = "no http rule matches" if refused else "no rule for this peer on this port"
            return L7Decision(False, frozenset(), frozenset(refused), None, (), reason)
        return L7Decision(True, frozenset(by), frozenset(), first, tuple(dict.fromkeys(actions)), reason)

    def decide_sni(self, remote: int, sni: str) -> L7Decision:
        """Decide a TLS connection by its ClientHello's server name (empty: no SNI sent)."""
        by: set[RuleRef] = set()
        refused: set[RuleRef] = set()
        for r in self.rules:
            if not r.applies_to(remote):
                continue
            if not r.server_names or any(server_name_matches(p, sni) for p in r.server_names):
                by |= r.refs
            else:
                refused |= r.refs
        if by:
            return L7Decision(True, frozenset(by), frozenset(), reason=f"server name {sni!r} allowed")
        why = f"server name {sni!r} not in serverNames" if refused else "no rule for this peer on this port"
        return L7Decision(False, frozenset(), frozenset(refused), reason=why)

    def decide_dns(self, remote: int, qname: str) -> L7Decision:
        """Decide one DNS query name against the toPorts DNS rules (matchName/matchPattern)."""
        from cilia.identity.fqdn import name_matches

        by: set[RuleRef] = set()
        refused: set[RuleRef] = set()
        for r in self.rules:
            if not r.applies_to(remote):
                continue
            if not r.dns or any(name_matches(qname, p) for p in r.dns):
                by |= r.refs
            else:
                refused |= r.refs
        if by:
            return L7Decision(True, frozenset(by), frozenset(), reason=f"query {qname!r} allowed")
        return L7Decision(False, frozenset(), frozenset(refused), reason=f"query {qname!r} not allowed")


# --------------------------------------------------------------------------- server names

# A valid serverNames pattern, as Cilium's proxy checks it (SniPattern): DNS characters and '*'
# (any run of DNS characters within a label) or a whole '**' label (one or more labels); no
# trailing dot, no empty label.
_SNI_LABEL = "([*]{1,2}|[*]?[-a-zA-Z0-9_]+([*][-a-zA-Z0-9_]+)*[*]?)"
_SNI_VALID = f"({_SNI_LABEL}[.])*{_SNI_LABEL}"
_SNI_ANY = "[-a-z0-9_]+([.][-a-z0-9_]+)*"


def server_name_error(name: str) -> str | None:
    """Why a ``serverNames`` entry is refused (Cilium's messages), or None when it is accepted."""
    if not name:
        return "empty server name is not allowed"
    if not full_match(_SNI_VALID, name):
        return (
            f"invalid server name {name!r}: DNS characters with '*' (within a label) or a '**' label "
            "(one or more labels) are accepted, no trailing dot or empty label"
        )
    return None


@functools.lru_cache(maxsize=1024)
def _sni_regex(pattern: str) -> str:
    p = pattern.lower()
    if p == "*":
        return _SNI_ANY
    out: list[str] = []
    i = 0
    while i < len(p):
        if p.startswith("**", i):
            out.append("[-a-z0-9_]+([.][-a-z0-9_]+){0,}")
            i += 2
        elif p[i] == "*":
            out.append("[-a-z0-9_]{0,}")
            i += 1
        elif p[i] == ".":
            out.append("[.]")
            i += 1
        else:
            out.append(p[i])
            i += 1
    return "".join(out)


def server_name_matches(pattern: str, sni: str) -> bool:
    """Does a TLS SNI match a serverNames entry (case-insensitive; no SNI never matches)?"""
    if not sni or not pattern:
        return False
    s = sni.lower()
    if "*" not in pattern:
        return pattern.lower() == s
    return full_match(_sni_regex(pattern), s)


@dataclass(frozen=True)
class L7Request:
    """An offline request for trace/verify: HTTP fields, or a TLS server name."""

    method: str = ""
    path: str = ""
    host: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    sni: str | None = None
    dns: str | None = None  # a DNS query name (the DNS proxy's rules)

    @property
    def is_http(self) -> bool:
        return bool(self.method or self.path or self.host or self.headers)
