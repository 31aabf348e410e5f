"""toFQDNs on the node: the DNS proxy and the identities of the addresses it learns (semantics.md §7).

* Endpoints whose egress policy has DNS rules (``toPorts … rules: dns``) get their allowed DNS
  queries (UDP and TCP port 53, after the L3/L4 policy decided on the server) redirected by the
  datapath to the proxy at ``<gateway>:10053`` in the node's namespace
  (:meth:`Datapath.set_dns_redirect`).
* The proxy answers REFUSED for names the endpoint's DNS rules do not allow; otherwise it forwards
  the query to the server it was sent to (over the same transport), and every (name, address) of
  the answer enters the node's DNS cache (:mod:`cilia.agent.dnscache`) with the answer's TTL raised
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

import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cilia.agent import dnsmsg
from cilia.agent.dnscache import DnsCache, DnsCacheError
from cilia.agent.flows import DnsRecord
from cilia.identity.allocator import LocalAllocator
from cilia.identity.cidr import cidr_identity_labels
from cilia.identity.fqdn import fqdn_label, normalize_fqdn
from cilia.identity.labels import Labels
from cilia.identity.reserved import ReservedIdentity
from cilia.policy.resolve import namespace_of, rule_selects
from cilia.policy.types import Direction
from cilia.store import Kind

if TYPE_CHECKING:
    from cilia.agent.reconcile import Reconciler

log = logging.getLogger("cilia.agent")

PROXY_PORT = 10053
IP_FREEBIND = 15  # linux/in.h
UPSTREAM_TIMEOUT = 2.0
TCP_IDLE_S = 10.0  # a DNS-over-TCP client connection idle this long is closed


@lru_cache(maxsize=4096)
def _pattern_re(pattern: str) -> re.Pattern[str]:
    p = normalize_fqdn(pattern)
    if p == "*":
        return re.compile(r".+")
    # "*" stands for any run of DNS name characters within a label, as Cilium's matchpattern does.
    return re.compile("".join("[-a-z0-9_]*" if c == "*" else re.escape(c) for c in p))


def name_matches(name: str, pattern: str) -> bool:
    """Does the DNS name match a ``matchName`` / ``matchPattern`` (case-insensitive, no trailing dot)?"""
    return _pattern_re(pattern).fullmatch(normalize_fqdn(name)) is not None


def _dns_patterns(port_rules: Iterable[Any]) -> list[str]:
    out = []
    for pr in port_rules:
        rules = getattr(pr, "rules", None)
        for d in getattr(rules, "dns", None) or ():
            out.append(d.match_name or d.match_pattern or "")
    return out


STATE_FILE = "fqdn.json"  # in the agent's state directory
GC_INTERVAL_S = 1.0
IN_USE_RECHECK_S = 10.0  # how often conntrack is read again for expired addresses still in use
STATE_VERSION = 1


@dataclass
class FqdnState:
    """The DNS cache, the addresses that have fqdn identities and what the datapath redirects."""

    ips: dict[str, Labels] = field(default_factory=dict)  # address -> identity labels
    identities: dict[str, int] = field(default_factory=dict)  # address -> identity
    # endpoint id -> proxy, as applied; None until read from the datapath (a previous agent's pins)
    redirects: dict[int, tuple[str, int]] | None = None
    cache: DnsCache = field(default_factory=DnsCache)
    path: Path | None = None  # where the state is saved (None: not saved)
    clock: Callable[[], float] = time.time
    selectors_seen: frozenset[str] | None = None  # the toFQDNs selectors the labels were made for
    endpoints_seen: frozenset[tuple[int, int]] | None = None  # (id, identity) redirects were made for
    in_use: frozenset[str] = frozenset()  # expired addresses conntrack still had, when last read
    in_use_checked: float = 0.0
    dirty: bool = False  # renewed expiry times not saved yet (the timer saves them)

    @classmethod
    def for_node(cls, state_dir: Path, min_ttl: int = 0) -> FqdnState:
        return cls(cache=DnsCache(min_ttl), path=state_dir / STATE_FILE)

    def ipcache(self) -> dict[str, int]:
        return {f"{ip}/32": ident for ip, ident in self.identities.items()}

    def save(self) -> None:
        """Write the cache and the labels of the learned addresses (atomically)."""
        if self.path is None:
            return
        data = {"version": STATE_VERSION, "cache": self.cache.to_json(),
                "labels": {ip: lbls.strings() for ip, lbls in sorted(self.ips.items())}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, self.path)
        self.dirty = False

    def load(self) -> dict[str, Labels]:
        """Read the saved cache into this state; returns the saved labels by address ({} when
        nothing was saved). A file that cannot be read is an error naming it."""
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != STATE_VERSION:
                raise DnsCacheError(f"format {data.get('version')!r}, expected {STATE_VERSION}")
            self.cache = DnsCache.from_json(data["cache"], self.cache.min_ttl)
            return {ip: Labels.parse(lbls) for ip, lbls in data.get("labels", {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DnsCacheError(f"{self.path}: {e}") from e


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
    set_redirect = getattr(rec.datapath, "set_dns_redirect", None)
    if set_redirect is None:
        return
    state.endpoints_seen = _endpoint_keys(rec)
    if state.redirects is None:
        maps = getattr(rec.datapath, "dns", None)
        state.redirects = maps.redirects() if maps is not None else {}
    if not state.redirects and not any(
        _dns_patterns(e.l7) for r in rec.policy.repo for e in r.entries if e.l7
    ):
        return  # no policy has DNS rules: nothing to redirect (the common case, checked per batch)
    proxy = (rec.gateway, PROXY_PORT)
    want = {ep.id: proxy for ep in rec.endpoints if dns_rules_of(rec, ep.identity) is not None}
    for eid in state.redirects.keys() - want.keys():
        set_redirect(eid, None)
    for eid, p in want.items():
        if state.redirects.get(eid) != p:
            set_redirect(eid, p)
    state.redirects = want


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


def allowed(rec: Reconciler, client_ip: str, name: str) -> bool:
    """May the endpoint at ``client_ip`` resolve ``name``?"""
    ep = rec.endpoints.by_ip().get(client_ip)
    if ep is None:
        return False
    patterns = dns_rules_of(rec, ep.identity)
    return patterns is not None and any(name_matches(name, p) for p in patterns)


def fqdn_identity_labels(ip: str, names: Iterable[str], sels: Iterable[str]) -> Labels | None:
    """The identity labels of an address known under ``names``: ``fqdn:<selector>`` for each
    toFQDNs selector (of ``sels``) one of the names matches, plus its ``cidr:<ip>/32`` and world
    labels; None when no selector matches (the address stays a plain world address)."""
    fq = {fqdn_label(p) for p in sels if any(name_matches(n, p) for n in names)}
    return Labels([*fq, *cidr_identity_labels(f"{ip}/32")]) if fq else None


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
        if new is not None and f"{ip}/32" in rec.remote_ipcache:
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
        rec._sync_policies(rec.policy.take_affected())  # peers learn the identities first
        for ip, ident in added.items():
            rec.datapath.upsert_ipcache(f"{ip}/32", ident)
    for ip in removed:
        prefix = f"{ip}/32"
        cidr = rec.cidr_identities.get(prefix)
        if cidr is not None:  # a policy names the /32 itself: back to its CIDR identity
            rec.datapath.upsert_ipcache(prefix, cidr)
        else:
            rec.datapath.delete_ipcache(prefix)
    for labels in releases:
        rec.allocator.release(labels)
    if releases:
        rec._sync_policies(rec.policy.take_affected())
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
    ct = getattr(rec.datapath, "ct", None)
    if ct is None:
        return set()
    return {ip for e in ct.dump() if e.expires_in_s > 0 for ip in (e.src, e.dst)}


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


def refresh(rec: Reconciler, state: FqdnState) -> dict[str, int | None]:
    """Relabel every cached address when the policies' toFQDNs selectors changed (a new selector
    matches names resolved before it existed, as Cilium's name manager does)."""
    sels = frozenset(selectors(rec))
    if sels == state.selectors_seen:
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
    if isinstance(rec.allocator, LocalAllocator):
        # Claim the stored numbers first, as Reconciler.start will: an identity allocated here
        # must not take a number the store gives another label set. They are in the store
        # already: the reconciler's restoring flag keeps it from writing them again.
        rec._restoring = True
        try:
            rec.allocator.restore({int(r.value["id"]): Labels.parse(r.value["labels"])
                                   for r in rec.store.list(Kind.IDENTITIES)})
        finally:
            rec._restoring = False
    for ip, labels in sorted(saved.items()):
        if ip in state.cache.entries:
            state.identities[ip] = rec.allocator.allocate(labels)
            state.ips[ip] = labels
    log.info("fqdn: restored %d learned addresses", len(state.identities))
    return len(state.identities)


