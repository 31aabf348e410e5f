"""L7 rules -> per-selector L7 policies on L4 filters -> :class:`~cilia.policy.l7.L7PortPolicy`
values and proxy ports (Cilium 1.18 ``pkg/policy/l4.go createL4Filter``, ``rule.go
mergePortProto``, ``l4.go toMapState``, ``pkg/envoy/server.go getDirectionNetworkPolicy``).

* :func:`entry_l7` reads one rule entry's ``toPorts`` with L7 parts: per port, the parser
  (DNS for ``rules.dns`` on any protocol; HTTP for ``rules.http`` on TCP; TLS for ``serverNames``)
  and the selector policy (:class:`L7Spec`).
* :func:`merge_spec` merges two policies of the same selector on the same port as
  ``mergePortProto`` does: a selector allowed without L7 rules next to one with L7 rules gets the
  L7 rules plus the wildcard rule (every request still passes, through the proxy); server names
  are united; rules are appended without duplicates.
* :func:`port_policies` builds what the proxy enforces per port: every allowed selector of the
  port's filter (its L7 rules, or allow-all), plus the wildcard-port allows (L3-only rules),
  which Cilium's proxy also consults.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cilia.k8s.frozen import frozen
from cilia.policy.l7parser import DEFAULT_PROXY_PORTS, L7Parser
from cilia.policy.rules import PeerRule, PortProto
from cilia.policy.types import Direction, Proto

# The L7 model (cilia.policy.l7) is imported by the functions that build its values: resolving a
# policy without L7 rules needs none of its classes (start-up, issue 15).
if TYPE_CHECKING:
    from cilia.policy.filters import Filter, NamedPorts
    from cilia.policy.l7 import HTTPRule, L7PortPolicy, L7Rule
    from cilia.policy.selectorcache import SelectorCache

# Secret values that headerMatches refer to: (namespace, name) -> value.
Secrets = Mapping[tuple[str, str], str]

# Cilium's parser promotion (L7ParserType.Merge): none -> anything; TLS -> HTTP (not to DNS).
_PROMOTES = {"": {"http", "tls", "dns"}, "tls": {"http"}}


@frozen
class L7Spec:
    """One selector's L7 policy on one port (the L7 part of Cilium's ``PerSelectorPolicy``)."""

    http: tuple[HTTPRule, ...] = ()
    server_names: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()  # matchName / matchPattern strings
    redirect: bool = True

    @property
    def has_rules(self) -> bool:
        return bool(self.http or self.dns)


# --------------------------------------------------------------------------- from the API


def parser_of(pr: Any, proto: int) -> L7Parser | None:
    """The parser a port rule asks for on ``proto`` (None: no redirect). Kafka, l7proto and
    listener rules have no proxy in cilia: ``apply`` refuses them unless told to keep them L4-only."""
    rules = getattr(pr, "rules", None)
    if rules is not None and rules.dns:
        return L7Parser.DNS
    if rules is not None and rules.http and proto == Proto.TCP:
        return L7Parser.HTTP
    if pr.server_names:
        return L7Parser.TLS
    return None


def http_rule(h: Any, namespace: str, secrets: Secrets) -> HTTPRule:
    """One ``api.PortRuleHTTP`` as an :class:`HTTPRule` (headers as Cilium gives them to Envoy)."""
    from cilia.policy.l7 import HeaderMatch, HTTPRule

    headers: list[HeaderMatch] = []
    for text in h.headers or ():
        name, sep, value = text.partition(" ")
        if sep:
            headers.append(HeaderMatch(name.rstrip(":"), value))
        else:
            headers.append(HeaderMatch(name))
    for hm in h.header_matches or ():
        mismatch = (hm.mismatch or "").upper()
        value = hm.value or ""
        ref = None
        unresolved = False
        if hm.secret is not None:
            ref = (hm.secret.namespace or namespace, hm.secret.name)
            secret_value = secrets.get(ref, "")
            if secret_value:
                value = secret_value
            elif not value:
                unresolved = True
        headers.append(HeaderMatch(hm.name, value or None, mismatch, ref, unresolved))
    return HTTPRule(h.method or "", h.path or "", h.host or "", tuple(headers))


def spec_of(pr: Any, namespace: str, secrets: Secrets) -> L7Spec:
    rules = getattr(pr, "rules", None)
    http: tuple[HTTPRule, ...] = ()
    dns: tuple[str, ...] = ()
    if rules is not None:
        http = tuple(dict.fromkeys(http_rule(h, namespace, secrets) for h in (rules.http or ())))
        dns = tuple(dict.fromkeys(d.match_name or d.match_pattern or "" for d in (rules.dns or ())))
    return L7Spec(http, tuple(dict.fromkeys(pr.server_names or ())), dns)


def entry_l7(e: PeerRule, namespace: str, secrets: Secrets) -> dict[PortProto, tuple[L7Parser, L7Spec]]:
    """Per port of one rule entry, the parser and selector policy of its L7 parts."""
    from cilia.policy.translate import port_protos

    out: dict[PortProto, tuple[L7Parser, L7Spec]] = {}
    if e.deny:
        return out
    for pr in e.l7:
        spec: L7Spec | None = None
        for pp in pr.ports or ():
            try:
                protos = port_protos(pp.port, pp.end_port, pp.protocol)
            except ValueError:
                continue  # translation already refused it
            for p in protos:
                parser = parser_of(pr, p.proto)
                if parser is None:
                    continue
                if spec is None:
                    spec = spec_of(pr, namespace, secrets)
                key = PortProto(p.proto, p.port, max(p.end_port, p.port), p.name)
                old = out.get(key)
                if old is None:
                    out[key] = (parser, spec)
                else:
                    out[key] = (merge_parser(old[0], parser), merge_spec(old[1], spec) or spec)
    return out


# --------------------------------------------------------------------------- merging


def merge_parser(a: str, b: str) -> str:
    """Two parsers on one port: equal, or one promotes to the other; a conflict keeps ``a``
    (Cilium refuses to regenerate the endpoint; cilia keeps the first parser)."""
    if a == b:
        return a
    if b in _PROMOTES.get(a, ()):
        return b
    return a


def _with_wildcard(s: L7Spec) -> L7Spec:
    """``s`` with the L7 wildcard rule of its kind appended (``appendL7WildcardRule``)."""
    if s.http:
        from cilia.policy.l7 import HTTPRule

        wild = HTTPRule()
        return s if wild in s.http else L7Spec((*s.http, wild), s.server_names, s.dns, s.redirect)
    if s.dns:
        return s if "*" in s.dns else L7Spec(s.http, s.server_names, (*s.dns, "*"), s.redirect)
    return s


def merge_spec(a: L7Spec | None, b: L7Spec | None) -> L7Spec | None:
    """Merge two allow policies of one selector on one port (``mergePortProto``). None is an
    allow without L7 parts."""
    if a == b:
        return a
    old = a if a is not None else L7Spec(redirect=False)
    new = b if b is not None else L7Spec(redirect=False)
    redirect = old.redirect or new.redirect
    names = tuple(dict.fromkeys(old.server_names + new.server_names))
    if not old.has_rules and new.has_rules:
        w = _with_wildcard(new)
        return L7Spec(w.http, names, w.dns, redirect)
    if old.has_rules and not new.has_rules:
        w = _with_wildcard(old)
        return L7Spec(w.http, names, w.dns, redirect)
    http = tuple(dict.fromkeys(old.http + new.http))
    dns = tuple(dict.fromkeys(old.dns + new.dns))
    return L7Spec(http, names, dns, redirect)


# --------------------------------------------------------------------------- proxy ports


def proxy_port_map(overrides: Iterable[tuple[str, int, int]] = ()) -> dict[tuple[L7Parser, Direction], int]:
    """The listening proxy ports: the defaults with ``(parser, direction, port)`` overrides."""
    out = dict(DEFAULT_PROXY_PORTS)
    for parser, direction, port in overrides:
        out[(L7Parser(parser), Direction(direction))] = port
    return out


def filter_proxy_port(f: Filter, ports: Mapping[tuple[L7Parser, Direction], int]) -> int:
    """The proxy port a redirecting selector of filter ``f`` sends its traffic to (0: none)."""
    if not f.parser:
        return 0
    return ports.get((L7Parser(f.parser), Direction(f.direction)), 0)


def selector_redirects(f: Filter, proxy_port: int) -> dict[Any, int]:
    """Per selector of ``f``, the proxy port its MapState entries carry (``toMapState``): its own
    redirect, or for an L3/L4 allow next to an L4-only wildcard, the wildcard's redirect."""
    if not proxy_port:
        return {}
    l7 = dict(f.l7)
    wildcard = next(((s, deny) for s, deny, _ in f.selectors if s.is_wildcard), None)
    l4_wildcard = wildcard is not None and (f.port != 0 or bool(f.name))
    wild_spec = l7.get(wildcard[0]) if wildcard is not None and not wildcard[1] else None
    wild_redirect = wild_spec is not None and wild_spec.redirect
    out: dict[Any, int] = {}
    for sel, deny, _ in f.selectors:
        if deny:
            continue
        spec = l7.get(sel)
        redirect = spec is not None and spec.redirect
        if not redirect and l4_wildcard and not sel.is_wildcard:
            redirect = wild_redirect
        if redirect:
            out[sel] = proxy_port
    return out


