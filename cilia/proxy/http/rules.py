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


def listener_ports(policies: Sequence[PortPolicyAt]) -> set[tuple[str, str, int]]:
    """(parser, direction, proxy port) of every listener the policies need."""
    return {(str(p.policy.parser), p.policy.direction.label, p.policy.proxy_port) for p in policies}