def identity_of(rec: Reconciler, state: FqdnState, ip: str) -> int:
    """The identity the node's ipcache gives ``ip`` (flows name the DNS server and the pod by it)."""
    ep = rec.endpoints.by_ip().get(ip)
    if ep is not None:
        return ep.identity
    if ip == rec.gateway:
        return int(ReservedIdentity.HOST)
    found = state.identities.get(ip) or rec.remote_ipcache.get(f"{ip}/32")
    if found:
        return found
    addr = ipaddress.ip_address(ip)
    best, ident = -1, int(ReservedIdentity.WORLD)
    for prefix, n in rec.cidr_identities.items():
        net = ipaddress.ip_network(prefix, strict=False)
        if addr in net and net.prefixlen > best:
            best, ident = net.prefixlen, n
    return ident


def saved_cache(state_dir: Path) -> DnsCache:
    """Offline (``cilia trace`` without an agent): the DNS cache a node saved in ``state_dir`` (empty
    when it saved none). Use :meth:`DnsCache.lookup` for a name's unexpired addresses,
    :meth:`DnsCache.names` and :func:`fqdn_identity_labels` for the identity an address has."""
    state = FqdnState.for_node(state_dir)
    state.load()
    return state.cache


def _min_ttls(resp: dnsmsg.Message) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, ip, ttl in resp.answers:
        out[ip] = min(ttl, out.get(ip, ttl))
    return out


