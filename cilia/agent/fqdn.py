"""toFQDNs on the node: the DNS proxy and the identities of the addresses it learns (semantics.md §7).

* Endpoints whose egress policy has DNS rules (``toPorts … rules: dns``) have MapState entries
  with the DNS proxy port (15053 + 100 × node index, :func:`use_node_dns_port`); their allowed DNS
  queries (UDP and TCP port 53, after the L3/L4 policy decided on the server) go to the proxy on
  that port in the node's namespace. On the kernel datapath that is the generic proxy redirect
  (:data:`Capability.PROXY_REDIRECT`: the proxy listens transparently on every address, the
  original destination is its socket's, :mod:`cilia.proxy.transparent`); a datapath without it
  rewrites the destination to ``<gateway>:<that port>`` instead (:meth:`Datapath.set_dns_redirect`).
  The redirects are kept as :class:`cilia.proxy.redirects.Redirects`.
* The proxy (:class:`cilia.proxy.dns.proxy.DnsProxy`, driven through :class:`NodeDnsHost`, the
  agent's side of :class:`cilia.proxy.host.DnsProxyHost`) answers REFUSED for names the endpoint's
  DNS rules do not allow; otherwise it forwards the query to the server it was sent to (over the
  same transport), and every (name, address) of the answer enters the node's DNS cache
  (:mod:`cilia.proxy.dns.cache`) with the answer's TTL raised
  to the node's minimum (``tofqdns_min_ttl``). An address known under names that match ``toFQDNs``
  selectors gets an identity labelled ``fqdn:<selector>`` for each of them plus its
  ``cidr:<ip>/32`` and world labels; the policies and the ipcache learn it **before** the answer
  goes back to the pod, so the pod's first connection is already decided by the new identity.
* Expiry (:func:`expire`, every second under the agent's lock): a name whose TTL passed leaves the
  address unless a live conntrack entry still has the address as a peer (Cilium keeps such
  "zombies" until its conntrack GC finds them idle; cilia reads conntrack again for them every
  10 s). An address left without a matching name loses
  its identity: the ipcache entry goes first (back to its CIDR identity if a policy names the /32,
  else removed), then the identity is released and the policies follow. Nothing is allowed more
  in between.
* The cache and the identities' labels are written to ``<state_dir>/fqdn.json`` when an address or
  name is learned or expires (renewals within a second, by the timer) and read back by the next
  agent (:func:`restore`) before its first policy sync, so an agent restart does not cut what a pod
  learned (Cilium keeps the DNS history in the endpoint state).
* Each query, answer and refusal is reported to the flow sink as a :class:`DnsRecord`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pyroute2 import IPRoute

from cilia.agent.fqdn_state import FqdnState
from cilia.datapath.capabilities import Capability
from cilia.datapath.dualstack import ipv4_of
from cilia.identity.cidr import inherited_group_labels
from cilia.identity.fqdn import fqdn_identity_labels, host_prefix, name_matches
from cilia.identity.labels import Labels
from cilia.identity.reserved import ReservedIdentity
from cilia.policy.l7 import DEFAULT_PROXY_PORTS, L7Parser
from cilia.policy.l7resolve import proxy_port_map
from cilia.policy.resolve import namespace_of, rule_selects
from cilia.policy.types import Direction
from cilia.proxy import transparent
from cilia.proxy.dns.cache import DnsCacheError
from cilia.proxy.dns.proxy import DnsProxy
from cilia.proxy.records import DnsRecord
from cilia.proxy.redirects import RedirectKey, by_endpoint, dns_redirects, redirects_of

if TYPE_CHECKING:
    from cilia.agent.endpoints import Endpoint
    from cilia.agent.reconciler_view import ReconcilerView as Reconciler

log = logging.getLogger("cilia.agent")

PROXY_PORT = DEFAULT_PROXY_PORTS[(L7Parser.DNS, Direction.EGRESS)]  # unless the options say otherwise
NODE_PORT_STRIDE = 100  # node i's DNS proxy port is PROXY_PORT + 100 × i, as its HTTP/TLS ports
ROUTING_CHECK_S = 2.0  # how often the timer checks that the node's policy routing for proxies is there


def _dns_patterns(port_rules: Iterable[Any]) -> list[str]:
    out = []
    for pr in port_rules:
        rules = getattr(pr, "rules", None)
        for d in getattr(rules, "dns", None) or ():
            out.append(d.match_name or d.match_pattern or "")
    return out


GC_INTERVAL_S = 1.0
IN_USE_RECHECK_S = 10.0  # how often conntrack is read again for expired addresses still in use


def selectors(rec: Reconciler) -> set[str]:
    """Every toFQDNs selector (name or pattern) of the node's policies."""
    return {p for r in rec.policy.repo for e in r.entries for p in e.fqdn_patterns if p}


