"""toFQDNs over time, without a kernel: the DNS cache (TTL, minimum TTL, renewals, several names
for one address, addresses a connection still uses), the safe order of an expiry (ipcache first,
then the identity), relabelling when selectors change, the learned addresses surviving an agent
restart (saved state restored before the first policy sync), offline reading of the saved state,
and the timer's redirect safety net. Clock injected, simulated datapath, packets decided by the sim
lookup."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cilia.agent.datapaths import SimNodeDatapath
from cilia.agent.fqdn import (
    PROXY_PORT,
    FqdnState,
    dns_proxy_port,
    identity_of,
    learn,
    tick,
    transparent_dns,
    use_node_dns_port,
)
from cilia.datapath.capabilities import Capability
from cilia.identity.fqdn import fqdn_identity_labels
from cilia.policy.types import Direction, Proto
from cilia.proxy.dns.cache import DnsCache, DnsCacheError, saved_cache
from cilia.proxy.redirects import RedirectKey
from tests.helpers_fqdn import CLIENT, POLICY, Node, policy

IP, IP2 = "198.19.0.5", "198.19.0.6"
API = ["cidr:198.19.0.5/32=", "fqdn:*.example.com=", "fqdn:api.example.com=", "reserved:world="]
WILD = ["cidr:198.19.0.5/32=", "fqdn:*.example.com=", "reserved:world="]


@pytest.fixture
def node(tmp_path: Path) -> Node:
    n = Node(tmp_path)
    n.apply(CLIENT, POLICY)
    return n


def test_cache_ttl_minimum_renewal_and_round_trip() -> None:
    c = DnsCache(min_ttl=10)
    assert c.update("API.example.com.", {IP: 3, IP2: 30}, now=0) == {IP, IP2}
    assert c.entries == {IP: {"api.example.com": 10.0}, IP2: {"api.example.com": 30.0}}  # 3 s raised to 10
    assert c.update("api.example.com", {IP: 20}, now=5) == set()  # a renewal gains nothing new
    assert c.update("api.example.com", {IP: 1}, now=6) == set()  # and a shorter answer shortens nothing
    assert c.entries[IP] == {"api.example.com": 25.0}
    assert c.update("cdn.example.com", {IP: 10}, now=6) == {IP}
    assert (c.due(20), c.next_expiry(), c.lookup("api.example.com", 26)) == (
        {IP}, 16.0, [IP2])
    assert c.collect(20, keep=[IP]) == set() and c.names(IP) == {"api.example.com", "cdn.example.com"}
    assert c.collect(20) == {IP} and c.names(IP) == {"api.example.com"}
    again = DnsCache.from_json(json.loads(json.dumps(c.to_json())))
    assert again == c and DnsCache.from_json(c.to_json(), min_ttl=0).min_ttl == 0
    assert c.collect(100) == {IP, IP2} and c.entries == {}
    with pytest.raises(DnsCacheError, match="format 7"):
        DnsCache.from_json({"version": 7})


def test_expiry_renewal_and_the_safe_order(node: Node) -> None:
    assert learn(node.rec, node.state, "api.example.com", {IP: 5}) == {IP: node.state.identities[IP]}
    ident = node.state.identities[IP]
    assert node.labels(IP) == API and node.allowed(IP)
    assert node.expire(1004) == {}  # within the TTL
    learn(node.rec, node.state, "api.example.com", {IP: 5}, now=1003)  # renewed until 1008
    assert node.expire(1006) == {} and node.allowed(IP)
    node.dp.log.clear()
    assert node.expire(1008) == {IP: None}
    # the ipcache forgets the address before any policy changes, then the identity is gone
    assert node.dp.log[0] == ("ipcache-delete", f"{IP}/32")
    assert {op[0] for op in node.dp.log[1:]} <= {"apply_diff", "set_policy"}
    assert ident not in node.rec.allocator.identities()
    assert (node.state.ips, node.state.identities, node.state.cache.entries) == ({}, {}, {})
    assert f"{IP}/32" not in node.dp.prefixes and not node.allowed(IP)
    # a new lookup allows it again
    learn(node.rec, node.state, "api.example.com", {IP: 5}, now=1010)
    assert node.allowed(IP)


def test_minimum_ttl_raises_short_answers(tmp_path: Path) -> None:
    n = Node(tmp_path, min_ttl=30)
    n.apply(CLIENT, POLICY)
    learn(n.rec, n.state, "api.example.com", {IP: 1})
    assert n.expire(1029) == {} and n.allowed(IP)
    assert n.expire(1030) == {IP: None} and not n.allowed(IP)


def test_several_names_for_one_address(node: Node) -> None:
    learn(node.rec, node.state, "api.example.com", {IP: 5})
    first = node.state.identities[IP]
    learn(node.rec, node.state, "cdn.example.com", {IP: 50})
    assert node.labels(IP) == API and node.state.identities[IP] == first  # nothing new to select it by
    # api's answer expires: the address keeps the identity of what cdn's name still matches
    changed = node.expire(1006)
    assert changed == {IP: node.state.identities[IP]} and node.labels(IP) == WILD
    assert first not in node.rec.allocator.identities() and node.allowed(IP)
    assert node.expire(1050) == {IP: None} and not node.allowed(IP)


def test_an_address_in_use_outlives_its_ttl(node: Node) -> None:
    learn(node.rec, node.state, "api.example.com", {IP: 5, IP2: 5})
    assert node.expire(1010, in_use={IP}) == {IP2: None}
    assert node.allowed(IP) and node.state.cache.names(IP) == {"api.example.com"}
    # conntrack is read again for it only after a while (not on every tick of the timer)
    assert node.expire(1011, in_use=set()) == {} and node.allowed(IP)
    assert node.expire(1020, in_use=set()) == {IP: None} and not node.allowed(IP)


def test_expiry_reverts_to_the_cidr_identity_of_a_named_prefix(node: Node) -> None:
    cidr_rule = {"toCIDR": [f"{IP}/32"], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}
    node.apply(policy({"matchName": "api.example.com"}, extra=(cidr_rule,)))
    cidr_id = node.rec.cidr_identities[f"{IP}/32"]
    learn(node.rec, node.state, "api.example.com", {IP: 5})
    assert node.dp.prefixes[f"{IP}/32"] != cidr_id and node.allowed(IP, 80) and node.allowed(IP, 443)
    node.expire(1006)
    assert node.dp.prefixes[f"{IP}/32"] == cidr_id
    assert (node.allowed(IP, 80), node.allowed(IP, 443)) == (False, True)


def test_selectors_added_later_match_names_resolved_before(node: Node) -> None:
    learn(node.rec, node.state, "web.example.org", {IP2: 60})
    assert IP2 not in node.state.identities and not node.allowed(IP2)
    node.apply(policy({"matchName": "web.example.org"}))
    assert node.labels(IP2) == ["cidr:198.19.0.6/32=", "fqdn:web.example.org=", "reserved:world="]
    assert node.allowed(IP2)
    node.apply(POLICY)  # and removed again: the address is a plain world address
    assert IP2 not in node.state.identities and f"{IP2}/32" not in node.dp.prefixes
    assert not node.allowed(IP2)


def test_learned_addresses_survive_a_restart(node: Node) -> None:
    learn(node.rec, node.state, "api.example.com", {IP: 60})
    ident = node.state.identities[IP]
    saved = json.loads((node.tmp / "fqdn.json").read_text())
    assert saved == {"version": 1, "labels": {IP: API},
                     "cache": {"version": 1, "min_ttl": 0, "entries": {IP: {"api.example.com": 1060.0}}}}
    node.dp.log.clear()
    revision = node.store.revision
    node.restart()
    assert node.store.revision == revision  # the stored identities were not written again
    # the address kept its identity and its ipcache entry through the restart: never dropped
    assert node.state.identities == {IP: ident} and node.labels(IP) == API
    assert ("ipcache-delete", f"{IP}/32") not in node.dp.log and node.dp.prefixes[f"{IP}/32"] == ident
    assert node.allowed(IP)
    assert node.expire(1059) == {} and node.expire(1060) == {IP: None} and not node.allowed(IP)
    node.restart()  # and what expired stays expired
    assert node.state.identities == {} and not node.allowed(IP)


def test_a_damaged_state_file_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "fqdn.json").write_text('{"version": 1, "cache": {"version": 1, "entries": []}}')
    state = FqdnState.for_node(tmp_path)
    with pytest.raises(DnsCacheError, match=r"fqdn\.json"):
        state.load()


def test_offline_reading_of_what_a_node_learned(node: Node) -> None:
    learn(node.rec, node.state, "api.example.com", {IP: 60})
    learn(node.rec, node.state, "cdn.example.com", {IP: 5, IP2: 5})
    cache = saved_cache(node.tmp)
    assert (cache.lookup("api.example.com", 1010), cache.lookup("cdn.example.com", 1010)) == ([IP], [])
    assert cache.lookup("CDN.example.com.", 1001) == [IP, IP2]
    labels = fqdn_identity_labels(IP, cache.names(IP), ["api.example.com", "*.example.org"])
    assert labels is not None and labels.strings() == [
        "cidr:198.19.0.5/32=", "fqdn:api.example.com=", "reserved:world="]
    assert fqdn_identity_labels(IP2, cache.names(IP2), ["api.example.com"]) is None
    assert saved_cache(node.tmp / "elsewhere").entries == {}


def test_a_damaged_state_file_does_not_stop_the_agent(tmp_path: Path) -> None:
    n = Node(tmp_path)
    n.apply(CLIENT, POLICY)
    learn(n.rec, n.state, "api.example.com", {IP: 60})
    (tmp_path / "fqdn.json").write_text("{not json")
    n.restart()  # the restored addresses are lost (looked up again), the node runs on
    assert n.state.identities == {} and not n.allowed(IP)
    learn(n.rec, n.state, "api.example.com", {IP: 60})
    assert n.allowed(IP)


class RedirectingSim(SimNodeDatapath):
    """The simulated datapath plus the DNS redirect table (the kernel's is tested in
    test_fqdn_datapath.py): endpoint id -> proxy address."""

    capabilities = frozenset({Capability.DNS_REDIRECT})

    def __init__(self) -> None:
        super().__init__()
        self.redirect: dict[int, tuple[str, int]] = {}

    def set_dns_redirect(self, endpoint_id: int, proxy: tuple[str, int] | None) -> None:
        if proxy is None:
            self.redirect.pop(endpoint_id, None)
        else:
            self.redirect[endpoint_id] = proxy


def test_the_timer_redirects_endpoints_a_sync_missed(tmp_path: Path) -> None:
    n = Node(tmp_path)
    n.dp = RedirectingSim()
    n.restart()
    n.apply(CLIENT, POLICY)
    client = next(e for e in n.rec.endpoints if e.pod.name == "client")
    assert n.dp.redirect == {client.id: (n.rec.gateway, PROXY_PORT)}
    # an endpoint came by a path that did not sync the redirects (a resync after a failed batch)
    n.dp.redirect.clear()
    n.state.endpoints_seen = frozenset()
    n.state.redirects.applied = {}
    tick(n.rec, n.state)
    assert n.dp.redirect == {client.id: (n.rec.gateway, PROXY_PORT)}


def test_a_full_resync_redirects_its_endpoints(tmp_path: Path) -> None:
    """A resync (after a failed batch) leaves every endpoint with DNS rules redirected, without the
    timer's help."""
    n = Node(tmp_path)
    n.dp = RedirectingSim()
    n.restart()
    n.apply(CLIENT, POLICY)
    client = next(e for e in n.rec.endpoints if e.pod.name == "client")
    n.dp.redirect.clear()
    n.state.redirects.applied = {}
    n.rec.resync()
    assert n.dp.redirect == {client.id: (n.rec.gateway, PROXY_PORT)}