Origin = Callable[[tuple[str, int], tuple[str, int], int], "tuple[str, int] | None"]
Report = Callable[..., None]


class DnsProxy:
    """The DNS proxy on ``bind``, UDP and TCP: queries arrive redirected by the datapath;
    ``origin(client, proxy, proto)`` says where each was sent, ``check(client_ip, name)`` whether
    it may be asked, ``on_answer(name, {address: ttl})`` runs (updating policy) before the answer
    is returned, and ``report(...)`` hears of every query, answer and refusal."""

    def __init__(self, bind: tuple[str, int], origin: Origin, check: Callable[[str, str], bool],
                 on_answer: Callable[[str, dict[str, int]], None], report: Report | None = None) -> None:
        self.bind = bind
        self.origin, self.check, self.on_answer = origin, check, on_answer
        self.report = report
        self.sock = self._socket(socket.SOCK_DGRAM)
        self.bind = self.sock.getsockname()  # TCP on the same port, also when any port was asked for
        try:
            self.tcp = self._socket(socket.SOCK_STREAM)
        except OSError:
            self.sock.close()
            raise
        self.tcp.listen(64)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._udp_loop, name="cilia-dnsproxy", daemon=True),
                         threading.Thread(target=self._tcp_loop, name="cilia-dnsproxy-tcp", daemon=True)]

    def _socket(self, kind: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                # a restarted agent must not wait for TIME_WAIT; UDP goes without it, so a second
                # proxy on the same address fails loudly instead of silently sharing the port
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # The gateway address exists only once a pod (or world host) link carries it.
            s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            s.bind(self.bind)
            s.settimeout(0.2)
        except OSError:
            s.close()
            raise
        return s

    def start(self) -> DnsProxy:
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.sock.close()
        self.tcp.close()

    def _udp_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                out = self.handle(data, client, socket.IPPROTO_UDP, _forward_udp)
                if out is not None:
                    self.sock.sendto(out, client)
            except Exception:  # one bad query must not stop the proxy
                log.exception("dns proxy: query from %s", client)

    def _tcp_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, client = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn, client), name="cilia-dnsproxy-conn",
                             daemon=True).start()

    def _tcp_conn(self, conn: socket.socket, client: tuple[str, int]) -> None:
        """Queries on one connection, answered in order, until the client closes it or idles."""
        with conn:
            conn.settimeout(TCP_IDLE_S)
            while not self._stop.is_set():
                try:
                    data = dnsmsg.read_framed(conn)
                    if data is None:
                        return
                    out = self.handle(data, client, socket.IPPROTO_TCP, _forward_tcp)
                    if out is None:
                        return  # no answer to give: close, the client retries or gives up
                    conn.sendall(dnsmsg.frame(out))
                except (OSError, dnsmsg.DnsFormatError):
                    return
                except Exception:
                    log.exception("dns proxy: TCP query from %s", client)
                    return

    def handle(self, data: bytes, client: tuple[str, int], proto: int,
               forward: Callable[[bytes, tuple[str, int]], bytes | None]) -> bytes | None:
        """The answer to one query message from ``client`` (None: nothing to send back)."""
        server = self.origin(client, self.bind, proto)
        try:
            req = dnsmsg.parse(data)
        except dnsmsg.DnsFormatError:
            return None
        if server is None or req.question is None or req.is_response:
            return None
        name, qtype = req.question.name, req.question.qtype
        if not self.check(client[0], name):
            refused = dnsmsg.response(req, [], dnsmsg.RCODE_REFUSED)
            self._report(client, server, proto, name, qtype, response=True, rcode=dnsmsg.RCODE_REFUSED,
                         refused=True)
            return refused
        self._report(client, server, proto, name, qtype, response=False)
        t0 = time.monotonic_ns()
        answer = forward(data, server)
        if answer is None:
            return None  # the client retries or times out, as with a lost answer
        try:
            resp: dnsmsg.Message | None = dnsmsg.parse(answer)
        except dnsmsg.DnsFormatError:
            resp = None
        if resp is not None and resp.question is not None:
            ttls = _min_ttls(resp)
            if ttls:
                self.on_answer(resp.question.name, ttls)
            self._report(client, server, proto, name, qtype, response=True, ips=tuple(ttls),
                         ttl=min(ttls.values(), default=0), rcode=resp.rcode,
                         latency_ns=time.monotonic_ns() - t0)
        return answer

    def _report(self, client: tuple[str, int], server: tuple[str, int], proto: int, name: str, qtype: int,
                **fields: Any) -> None:
        if self.report is None:
            return
        try:
            self.report(client=client, server=server, proto=proto, query=name, qtype=qtype, **fields)
        except Exception:  # flows are for people watching; they must never fail a lookup
            log.exception("dns proxy: reporting a flow")