def dns_rules_of(rec: Reconciler, identity: int) -> list[str] | None:
    """The DNS name patterns the endpoint's egress policy allows (None: no DNS rules, no redirect)."""
    labels = rec.allocator.identities().get(identity)
    if labels is None:
        return None
    ns = namespace_of(labels)
    out: list[str] | None = None
    for r in rec.policy.repo:
        if not rule_selects(r, labels, ns):
            continue
        for e in r.entries:
            if e.direction is Direction.EGRESS and e.l7:
                patterns = _dns_patterns(e.l7)
                if patterns:
                    out = (out or []) + patterns
    return out


def sync_redirects(rec: Reconciler, state: FqdnState) -> None:
    """Redirect exactly the endpoints with DNS rules to the proxy (kernel datapaths only), after
    relabelling the learned addresses if the policies' toFQDNs selectors changed."""
    refresh(rec, state)
    if Capability.DNS_REDIRECT not in rec.datapath.capabilities:
        return
    set_redirect = rec.datapath.set_dns_redirect
    transparent = transparent_dns(rec)
    state.endpoints_seen = _endpoint_keys(rec)
    if state.redirects.applied is None:
        pinned = rec.datapath.dns_redirects()
        if transparent:
            # The policy entries' proxy ports redirect; a previous agent's destination rewrites go.
            for eid in sorted(pinned):
                set_redirect(eid, None)
            state.redirects.commit({})
        else:
            state.redirects.commit({k: p for eid, (_, port) in pinned.items()
                                    for k, p in dns_redirects(eid, port).items()})
    if not state.redirects.applied and not any(
        _dns_patterns(e.l7) for r in rec.policy.repo for e in r.entries if e.l7
    ):
        return  # no policy has DNS rules: nothing to redirect (the common case, checked per batch)
    port = dns_proxy_port(rec)
    want: dict[RedirectKey, int] = {}
    for ep in rec.endpoints:
        applied = rec.applied.get(ep.id)
        if applied is None or dns_rules_of(rec, ep.identity) is None:
            continue  # (the cheap test first: only endpoints with DNS rules have DNS redirects)
        want.update({k: p for k, p in redirects_of(ep.id, applied).items() if p == port})
    changes = state.redirects.changes(want)
    if changes and not transparent:
        # The datapath redirects an endpoint's DNS (UDP and TCP 53) as a whole, to one address.
        wanted = by_endpoint(want)
        for eid in sorted(changes.endpoints):
            ports = set(wanted.get(eid, {}).values())
            set_redirect(eid, (rec.gateway, ports.pop()) if ports else None)
    state.redirects.commit(want)


def dns_proxy_port(rec: Reconciler) -> int:
    """The port of the node's DNS proxy: the MapState entries of DNS rules carry it."""
    return proxy_port_map(rec.policy.options.proxy_ports)[(L7Parser.DNS, Direction.EGRESS)]


def transparent_dns(rec: Reconciler) -> bool:
    """Does the datapath send DNS to the proxy by the generic redirect (the proxy listens
    transparently), rather than by rewriting the destination?"""
    return Capability.PROXY_REDIRECT in rec.datapath.capabilities


def use_node_dns_port(agent: Any) -> None:
    """Give the node's engine its own DNS proxy port (before any policy is computed), unless the
    options name one: nodes sharing a network namespace must not share a transparent listener."""
    engine = agent.reconciler.policy.engine
    ports = tuple(engine.options.proxy_ports)
    if any(str(parser) == L7Parser.DNS for parser, _, _ in ports):
        return
    port = PROXY_PORT + NODE_PORT_STRIDE * int(agent.cfg.node_index)
    engine.options = dataclasses.replace(
        engine.options, proxy_ports=(*ports, (str(L7Parser.DNS), int(Direction.EGRESS), port)))


