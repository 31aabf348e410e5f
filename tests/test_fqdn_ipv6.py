"""toFQDNs learns AAAA answers (no kernel): the DNS wire format reads and writes AAAA records, the DNS
proxy learns the IPv6 addresses of an answer (through its CNAME chain too), and the agent gives a
learned IPv6 address its fqdn identity with a ``cidr:…/128`` label and a /128 ipcache entry that the
simulated datapath enforces."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

from test_fqdn import POLICY

from cilia.agent.datapaths import SimNodeDatapath
from cilia.agent.endpoints import EndpointTable
from cilia.agent.fqdn import FqdnState, learn
from cilia.agent.reconcile import Reconciler
from cilia.agent.runtime import AddressOnlyRuntime
from cilia.lab.ipam import Ipam
from cilia.proxy.dns import msg as dnsmsg
from cilia.proxy.dns.proxy import learned_addresses
from cilia.store import key_for_object, open_store

V6 = "2001:2::c613:5"


def test_aaaa_records_round_trip_and_are_learned_through_a_cname() -> None:
    q = dnsmsg.parse(dnsmsg.query(9, "www.example.com", dnsmsg.TYPE_AAAA))
    r = dnsmsg.parse(dnsmsg.response(q, [V6, "198.19.0.5"], ttl=30))
    assert r.answers == (("www.example.com", V6, 30), ("www.example.com", "198.19.0.5", 30))
    # a CNAME to cdn.example.com, whose AAAA record is learned for the name asked
    header = struct.pack("!HHHHHH", 7, 0x8180, 1, 2, 0, 0)
    question = b"\x03www\x07example\x03com\x00" + struct.pack("!HH", 28, 1)
    cname = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 50, 6) + b"\x03cdn\xc0\x10"
    aaaa = b"\x03cdn\xc0\x10" + struct.pack("!HHIH", 28, 1, 20, 16) + ipaddress.IPv6Address(V6).packed
    resp = dnsmsg.parse(header + question + cname + aaaa)
    assert learned_addresses(resp, "www.example.com") == {V6: 20}
    # an AAAA record of the wrong length is ignored, not misread
    bad = b"\x03cdn\xc0\x10" + struct.pack("!HHIH", 28, 1, 20, 4) + bytes(4)
    assert dnsmsg.parse(header + question + cname + bad).answers == ()


def test_a_learned_ipv6_address_gets_an_fqdn_identity_and_a_128(tmp_path: Path) -> None:
    store = open_store(backend="memory")
    ipam = Ipam(store, 0)
    dp = SimNodeDatapath()
    rec = Reconciler(store, AddressOnlyRuntime(tmp_path / "p.json", ipam.allocate, ipam.release_owner,
                                               ipam.gateway), dp, endpoints=EndpointTable())
    watch = store.watch(rec.start() + 1)
    client = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": "default",
                                                              "labels": {"app": "client"}}, "spec": {}}
    for obj in (client, POLICY):
        store.put(key_for_object(obj, "default"), obj)
    rec.handle(watch.drain())
    [c] = list(rec.endpoints)

    def verdict(ip: str) -> bool:
        return dp.flow({c.ip: c.id}, c.ip, ip, 6, 443).allowed

    state = FqdnState()
    assert not verdict(V6)
    ident = learn(rec, state, "api.example.com", {V6: 60, "198.19.0.5": 60})[V6]
    assert rec.allocator.identities()[ident].strings() == [
        "cidr:2001-2--c613-5/128=", "fqdn:*.example.com=", "fqdn:api.example.com=", "reserved:world="]
    assert dp.prefixes[f"{V6}/128"] == ident and state.ipcache()[f"{V6}/128"] == ident
    assert verdict(V6) and verdict("198.19.0.5") and not verdict("2001:2::c613:6")