def _forward_udp(data: bytes, server: tuple[str, int]) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
        up.settimeout(UPSTREAM_TIMEOUT)
        up.sendto(data, server)
        try:
            answer, _ = up.recvfrom(4096)
        except TimeoutError:
            return None
    return answer


def _forward_tcp(data: bytes, server: tuple[str, int]) -> bytes | None:
    try:
        with socket.create_connection(server, timeout=UPSTREAM_TIMEOUT) as up:
            up.sendall(dnsmsg.frame(data))
            return dnsmsg.read_framed(up)
    except (OSError, dnsmsg.DnsFormatError):
        return None


def start_proxy(agent: Any) -> DnsProxy | None:
    """The node's DNS proxy, wired to the agent's reconciler (under its lock) and flow sink; None
    when the datapath cannot redirect (the simulated one)."""
    rec: Reconciler = agent.reconciler
    origin = getattr(rec.datapath, "dns_origin", None)
    if origin is None:
        return None
    state: FqdnState = rec.fqdn

    def check(client_ip: str, name: str) -> bool:
        with agent._lock:
            return allowed(rec, client_ip, name)

    def on_answer(name: str, answers: dict[str, int]) -> None:
        with agent._lock:
            learn(rec, state, name, answers)

    def report(client: tuple[str, int], server: tuple[str, int], **fields: Any) -> None:
        ingest = getattr(agent.flow_sink, "ingest_dns", None)
        if ingest is None:
            return
        with agent._lock:
            ids = identity_of(rec, state, client[0]), identity_of(rec, state, server[0])
        ingest(DnsRecord(time.time_ns(), client=client, server=server, client_identity=ids[0],
                         server_identity=ids[1], **fields))

    try:
        return DnsProxy((rec.gateway, PROXY_PORT), origin, check, on_answer, report).start()
    except OSError as e:
        log.warning("dns proxy not started on %s:%d: %s", rec.gateway, PROXY_PORT, e)
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