def _endpoint_keys(rec: Reconciler) -> frozenset[tuple[int, int]]:
    return frozenset((ep.id, ep.identity) for ep in rec.endpoints)


def tick(rec: Reconciler, state: FqdnState) -> None:
    """The timer's step: expire what is due, and redirect endpoints that came or changed by a path
    that did not sync the redirects (a full resync after a failed batch creates pods too)."""
    expire(rec, state)
    if state.dirty:
        state.save()
    if state.endpoints_seen is not None and _endpoint_keys(rec) != state.endpoints_seen:
        sync_redirects(rec, state)
    try:
        keep_routing(rec, state)
    except (OSError, transparent.RoutingError) as e:
        log.error("proxy routing: %s", e)


def _proxy_rule_present() -> bool:
    """Both families' rules (IPv6 queries and connections go to the proxies too)."""
    with IPRoute() as ipr:
        return all(any(r.get_attr("FRA_PRIORITY") == transparent.RULE_PRIORITY
                       and r.get_attr("FRA_TABLE") == transparent.ROUTE_TABLE
                       for r in ipr.get_rules(family=family))
                   for family in (socket.AF_INET, socket.AF_INET6))


def keep_routing(rec: Reconciler, state: FqdnState, now: float | None = None) -> bool:
    """Put the node's policy routing for proxy traffic back (every ``ROUTING_CHECK_S``) when it is
    gone: ``cilia down`` of another node sharing this network namespace removes it, and without it
    the transparent DNS proxy gets no query. True when it was put back."""
    if not transparent_dns(rec):
        return False
    t = time.monotonic() if now is None else now
    if t < state.routing_checked + ROUTING_CHECK_S:
        return False
    state.routing_checked = t
    if _proxy_rule_present():  # one netlink dump: cheap enough for the timer
        return False
    transparent.install_routing()
    log.warning("proxy routing was gone (another node's teardown?): installed again")
    return True


def allowed(rec: Reconciler, client_ip: str, name: str) -> bool:
    """May the endpoint at ``client_ip`` resolve ``name``?"""
    patterns = dns_rules_at(rec, client_ip)
    return patterns is not None and any(name_matches(name, p) for p in patterns)


def endpoint_at(rec: Reconciler, ip: str) -> Endpoint | None:
    """The node's endpoint at ``ip``, its IPv4 address or that address's IPv6 twin."""
    by_ip = rec.endpoints.by_ip()
    return by_ip.get(ipv4_of(ip) if ":" in ip else ip)


def dns_rules_at(rec: Reconciler, ip: str) -> list[str] | None:
    """The DNS rules of the node's endpoint at ``ip`` (None: no such endpoint, or no DNS rules)."""
    ep = endpoint_at(rec, ip)
    return None if ep is None else dns_rules_of(rec, ep.identity)


def _apply(rec: Reconciler, state: FqdnState, addresses: Iterable[str],
           sels: Iterable[str] | None = None) -> dict[str, int | None]:
    """Give each address the identity its cached names call for (None: none). New identities
    reach the policies before the ipcache; a lost identity leaves the ipcache before it is
    released. Returns address -> new identity (None: removed) of what changed."""
    sels = frozenset(selectors(rec)) if sels is None else frozenset(sels)
    # In-cluster addresses keep their endpoints' identities: toFQDNs selects outside addresses only.
    cluster = set(rec.endpoints.by_ip()) | {rec.gateway}
    added: dict[str, int] = {}
    removed: list[str] = []
    releases: list[Labels] = []
    for ip in sorted(set(addresses)):
        names = state.cache.names(ip)
        new = fqdn_identity_labels(ip, names, sels) if names and ip not in cluster else None
        if new is not None:  # the CIDR groups around the address (Cilium's parent-prefix labels)
            new = new.union(inherited_group_labels(ip, rec.cidr_labels))
        if new is not None and host_prefix(ip) in rec.remote_ipcache:
            new = None
        old = state.ips.get(ip)
        if new == old:
            continue
        if old is not None:
            releases.append(old)
        if new is None:
            del state.ips[ip], state.identities[ip]
            removed.append(ip)
        else:
            state.identities[ip] = added[ip] = rec.allocator.allocate(new)
            state.ips[ip] = new
    if added:
        rec.sync_affected_policies()  # peers learn the identities first
        for ip, ident in added.items():
            rec.datapath.upsert_ipcache(host_prefix(ip), ident)
    for ip in removed:
        prefix = host_prefix(ip)
        cidr = rec.cidr_identities.get(prefix)
        if cidr is not None:  # a policy names the /32 itself: back to its CIDR identity
            rec.datapath.upsert_ipcache(prefix, cidr)
        else:
            rec.datapath.delete_ipcache(prefix)
    for labels in releases:
        rec.allocator.release(labels)
    if releases:
        rec.sync_affected_policies()
    return {**added, **dict.fromkeys(removed)}


