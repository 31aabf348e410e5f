"""toFQDNs pieces without a kernel: the DNS wire format (round trips, compression, errors), the lab
server's answers, name/pattern matching, and the agent learning addresses from answers (identities,
policy, ipcache) on the simulated datapath."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from cilia.agent.datapaths import SimNodeDatapath
from cilia.agent.endpoints import EndpointTable
from cilia.agent.fqdn import FqdnState, allowed, dns_rules_of, learn, selectors
from cilia.agent.reconcile import Reconciler
from cilia.agent.runtime import AddressOnlyRuntime
from cilia.identity.fqdn import name_matches
from cilia.lab.dns import answer
from cilia.lab.ipam import Ipam
from cilia.proxy.dns import msg as dnsmsg
from cilia.store import key_for_object, open_store


def test_query_response_round_trip() -> None:
    q = dnsmsg.parse(dnsmsg.query(0x1234, "API.Example.com."))
    assert q == dnsmsg.Message(0x1234, 0x0100, dnsmsg.Question("api.example.com", 1, 1))
    r = dnsmsg.parse(dnsmsg.response(q, ["198.19.0.5", "198.19.0.6"], ttl=30))
    assert (r.id, r.is_response, r.rcode, r.question, r.answers) == (
        0x1234, True, 0, q.question,
        (("api.example.com", "198.19.0.5", 30), ("api.example.com", "198.19.0.6", 30)))
    refused = dnsmsg.parse(dnsmsg.response(q, [], dnsmsg.RCODE_REFUSED))
    assert (refused.rcode, refused.answers) == (dnsmsg.RCODE_REFUSED, ())


def test_compressed_names_and_bad_messages() -> None:
    header = struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0)
    question = b"\x03www\x07example\x03com\x00" + struct.pack("!HH", 1, 1)
    # answer name: "cdn" + pointer to "example.com" at offset 16
    rr = b"\x03cdn\xc0\x10" + struct.pack("!HHIH", 1, 1, 5, 4) + bytes([198, 19, 0, 9])
    msg = dnsmsg.parse(header + question + rr)
    assert msg.answers == (("cdn.example.com", "198.19.0.9", 5),)
    for bad in (b"\x00" * 5, header + b"\x03ww", header + b"\xc0\x0c" + b"\0" * 4):
        with pytest.raises(dnsmsg.DnsFormatError):
            dnsmsg.parse(bad)


def test_lab_server_answers() -> None:
    records = {"api.example.com": ["198.19.0.5"]}
    ok = dnsmsg.parse(answer(dnsmsg.query(1, "api.example.com"), records) or b"")
    missing = dnsmsg.parse(answer(dnsmsg.query(2, "nope.example.com"), records) or b"")
    aaaa = dnsmsg.parse(answer(dnsmsg.query(3, "api.example.com", qtype=28), records) or b"")
    txt = dnsmsg.parse(answer(dnsmsg.query(4, "api.example.com", qtype=16), records) or b"")
    # AAAA: the world host's IPv6 twin (cilia.datapath.dualstack); other types: no records
    assert [(m.rcode, m.answers) for m in (ok, missing, aaaa, txt)] == [
        (0, (("api.example.com", "198.19.0.5", 60),)), (3, ()),
        (0, (("api.example.com", "2001:2::c613:5", 60),)), (0, ())]
    assert answer(dnsmsg.response(ok, []), records) is None  # a response is not answered


@pytest.mark.parametrize(("name", "pattern", "match"), [
    ("api.example.com", "api.example.com", True),
    ("API.example.com.", "api.example.com", True),
    ("www.api.example.com", "api.example.com", False),
    ("api.example.com", "*.example.com", True),
    ("a.b.example.com", "*.example.com", False),  # "*" stays within one label
    ("example.com", "*.example.com", False),
    ("anything.org", "*", True),
    ("api-2.example.com", "api*.example.com", True),
])
def test_name_matches(name: str, pattern: str, match: bool) -> None:
    assert name_matches(name, pattern) is match


def _obj(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    api = "cilium.io/v2" if kind == "CiliumNetworkPolicy" else "v1"
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "default",
                                                         "labels": labels or {}}, "spec": spec}


POLICY = _obj("CiliumNetworkPolicy", "fqdn", {
    "endpointSelector": {"matchLabels": {"app": "client"}},
    "egress": [
        {"toCIDR": ["198.19.0.53/32"], "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}],
                                                     "rules": {"dns": [{"matchPattern": "*.example.com"}]}}]},
        {"toFQDNs": [{"matchName": "api.example.com"}, {"matchPattern": "*.example.com"}]}]})


def test_learned_addresses_get_fqdn_identities_before_the_answer(tmp_path: Path) -> None:
    store = open_store(backend="memory")
    ipam = Ipam(store, 0)
    dp = SimNodeDatapath()
    rec = Reconciler(store, AddressOnlyRuntime(tmp_path / "p.json", ipam.allocate, ipam.release_owner,
                                               ipam.gateway), dp, endpoints=EndpointTable())
    watch = store.watch(rec.start() + 1)
    client = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": "default",
                                                              "labels": {"app": "client"}}, "spec": {}}
    other = {**client, "metadata": {**client["metadata"], "name": "other", "labels": {"app": "other"}}}
    for obj in (client, other, POLICY):
        store.put(key_for_object(obj, "default"), obj)
    rec.handle(watch.drain())
    eps = {str(e.pod): e for e in rec.endpoints}
    c, o = eps["default/client"], eps["default/other"]
    assert selectors(rec) == {"api.example.com", "*.example.com"}
    assert (dns_rules_of(rec, c.identity), dns_rules_of(rec, o.identity)) == (["*.example.com"], None)
    assert (allowed(rec, c.ip, "api.example.com"), allowed(rec, c.ip, "x.example.org"),
            allowed(rec, o.ip, "api.example.com")) == (True, False, False)

    def verdict(ip: str) -> bool:
        return dp.flow({c.ip: c.id}, c.ip, ip, 6, 80).allowed

    state = FqdnState()
    assert not verdict("198.19.0.5")
    changed = learn(rec, state, "api.example.com", ["198.19.0.5"])
    ident = changed["198.19.0.5"]
    assert rec.allocator.identities()[ident].strings() == [
        "cidr:198.19.0.5/32=", "fqdn:*.example.com=", "fqdn:api.example.com=", "reserved:world="]
    assert dp.prefixes["198.19.0.5/32"] == ident and state.ipcache() == {"198.19.0.5/32": ident}
    assert verdict("198.19.0.5") and not verdict("198.19.0.6")
    assert learn(rec, state, "api.example.com", ["198.19.0.5"]) == {}  # nothing new
    assert learn(rec, state, "www.example.org", ["198.19.0.7"]) == {}  # no selector matches
    # the same address under a second name keeps the first name's selectors
    learn(rec, state, "cdn.example.com", ["198.19.0.5"])
    assert rec.allocator.identities()[state.identities["198.19.0.5"]].strings() == [
        "cidr:198.19.0.5/32=", "fqdn:*.example.com=", "fqdn:api.example.com=", "reserved:world="]
