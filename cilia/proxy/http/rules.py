"""The rules document the HAProxy Lua action reads (``cilia.lua``), built from the engine's
:class:`cilia.policy.l7.L7PortPolicy` values.

One document holds every L7 port policy of the node, keyed by (direction, endpoint address, port):
the proxy finds the policy of a request from its listener's direction and the connection's
addresses (egress: the source endpoint's policy; ingress: the destination's). The document is
line-based and deterministic (sorted), so it is a golden-file output and a change is a diff::

    cilia-http-rules <version>
    O both_at_egress 0|1          the egress listener also decides the destination's ingress policy
    P <dir> <ip> <port> <end> <parser>  one L7PortPolicy of one endpoint address (ports port..end)
    R <remotes|*> http|any|tls    one L7Rule: peer identities (* = any), any = every request
    H <method> <path> <host>      one HTTPRule: PCRE2 whole-value regexes, - = not constrained
    M <name> <value|-> <action>   one header match: value (- = presence); mismatch action,
                                  - none (refuse), ! never matches (a missing Secret)
    S <regex>                     one TLS server name (PCRE2, case-insensitive)

Text fields are written as ``=`` + percent-encoded bytes (``-`` alone means absent).

Most HTTP policies are decided by HAProxy itself, without Lua (:func:`decision_map`): the listener
builds a key ``<dir>|<endpoint ip>|<port>|<peer identity>\x01<method>\x01<host>\x01<path>`` and
looks it up in a ``map_reg`` map whose patterns are the rules, in order; the first match gives
``allow``, a policy's catch-all after its rules ``deny``, and ``lua`` sends the request to the Lua
action (policies with header matches, a port range, or a regex that cannot be composed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cilia.policy.l7 import _sni_regex  # the one definition of Cilium's SNI wildcards
from cilia.proxy.errors import ProxyError
from cilia.proxy.http.regex import RegexError, to_pcre2

MAGIC = "cilia-http-rules"
_SAFE = re.compile(r"[A-Za-z0-9._~/:,;=@!*+?()\-]")


class RulesError(ProxyError, ValueError):
    """An L7 policy the proxy cannot enforce exactly (a regex PCRE2 cannot match as RE2 does)."""


def field(value: str | None) -> str:
    """One text field: ``-`` for absent, else ``=`` and the percent-encoded UTF-8 bytes."""
    if value is None:
        return "-"
    out = []
    for b in value.encode():
        ch = chr(b)
        out.append(ch if b < 0x80 and _SAFE.fullmatch(ch) else f"%{b:02X}")
    return "=" + "".join(out)


def unfield(text: str) -> str | None:
    """The inverse of :func:`field`."""
    if text == "-":
        return None
    raw = text[1:]
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == "%":
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(raw[i]))
            i += 1
    return out.decode(errors="replace")


def regex_field(pattern: str, what: str) -> str:
    """An RE2 pattern as a PCRE2 whole-value field; an empty pattern constrains nothing (``-``)."""
    if not pattern:
        return "-"
    try:
        return field(to_pcre2(pattern))
    except RegexError as e:
        raise RulesError(f"{what}: {e}") from None


def sni_regex(pattern: str) -> str:
    """A ``serverNames`` entry as the PCRE2 regex the proxy matches case-insensitively: the same
    strings as :func:`cilia.policy.l7.server_name_matches` (exact, or its wildcard regex)."""
    if "*" not in pattern:
        return r"\A" + re.escape(pattern.lower()) + r"\z"
    return to_pcre2(_sni_regex(pattern))


@dataclass(frozen=True)
class PortPolicyAt:
    """One L7 port policy of one endpoint address (what the document keys by)."""

    ip: str
    policy: Any  # cilia.policy.l7.L7PortPolicy


def _rule_lines(rule: Any, parser: str, where: str) -> list[str]:
    remotes = "*" if rule.remotes is None else ",".join(str(r) for r in sorted(rule.remotes)) or "none"
    if parser == "tls":
        names = tuple(rule.server_names)
        lines = [f"R {remotes} {'tls' if names else 'any'}"]
        lines += [f"S {field(sni_regex(n))}" for n in sorted(names)]
        return lines
    if rule.http is None:
        return [f"R {remotes} any"]
    lines = [f"R {remotes} http"]
    for j, h in enumerate(rule.http):
        at = f"{where}.http[{j}]"
        lines.append(
            "H "
            + " ".join(
                (
                    regex_field(h.method, f"{at}.method"),
                    regex_field(h.path, f"{at}.path"),
                    regex_field(h.host, f"{at}.host"),
                )
            )
        )
        for m in h.headers:
            action = "!" if getattr(m, "unresolved", False) else (m.mismatch or "-")
            lines.append(f"M {field(m.name)} {field(m.value)} {action}")
    return lines


def render(policies: Iterable[PortPolicyAt], version: int, both_at_egress: bool) -> str:
    """The rules document for ``policies`` (sorted by direction, address, port)."""
    lines = [f"{MAGIC} {version}", f"O both_at_egress {int(both_at_egress)}"]
    keyed = sorted(
        ((p.policy.direction.label, p.ip, p.policy.port), p.policy) for p in policies if p.policy.proto == 6
    )
    seen: set[tuple[str, str, int]] = set()
    for key, pol in keyed:
        if key in seen:  # one policy per (direction, address, port): the engine gives one
            continue
        seen.add(key)
        parser = str(pol.parser)
        if parser not in ("http", "tls"):
            continue
        lines.append(f"P {key[0]} {key[1]} {key[2]} {max(pol.end_port, key[2])} {parser}")
        for i, rule in enumerate(pol.rules):
            lines.extend(_rule_lines(rule, parser, f"{key[0]} {key[1]}:{key[2]} rules[{i}]"))
    return "\n".join(lines) + "\n"


SEP = r"\x01"  # between the key's fields: no field can hold it (the listener sends odd values to Lua)
FIELD_START = r"(?<=\x01)"  # ^ and \A of a field: every field follows a separator
FIELD_END = r"(?=\x01|\z)"  # $ and \z of a field: a separator or the end of the key
ANY_FIELD = r"[^\x01]*"
ALLOW, DENY, LUA = "allow", "deny", "lua"


def _compose(inner: str) -> str | None:
    """A whole-value PCRE2 regex's body (inside ``\\A(?:…)\\z``) made to match one field of the
    key: anchors become field boundaries, whitespace ``\\x{..}`` (map files split on it). None
    when it cannot be said (whitespace inside ``\\Q…\\E``)."""
    out: list[str] = []
    i, n = 0, len(inner)
    in_class = False
    while i < n:
        c = inner[i]
        if c == "\\" and i + 1 < n:
            d = inner[i + 1]
            if d == "Q":
                end = inner.find("\\E", i + 2)
                stop = n if end < 0 else end + 2
                if any(ch.isspace() for ch in inner[i:stop]):
                    return None
                out.append(inner[i:stop])
                i = stop
                continue
            if d.isspace():
                out.append(f"\\x{{{ord(d):x}}}")
            elif not in_class and d == "A":
                out.append(FIELD_START)
            elif not in_class and d in "zZ":
                out.append(FIELD_END)
            else:
                out.append(c + d)
            i += 2
            continue
        if c.isspace():
            out.append(f"\\x{{{ord(c):x}}}")
        elif in_class:
            if c == "[" and inner.startswith("[:", i):
                end = inner.find(":]", i + 2)
                out.append(inner[i : end + 2])
                i = end + 2
                continue
            if c == "]":
                in_class = False
            out.append(c)
        elif c == "[":
            in_class = True
            out.append(c)
            if inner.startswith("^", i + 1):
                out.append("^")
                i += 1
        elif c == "^":
            out.append(FIELD_START)
        elif c == "$":
            out.append(FIELD_END)
        else:
            out.append(c)
        i += 1
    return "".join(out)


def native_field(pattern: str) -> str | None:
    """An RE2 ``method``/``path``/``host`` pattern as a group matching exactly one key field
    (whole-value, as RE2 ``fullmatch``); ``ANY_FIELD`` for an empty pattern."""
    if not pattern:
        return ANY_FIELD
    pcre = to_pcre2(pattern)
    head, tail = r"\A(?:", r")\z"
    if not (pcre.startswith(head) and pcre.endswith(tail)):
        return None
    body = _compose(pcre[len(head) : -len(tail)])
    return None if body is None else f"(?:{body})"


def _native_rules(pol: Any, prefix: str) -> list[tuple[str, str]] | None:
    """The ``allow`` patterns of one HTTP port policy, or None when Lua must decide it (header
    matches: presence, values, mismatch actions and Secrets stay in one place)."""
    out: list[tuple[str, str]] = []
    for rule in pol.rules:
        if rule.remotes is None:
            ids = "[0-9]+"
        elif not rule.remotes:
            continue
        else:
            ids = "(?:" + "|".join(str(r) for r in sorted(rule.remotes)) + ")"
        if rule.http is None:
            out.append((prefix + ids + SEP, ALLOW))
            continue
        for h in rule.http:
            if h.headers:
                return None
            fields = [native_field(h.method), native_field(h.host), native_field(h.path)]
            if any(f is None for f in fields):
                return None
            out.append((prefix + ids + SEP + SEP.join(f for f in fields if f) + r"\z", ALLOW))
    return out


def decision_map(policies: Iterable[PortPolicyAt]) -> list[tuple[str, str]]:
    """The HTTP listeners' ``map_reg`` entries (pattern, verdict) in match order: per policy (sorted
    by direction, address, port) its rules' ``allow`` patterns then its catch-all (``deny``, or
    ``lua`` for a policy Lua decides); last, a catch-all ``lua`` per endpoint with a port range."""
    keyed = sorted(
        ((p.policy.direction.label, p.ip, p.policy.port), p.policy)
        for p in policies
        if p.policy.proto == 6 and str(p.policy.parser) == "http"
    )
    out: list[tuple[str, str]] = []
    ranged: list[str] = []
    seen: set[tuple[str, str, int]] = set()
    for key, pol in keyed:
        if key in seen:
            continue
        seen.add(key)
        head = f"^{key[0]}\\|{re.escape(key[1])}\\|"
        if pol.end_port > key[2]:
            if head not in ranged:
                ranged.append(head)
            continue
        prefix = f"{head}{key[2]}\\|"
        try:
            rules = _native_rules(pol, prefix)
        except RegexError:
            rules = None  # render() reports it; Lua refuses what it cannot compile
        if rules is None:
            out.append((prefix, LUA))
        else:
            out += rules
            out.append((prefix, DENY))
    out += [(head + "[0-9]+\\|", LUA) for head in ranged]
    return out


def decision_map_text(entries: Sequence[tuple[str, str]]) -> str:
    """The decision map file's text (what HAProxy loads at start), in match order."""
    return "".join(f"{k} {v}\n" for k, v in entries)


def listener_ports(policies: Sequence[PortPolicyAt]) -> set[tuple[str, str, int]]:
    """(parser, direction, proxy port) of every listener the policies need."""
    return {(str(p.policy.parser), p.policy.direction.label, p.policy.proxy_port) for p in policies}