def learn(rec: Reconciler, state: FqdnState, name: str, addresses: Mapping[str, int] | Iterable[str],
          ttl: int = 0, now: float | None = None) -> dict[str, int]:
    """Enter an answer for ``name`` into the cache (``addresses``: address -> TTL, or addresses
    that all have ``ttl``) and give each address the identity of the toFQDNs selectors its names
    match; policies first, then the ipcache. Returns address -> identity of what changed."""
    answers = dict(addresses) if isinstance(addresses, Mapping) else dict.fromkeys(addresses, ttl)
    gained = state.cache.update(name, answers, state.clock() if now is None else now)
    changed = _apply(rec, state, gained) if gained else {}
    if gained:
        state.save()  # a new address or name: saved before the answer reaches the pod
    else:
        # A renewal only: the timer saves it within a second. Lost on a crash before that, the
        # address expires at its previous time (earlier, never later) until the next lookup.
        state.dirty = True
    learned = {ip: i for ip, i in changed.items() if i is not None}
    if learned:
        log.info("fqdn %s: %s", name, ", ".join(f"{ip} → identity {i}" for ip, i in learned.items()))
    return learned


def connections_in_use(rec: Reconciler) -> set[str]:
    """Addresses that are a peer of a live conntrack entry (empty without a kernel datapath)."""
    if Capability.CONNTRACK not in rec.datapath.capabilities:
        return set()
    return rec.datapath.conntrack_peers()


def expire(rec: Reconciler, state: FqdnState, now: float | None = None,
           in_use: Callable[[], set[str]] | None = None) -> dict[str, int | None]:
    """Drop the names whose TTL passed, except of addresses a live connection still uses
    (``in_use``: default the datapath's conntrack), and take away the identities that no name
    calls for any more. Returns address -> new identity (None: removed) of what changed."""
    t = state.clock() if now is None else now
    due = state.cache.due(t)
    if not due:
        return {}
    if due <= state.in_use and t < state.in_use_checked + IN_USE_RECHECK_S:
        return {}  # only addresses found in use lately: conntrack is read again later, not each second
    busy = (in_use or (lambda: connections_in_use(rec)))() & due
    state.in_use, state.in_use_checked = frozenset(busy), t
    touched = state.cache.collect(t, busy)
    if not touched:
        return {}
    changed = _apply(rec, state, touched)
    state.save()
    gone = sorted(ip for ip, i in changed.items() if i is None)
    if gone:
        log.info("fqdn: expired %s", ", ".join(gone))
    return changed


def refresh(rec: Reconciler, state: FqdnState, force: bool = False) -> dict[str, int | None]:
    """Relabel every cached address when the policies' toFQDNs selectors changed (a new selector
    matches names resolved before it existed, as Cilium's name manager does), or with ``force``
    (the CIDR groups around the addresses changed)."""
    sels = frozenset(selectors(rec))
    if sels == state.selectors_seen and not force:
        return {}
    state.selectors_seen = sels
    changed = _apply(rec, state, set(state.cache.entries) | set(state.ips), sels)
    if changed:
        state.save()
    return changed


