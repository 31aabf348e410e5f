"""toFQDNs on the node: the DNS proxy and the identities of the addresses it learns (semantics.md §7).

* Endpoints whose egress policy has DNS rules (``toPorts … rules: dns``) get their allowed DNS
  queries (UDP/53, after the L3/L4 policy decided on the server) redirected by the datapath to the
  proxy at ``<gateway>:10053`` in the node's namespace (:meth:`Datapath.set_dns_redirect`).
* The proxy answers REFUSED for names the endpoint's DNS rules do not allow; otherwise it forwards
  the query to the server it was sent to, reads the A records of the answer and, for every address
  whose name matches a ``toFQDNs`` selector of any policy, gives the address an identity labelled
  ``fqdn:<selector>`` for each matching selector plus its ``cidr:<ip>/32`` and world labels; the
  policies and the ipcache learn it **before** the answer goes back to the pod, so the pod's first
  connection to the address is already decided by the new identity. Then the answer is sent.
* Learned addresses are kept for the agent's lifetime (no TTL expiry yet).
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cilia.agent import dnsmsg
from cilia.identity.cidr import cidr_identity_labels
from cilia.identity.fqdn import fqdn_label, normalize_fqdn
from cilia.identity.labels import SOURCE_FQDN, Labels
from cilia.policy.resolve import namespace_of, rule_selects
from cilia.policy.types import Direction

if TYPE_CHECKING:
    from cilia.agent.reconcile import Reconciler

log = logging.getLogger("cilia.agent")

PROXY_PORT = 10053
IP_FREEBIND = 15  # linux/in.h
UPSTREAM_TIMEOUT = 2.0


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


@dataclass
class FqdnState:
    """Addresses learned from DNS answers and their identities."""

    ips: dict[str, Labels] = field(default_factory=dict)  # address -> identity labels
    identities: dict[str, int] = field(default_factory=dict)  # address -> identity
    # endpoint id -> proxy, as applied; None until read from the datapath (a previous agent's pins)
    redirects: dict[int, tuple[str, int]] | None = None

    def ipcache(self) -> dict[str, int]:
        return {f"{ip}/32": ident for ip, ident in self.identities.items()}


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
    """Redirect exactly the endpoints with DNS rules to the proxy (kernel datapaths only)."""
    set_redirect = getattr(rec.datapath, "set_dns_redirect", None)
    if set_redirect is None:
        return
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


def allowed(rec: Reconciler, client_ip: str, name: str) -> bool:
    """May the endpoint at ``client_ip`` resolve ``name``?"""
    ep = rec.endpoints.by_ip().get(client_ip)
    if ep is None:
        return False
    patterns = dns_rules_of(rec, ep.identity)
    return patterns is not None and any(name_matches(name, p) for p in patterns)


def learn(rec: Reconciler, state: FqdnState, name: str, addresses: Iterable[str]) -> dict[str, int]:
    """Give each address of a DNS answer for ``name`` the identity of the toFQDNs selectors it
    matches; policies first, then the ipcache. Returns address -> identity of what changed."""
    matching = sorted(p for p in selectors(rec) if name_matches(name, p))
    changed: dict[str, int] = {}
    releases: list[Labels] = []
    for ip in addresses:
        # An address keeps the selectors it matched under other names (several names, one address).
        old = state.ips.get(ip)
        kept = {lb for lb in old if lb.source == SOURCE_FQDN} if old is not None else set()
        fqdn_labels = {fqdn_label(p) for p in matching} | kept
        if not fqdn_labels:
            continue
        labels = Labels([*fqdn_labels, *cidr_identity_labels(f"{ip}/32")])
        if labels == old:
            continue
        ident = rec.allocator.allocate(labels)
        if old is not None:
            releases.append(old)
        state.ips[ip] = labels
        state.identities[ip] = ident
        changed[ip] = ident
    if changed:
        rec._sync_policies(rec.policy.take_affected())  # peers learn the identities first
        for ip, ident in changed.items():
            rec.datapath.upsert_ipcache(f"{ip}/32", ident)
        for labels in releases:
            rec.allocator.release(labels)
        rec._sync_policies(rec.policy.take_affected())
        log.info("fqdn %s: %s", name, ", ".join(f"{ip} → identity {i}" for ip, i in changed.items()))
    return changed


class DnsProxy:
    """A UDP DNS proxy on ``bind``: queries arrive redirected by the datapath; ``origin`` says where
    each was sent, ``check(client_ip, name)`` whether it may be asked, and ``on_answer(name,
    addresses)`` runs (updating policy) before the answer is returned."""

    def __init__(
        self,
        bind: tuple[str, int],
        origin: Callable[[tuple[str, int], tuple[str, int]], tuple[str, int] | None],
        check: Callable[[str, str], bool],
        on_answer: Callable[[str, list[str]], None],
    ) -> None:
        self.bind = bind
        self.origin, self.check, self.on_answer = origin, check, on_answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The gateway address exists only once a pod (or world host) link carries it.
        self.sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        self.sock.bind(bind)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cilia-dnsproxy", daemon=True)

    def start(self) -> DnsProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                self._serve(data, client)
            except Exception:  # one bad query must not stop the proxy
                log.exception("dns proxy: query from %s", client)

    def _serve(self, data: bytes, client: tuple[str, int]) -> None:
        server = self.origin(client, self.bind)
        try:
            req = dnsmsg.parse(data)
        except dnsmsg.DnsFormatError:
            return
        if server is None or req.question is None:
            return
        if not self.check(client[0], req.question.name):
            self.sock.sendto(dnsmsg.response(req, [], dnsmsg.RCODE_REFUSED), client)
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(UPSTREAM_TIMEOUT)
            up.sendto(data, server)
            try:
                answer, _ = up.recvfrom(4096)
            except TimeoutError:
                return  # the client retries or times out, as with a lost answer
        try:
            resp = dnsmsg.parse(answer)
        except dnsmsg.DnsFormatError:
            resp = None
        if resp is not None and resp.question is not None and resp.answers:
            self.on_answer(resp.question.name, [a for _, a, _ in resp.answers])
        self.sock.sendto(answer, client)


def start_proxy(agent: Any) -> DnsProxy | None:
    """The node's DNS proxy, wired to the agent's reconciler (under its lock); None when the
    datapath cannot redirect (the simulated one)."""
    rec: Reconciler = agent.reconciler
    origin = getattr(rec.datapath, "dns_origin", None)
    if origin is None:
        return None
    state: FqdnState = rec.fqdn

    def check(client_ip: str, name: str) -> bool:
        with agent._lock:
            return allowed(rec, client_ip, name)

    def on_answer(name: str, addresses: list[str]) -> None:
        with agent._lock:
            learn(rec, state, name, addresses)

    try:
        return DnsProxy((rec.gateway, PROXY_PORT), origin, check, on_answer).start()
    except OSError as e:
        log.warning("dns proxy not started on %s:%d: %s", rec.gateway, PROXY_PORT, e)
        return None