class TransparentSim(RedirectingSim):
    """A datapath with the generic proxy redirect (as the kernel's): DNS goes to the proxy by the
    policy entries' proxy port; the destination-rewrite table holds a previous agent's entry."""

    capabilities = frozenset({Capability.DNS_REDIRECT, Capability.PROXY_REDIRECT})

    def dns_redirects(self) -> dict[int, tuple[str, int]]:
        return dict(self.redirect)


def test_with_the_generic_redirect_the_policy_entries_send_dns_to_the_proxy(tmp_path: Path) -> None:
    """Node 3's DNS proxy port (15053 + 300) is on the client's DNS policy entries, the redirect is
    kept under (endpoint, egress, 53, UDP), and no destination is rewritten any more."""
    n = Node(tmp_path)
    n.dp = TransparentSim()
    n.dp.redirect[99] = ("198.18.0.1", 10053)  # a previous agent's port-53 rewrite
    n.restart()
    use_node_dns_port(SimpleNamespace(reconciler=n.rec, cfg=SimpleNamespace(node_index=3)))
    n.apply(CLIENT, POLICY)
    client = next(e for e in n.rec.endpoints if e.pod.name == "client")
    port = PROXY_PORT + 300
    assert dns_proxy_port(n.rec) == port and transparent_dns(n.rec)
    assert {(k.port, k.proto, e.proxy_port) for k, e in n.rec.applied[client.id].entries.items()
            if e.proxy_port} == {(53, Proto.UDP, port)}
    assert n.state.redirects.applied == {RedirectKey(client.id, Direction.EGRESS, 53, Proto.UDP): port}
    assert n.dp.redirect == {}


