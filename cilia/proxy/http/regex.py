"""RE2 (Cilium's regex dialect) → PCRE2 (HAProxy's), as a whole-value match.

Cilium hands ``method``/``path``/``host`` to Envoy as RE2 ``safe_regex`` matchers, which match the
whole value. HAProxy matches with PCRE2, which differs from RE2 in a few places that a rule could
reach; :func:`to_pcre2` rewrites those so that both engines accept exactly the same strings:

* the pattern is anchored as ``\\A(?:…)\\z`` (a whole-value match; ``\\z``, not ``$``);
* ``$`` outside multi-line mode is RE2's end of text; PCRE2's ``$`` also matches before a final
  newline, so it becomes ``\\z``;
* ``\\s`` is ``[\\t\\n\\f\\r ]`` in RE2, PCRE2 adds the vertical tab: spelled out;
* ``\\v`` is the vertical tab in RE2 and a class of vertical spaces in PCRE2: ``\\x0b``;
* octal escapes (``\\012``) become ``\\x{…}`` (PCRE2 could read ``\\12`` as a back reference);
* Unicode classes (``\\pL``) and ``\\S`` inside a bracket class are refused: HAProxy matches bytes,
  not UTF-8 runes, so they cannot be made equal (:class:`RegexError`).

A pattern RE2 itself refuses is refused too (RE2's message), so nothing Cilium rejects gets here.
"""

from __future__ import annotations

import functools
import re

import re2  # google-re2: Cilium's own dialect and validation

from cilia.proxy.errors import ProxyError

RE2_SPACE = r"\t\n\f\r "
_OCTAL = re.compile(r"[0-7]{1,3}")
_FLAGS = re.compile(r"\(\?([a-zA-Z]*)(?:-[a-zA-Z]*)?[:)]")


class RegexError(ProxyError, ValueError):
    """A regex that RE2 refuses, or that HAProxy's PCRE2 cannot match exactly as RE2 does."""


def check_re2(pattern: str) -> None:
    """Raise :class:`RegexError` with RE2's message when RE2 (and so Cilium) refuses ``pattern``."""
    opts = re2.Options()
    opts.log_errors = False  # the message is raised, not printed
    try:
        re2.compile(pattern, opts)
    except re2.error as e:
        msg = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise RegexError(f"{pattern!r}: not a valid RE2 regex: {msg}") from None


@functools.lru_cache(maxsize=4096)
def to_pcre2(pattern: str) -> str:
    """The PCRE2 regex that accepts exactly the whole values RE2 ``fullmatch``-es with ``pattern``."""
    check_re2(pattern)
    multiline = any("m" in m.group(1) for m in _FLAGS.finditer(pattern))
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            d = pattern[i + 1]
            if d == "Q":  # literal run up to \E: copied as it is (both engines read it the same)
                end = pattern.find("\\E", i + 2)
                stop = n if end < 0 else end + 2
                out.append(pattern[i:stop] + ("" if end >= 0 else "\\E"))
                i = stop
                continue
            if d in "pP":
                raise RegexError(f"{pattern!r}: Unicode classes (\\{d}) are not supported by the HTTP proxy")
            if d == "s":
                out.append(RE2_SPACE if in_class else f"[{RE2_SPACE}]")
            elif d == "S":
                if in_class:
                    raise RegexError(f"{pattern!r}: \\S inside [...] is not supported by the HTTP proxy")
                out.append(f"[^{RE2_SPACE}]")
            elif d == "v":
                out.append(r"\x0b")
            elif d.isdigit():
                m = _OCTAL.match(pattern, i + 1)
                digits = m.group(0) if m else d
                out.append(f"\\x{{{int(digits, 8):x}}}")
                i += 1 + len(digits)
                continue
            else:
                out.append(c + d)
            i += 2
            continue
        if in_class:
            if c == "[" and pattern.startswith("[:", i):  # a POSIX class [:alpha:] inside the class
                end = pattern.find(":]", i + 2)
                out.append(pattern[i : end + 2])
                i = end + 2
                continue
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            # a leading ']' (after an optional '^') is a literal in both engines
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("\\]")
                i += 1
            continue
        if c == "$" and not multiline:
            out.append(r"\z")
        else:
            out.append(c)
        i += 1
    return r"\A(?:" + "".join(out) + r")\z"