# --------------------------------------------------------------------------- per-port policies


def port_policies(
    identity: int,
    filters: Iterable[Filter],
    cache: SelectorCache,
    named_ports: NamedPorts,
    ports: Mapping[tuple[L7Parser, Direction], int],
) -> tuple[L7PortPolicy, ...]:
    """What the proxies enforce for one endpoint: one :class:`L7PortPolicy` per port whose filter
    has a parser, sorted by (direction, proto, port)."""
    filters = tuple(filters)
    if not any(filter_proxy_port(f, ports) for f in filters):
        return ()  # no port redirects to a proxy: nothing for one to enforce
    from cilia.policy.l7 import L7PortPolicy, L7Rule

    wildcard_port: dict[int, list[L7Rule]] = {}
    for f in filters:
        if f.port != 0 or f.name or f.proto not in (Proto.ANY, Proto.TCP):
            continue
        for sel, deny, refs in f.selectors:
            if deny:
                continue
            remotes = None if sel.is_wildcard else frozenset(cache.selections(sel))
            if remotes is not None and not remotes:
                continue
            wildcard_port.setdefault(f.direction, []).append(L7Rule(remotes, None, refs=refs))
    out: list[L7PortPolicy] = []
    for f in filters:
        proxy_port = filter_proxy_port(f, ports)
        if not proxy_port:
            continue
        port, end = f.port, f.end_port
        if f.name:
            port = named_ports.resolve(f.direction, f.name, f.proto)
            end = port
        if port == 0:
            continue
        parser = L7Parser(f.parser)
        l7 = dict(f.l7)
        allowed = [(s, refs) for s, deny, refs in f.selectors if not deny]
        rules: list[L7Rule] = []
        for sel, refs in allowed:
            # A single selector is effectively a wildcard: the datapath only lets allowed peers in.
            if sel.is_wildcard or len(f.selectors) == 1:
                remotes: frozenset[int] | None = None
            else:
                remotes = frozenset(cache.selections(sel))
                if not remotes:
                    continue
            spec = l7.get(sel)
            http = spec.http if spec is not None and spec.http and parser is L7Parser.HTTP else None
            names = spec.server_names if spec is not None else ()
            dns = spec.dns if spec is not None and parser is L7Parser.DNS else ()
            rules.append(L7Rule(remotes, http, names, dns, refs))
        rules.extend(wildcard_port.get(f.direction, ()))
        out.append(
            L7PortPolicy(
                Direction(f.direction), f.proto, port, parser, proxy_port, tuple(rules),
                end if end > port else 0, identity,
            )
        )
    out.sort(key=lambda p: (p.direction, p.proto, p.port, p.end_port))
    return tuple(out)


def host_wildcard_l7(filters: tuple[Filter, ...]) -> tuple[Filter, ...]:
    """With allow-localhost (always), an ingress filter whose redirecting selector selects the
    host also lists the host selector without L7 rules: the host's requests go through the proxy,
    which lets all of them pass (Cilium's ``hostWildcardL7``)."""
    from cilia.identity.reserved import RESERVED_LABELS, ReservedIdentity
    from cilia.identity.selector import Selector

    host_labels = RESERVED_LABELS[ReservedIdentity.HOST]
    host_sel = Selector.from_labels(host_labels)
    out: list[Filter] = []
    for f in filters:
        if f.direction != Direction.INGRESS or not f.parser or any(s == host_sel for s, _, _ in f.selectors):
            out.append(f)
            continue
        refs = frozenset(
            r
            for s, spec in f.l7
            if spec.redirect and s.matches(host_labels)
            for sel, deny, rs in f.selectors
            if sel == s and not deny
            for r in rs
        )
        if refs:
            f = f._replace(selectors=(*f.selectors, (host_sel, False, refs)))
        out.append(f)
    return tuple(out)
