"""What cilia's proxies cannot enforce exactly as Cilium does, found in policy documents before
``cilia apply`` stores them (never allow more than Cilium would).

* ``terminatingTLS`` / ``originatingTLS``: cilia does not terminate or originate TLS; always refused.
* Kafka rules, ``l7proto`` rules and ``listener`` redirects: cilia has no such proxy; refused unless
  the user accepts L4-only enforcement (``cilia apply --allow-l4-only-l7``), which is then recorded
  on the stored object as the :data:`L4_ONLY_ANNOTATION` annotation.
* DNS rules of a host policy (``nodeSelector``): the host firewall does not send the node's own queries
  through the DNS proxy; refused unless accepted as L4-only, as above.
* An HTTP ``host`` regex RE2 rejects and a ``serverNames`` pattern Cilium's proxy rejects: Envoy
  would refuse the whole policy update; cilia refuses the policy.

The checks read the document's raw data (it has passed validation), so every problem names the file,
line and field.
"""

from __future__ import annotations

import re
from typing import Any

from cilia.k8s.errors import Error
from cilia.k8s.frozen import frozen
from cilia.k8s.source import Document, FieldPath, format_path

L4_ONLY_ANNOTATION = "cilia.io/l4-only-l7"
ALLOW_FLAG = "--allow-l4-only-l7"

# Cilium's proxy's check of a serverNames pattern (SniPattern::isValid).
_SNI_LABEL = r"([*]{1,2}|[*]?[-a-zA-Z0-9_]+([*][-a-zA-Z0-9_]+)*[*]?)"
SNI_PATTERN = rf"({_SNI_LABEL}[.])*{_SNI_LABEL}"  # compiled at first use (re's cache), not at import


@frozen
class L7Problem:
    """One L7 part cilia cannot enforce. ``l4_only`` problems can be accepted as L4-only."""

    path: FieldPath
    message: str
    hint: str
    l4_only: bool


def re2_problem(pattern: str) -> str | None:
    """RE2's complaint about a regex (the syntax Go and Envoy use), None when it compiles."""
    import re2

    opts = re2.Options()
    opts.log_errors = False
    try:
        re2.compile(pattern, opts)
    except re2.error as e:
        msg = e.args[0] if e.args else str(e)
        return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
    return None


def _rules(data: dict[str, Any]) -> list[tuple[FieldPath, dict[str, Any]]]:
    out: list[tuple[FieldPath, dict[str, Any]]] = []
    if isinstance(data.get("spec"), dict):
        out.append((("spec",), data["spec"]))
    for i, r in enumerate(data.get("specs") or ()):
        if isinstance(r, dict):
            out.append((("specs", i), r))
    return out


def _port_rule_problems(pr: dict[str, Any], at: FieldPath) -> list[L7Problem]:
    out: list[L7Problem] = []
    for tls in ("terminatingTLS", "originatingTLS"):
        if pr.get(tls) is not None:
            out.append(
                L7Problem(
                    (*at, tls),
                    f"{tls} is not supported by cilia: its proxy does not terminate or originate TLS",
                    "remove the field (serverNames alone is enforced on the TLS ClientHello)",
                    False,
                )
            )
    if pr.get("listener") is not None:
        out.append(
            L7Problem(
                (*at, "listener"),
                "listener redirects to an Envoy listener, which cilia does not have: "
                "the rule would be enforced at L4 only",
                f"remove the listener, or pass {ALLOW_FLAG} to store it enforced at L4 only",
                True,
            )
        )
    rules = pr.get("rules")
    if isinstance(rules, dict):
        if rules.get("kafka") is not None:
            out.append(
                L7Problem(
                    (*at, "rules", "kafka"),
                    "Kafka rules need a Kafka proxy, which cilia does not have: "
                    "the rule would be enforced at L4 only",
                    f"pass {ALLOW_FLAG} to store it enforced at L4 only",
                    True,
                )
            )
        if rules.get("l7proto"):
            out.append(
                L7Problem(
                    (*at, "rules", "l7proto"),
                    f"l7proto {rules['l7proto']!r} needs a proxylib parser, which cilia does not have: "
                    "the rule would be enforced at L4 only",
                    f"pass {ALLOW_FLAG} to store it enforced at L4 only",
                    True,
                )
            )
        for j, h in enumerate(rules.get("http") or ()):
            if not isinstance(h, dict):
                continue
            host = h.get("host")
            if isinstance(host, str) and host:
                problem = re2_problem(host)
                if problem:
                    out.append(
                        L7Problem(
                            (*at, "rules", "http", j, "host"),
                            f"invalid RE2 regex {host!r}: {problem} (Envoy would refuse the policy)",
                            "host is an RE2 regex matched against the whole Host (authority) value",
                            False,
                        )
                    )
    for k, name in enumerate(pr.get("serverNames") or ()):
        if isinstance(name, str) and name and not re.fullmatch(SNI_PATTERN, name):
            out.append(
                L7Problem(
                    (*at, "serverNames", k),
                    f"invalid server name {name!r} (Cilium's proxy would refuse the policy)",
                    "DNS characters, '*' within a label or a '**' label; no trailing dot, no empty label",
                    False,
                )
            )
    return out


def l7_problems(data: dict[str, Any]) -> list[L7Problem]:
    """Every L7 part of a CiliumNetworkPolicy / CCNP document cilia cannot enforce."""
    out: list[L7Problem] = []
    for base, rule in _rules(data):
        for section in ("ingress", "egress"):
            for i, item in enumerate(rule.get(section) or ()):
                if not isinstance(item, dict):
                    continue
                for k, pr in enumerate(item.get("toPorts") or ()):
                    if isinstance(pr, dict):
                        at = (*base, section, i, "toPorts", k)
                        out += _port_rule_problems(pr, at)
                        if rule.get("nodeSelector") is not None:
                            out += _host_dns_problems(pr, at)
    return out


def _host_dns_problems(pr: dict[str, Any], at: FieldPath) -> list[L7Problem]:
    """A host policy's DNS rules: the live host firewall does not redirect the node's own queries to
    the DNS proxy, so the names would not be checked (Cilium's would)."""
    rules = pr.get("rules")
    if not isinstance(rules, dict) or not rules.get("dns"):
        return []
    return [
        L7Problem(
            (*at, "rules", "dns"),
            "DNS rules of a host policy (nodeSelector) are not enforced by cilia's host firewall: "
            "the node's own DNS traffic is not sent through the DNS proxy, so the rule would be enforced "
            "at L4 only",
            f"pass {ALLOW_FLAG} to store it enforced at L4 only, or use toPorts without rules.dns",
            True,
        )
    ]


def document_l7_errors(doc: Document, *, allow_l4_only: bool = False) -> tuple[list[Error], bool]:
    """The errors of one policy document, and whether it has L7 rules accepted as L4-only."""
    if doc.kind not in ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"):
        return [], False
    errors: list[Error] = []
    l4_only = False
    for p in l7_problems(doc.data):
        if p.l4_only and allow_l4_only:
            l4_only = True
            continue
        line, col = doc.position(p.path)
        where = format_path(p.path)
        errors.append(Error(p.message, file=doc.file, line=line, column=col, path=where, hint=p.hint))
    return errors, l4_only