def test_renewals_are_saved_by_the_timer(node: Node) -> None:
    def saved() -> dict[str, float]:
        return json.loads((node.tmp / "fqdn.json").read_text())["cache"]["entries"][IP]

    learn(node.rec, node.state, "api.example.com", {IP: 60})
    assert saved() == {"api.example.com": 1060.0}  # new: saved at once
    learn(node.rec, node.state, "api.example.com", {IP: 60}, now=1030)
    assert saved() == {"api.example.com": 1060.0} and node.state.dirty  # a renewal waits for the timer
    tick(node.rec, node.state)
    assert saved() == {"api.example.com": 1090.0} and not node.state.dirty


def test_identity_of_names_both_sides_of_a_dns_flow(node: Node) -> None:
    learn(node.rec, node.state, "api.example.com", {IP: 60})
    client = next(e for e in node.rec.endpoints if e.pod.name == "client")
    got = {ip: identity_of(node.rec, node.state, ip)
           for ip in (client.ip, node.rec.gateway, IP, "198.19.0.53", "198.19.0.99")}
    assert got == {client.ip: client.identity, node.rec.gateway: 1, IP: node.state.identities[IP],
                   "198.19.0.53": node.rec.cidr_identities["198.19.0.53/32"], "198.19.0.99": 2}