def restore(rec: Reconciler, state: FqdnState) -> int:
    """Before the reconciler's start: read the saved cache and give the saved addresses their
    identities again, so that the first policy sync and ipcache sync keep them. Returns how many."""
    try:
        saved = state.load()
    except DnsCacheError as e:
        # Start without them (fail closed: the names must be looked up again), and say why.
        log.warning("fqdn: learned addresses not restored: %s", e)
        return 0
    if not saved:
        return 0
    # Claim the stored numbers first, as Reconciler.start will: an identity allocated here must not
    # take a number the store gives another label set.
    rec.claim_stored_identities()
    for ip, labels in sorted(saved.items()):
        if ip in state.cache.entries:
            state.identities[ip] = rec.allocator.allocate(labels)
            state.ips[ip] = labels
    log.info("fqdn: restored %d learned addresses", len(state.identities))
    return len(state.identities)


def identity_of(rec: Reconciler, state: FqdnState, ip: str) -> int:
    """The identity the node's ipcache gives ``ip`` (flows name the DNS server and the pod by it)."""
    ep = endpoint_at(rec, ip)
    if ep is not None:
        return ep.identity
    if ip == rec.gateway or (":" in ip and ipv4_of(ip) == rec.gateway):
        return int(ReservedIdentity.HOST)
    found = state.identities.get(ip) or rec.remote_ipcache.get(host_prefix(ip))
    if found:
        return found
    addr = ipaddress.ip_address(ip)
    # world as the datapath's ipcache miss: reserved:world-ipv6 for an IPv6 address
    best, ident = -1, int(ReservedIdentity.WORLD_IPV6 if addr.version == 6 else ReservedIdentity.WORLD)
    for prefix, n in rec.cidr_identities.items():
        net = ipaddress.ip_network(prefix, strict=False)
        if addr in net and net.prefixlen > best:
            best, ident = net.prefixlen, n
    return ident


class NodeDnsHost:
    """The agent's side of :class:`cilia.proxy.host.DnsProxyHost`: the DNS proxy's questions
    answered from the reconciler's state under the agent's lock, its records sent to the flow sink."""

    def __init__(self, rec: Reconciler, lock: Any, flow_sink: Callable[[], Any]) -> None:
        self.rec, self.lock, self.flow_sink = rec, lock, flow_sink

    def dns_rules(self, ip: str) -> Sequence[str] | None:
        with self.lock:
            return dns_rules_at(self.rec, ip)

    def learn(self, name: str, addresses: Mapping[str, int]) -> None:
        with self.lock:
            learn(self.rec, self.rec.fqdn, name, addresses)

    def identity_of(self, ip: str) -> int:
        with self.lock:
            return identity_of(self.rec, self.rec.fqdn, ip)

    def report(self, record: DnsRecord) -> None:
        ingest = getattr(self.flow_sink(), "ingest_dns", None)
        if ingest is not None:
            ingest(record)


def start_proxy(agent: Any) -> DnsProxy | None:
    """The node's DNS proxy, wired to the agent's reconciler (under its lock) and flow sink; None
    when the datapath cannot redirect (the simulated one)."""
    rec: Reconciler = agent.reconciler
    if Capability.DNS_REDIRECT not in rec.datapath.capabilities:
        return None
    host = NodeDnsHost(rec, agent._lock, lambda: agent.flow_sink)
    port = dns_proxy_port(rec)
    try:
        if transparent_dns(rec):
            # every address: the datapath hands the proxy queries still addressed to their server
            transparent.install_routing()  # the node's policy routing (idempotent)
            return DnsProxy((transparent.LISTEN_ADDRESS, port), host, None).start()
        return DnsProxy((rec.gateway, port), host, rec.datapath.dns_origin).start()
    except (OSError, transparent.RoutingError) as e:
        # fail closed: nothing listens on the port, so the datapath drops the queries
        log.warning("dns proxy not started on port %d: %s", port, e)
        return None


def start_gc(agent: Any, interval_s: float = GC_INTERVAL_S) -> threading.Event:
    """Expire learned addresses every ``interval_s`` under the agent's lock; set the returned
    event to stop."""
    stop = threading.Event()
    rec: Reconciler = agent.reconciler

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                with agent._lock:
                    tick(rec, rec.fqdn)
            except Exception:  # keep expiring; the log says what failed
                log.exception("fqdn expiry")

    threading.Thread(target=loop, name="cilia-fqdn-gc", daemon=True).start()
    return stop


def flush(agent: Any) -> None:
    """Save renewals the timer has not saved yet (the agent stopping)."""
    with agent._lock:
        if agent.reconciler.fqdn.dirty:
            agent.reconciler.fqdn.save()
