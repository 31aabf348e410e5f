"""The service maps and the datapath's translation on crafted packets (root, BPF_PROG_TEST_RUN):
map syncs as state sequences, DNAT before policy (the verdict is on the backend), the connection's
backend and reply translation recorded, a service without backends dropped."""

from __future__ import annotations

import ctypes
import ipaddress
import socket
from ctypes import c_uint8
from pathlib import Path

import pytest
from helpers_bpf import LO, private_datapath, run
from helpers_packets import ACK, SYN, TCP, UDP, frame

from cilia.datapath.bpf.libbpf import MapFd
from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.datapath.maps.lb import Backend, Frontend, Lb4Addr, Lb4Key, Lb4Tuple, Lb6Addr, Lb6Key, Lb6Tuple
from cilia.policy.types import Direction, Entry, Key, RuleRef

pytestmark = pytest.mark.root

EP, EP_ID, X, Y = 7, 1001, 1002, 1003
LOCAL, X4, X4B, Y4 = "198.18.1.20", "198.18.1.10", "198.18.1.11", "198.18.1.30"
VIP = "198.18.255.7"
EG = int(Direction.EGRESS)
ALLOW = Entry(False, frozenset({RuleRef("CiliumNetworkPolicy", "default", "allow", "egress", 0)}))


@pytest.fixture
def dp(tmp_path: Path):
    with private_datapath(tmp_path) as d:
        yield d


def _slots(d: Datapath) -> int:
    return len(d.lb.m.keys(Lb4Key))


def test_lb_map_sync_sequence(dp: Datapath) -> None:
    web, dns = Frontend(VIP, 80, "TCP"), Frontend(VIP, 53, "UDP")
    a = {web: (Backend(X4, 8080), Backend(X4B, 8080)), dns: (Backend(Y4, 53),)}
    b = {web: (Backend(X4B, 8080),), dns: (Backend(Y4, 53), Backend(X4, 5353), Backend(X4B, 5353))}
    c = {dns: ()}
    for want, slots in ((a, 2 + 3), (b, 2 + 4), (c, 1), ({}, 0)):
        dp.sync_services(want)
        assert dp.services() == want
        assert _slots(dp) == slots  # no surplus slot is left behind


def test_service_lookups_are_on_exactly_while_a_frontend_exists(dp: Datapath, tmp_path: Path) -> None:
    dp.endpoints.set(EndpointInfo(LO, EP, EP_ID, EndpointFlags.enforcing()))
    for prefix, ident in ((X4, X), (LOCAL, EP_ID)):
        dp.upsert_ipcache(prefix, ident)
    dp.set_policy(EP, {Key(X, EG, TCP, 80, 16): ALLOW})
    assert not dp.config_map.services()  # a fresh node: no frontend, no lookups
    web = {Frontend(VIP, 8080, "TCP"): (Backend(X4, 80),)}
    dp.sync_services(web)
    assert dp.config_map.services()
    assert run(dp, "from_container", frame(LOCAL, VIP, TCP, sport=42000, dport=8080))[0]  # translated
    # a restarted agent's datapath finds the pinned frontend: the lookups stay on
    again = Datapath(pin_root=dp.pin_root, state_dir=tmp_path / "again").open()
    try:
        assert again.config_map.services()
    finally:
        again.close()
    dp.sync_services({})
    assert not dp.config_map.services()
    # with the lookups off the maps are not read: a frontend written behind sync_services' back is
    # not translated (policy sees the ClusterIP itself: world, denied), so nothing bypasses them
    dp.lb.sync(web)
    passed, events = run(dp, "from_container", frame(LOCAL, VIP, TCP, sport=42001, dport=8080))
    assert not passed and [(e.dst, e.dport) for e in events] == [(VIP, 8080)]


def _addr(ip: str) -> ctypes.Array[c_uint8]:
    return (c_uint8 * 4)(*ipaddress.IPv4Address(ip).packed)


def _tuple(src: str, dst: str, sport: int, dport: int, proto: int) -> Lb4Tuple:
    return Lb4Tuple(_addr(src), _addr(dst), socket.htons(sport), socket.htons(dport), proto)


def _lookup(m: MapFd | None, key: Lb4Tuple) -> tuple[str, int] | None:
    assert m is not None
    val = Lb4Addr()
    if not m.lookup(key, val):
        return None
    return str(ipaddress.IPv4Address(bytes(val.addr))), socket.ntohs(val.port)


def test_dnat_happens_before_policy_and_is_remembered(dp: Datapath) -> None:
    dp.endpoints.set(EndpointInfo(LO, EP, EP_ID, EndpointFlags.enforcing()))
    for prefix, ident in ((X4, X), (Y4, Y), (LOCAL, EP_ID)):
        dp.upsert_ipcache(prefix, ident)
    dp.set_policy(EP, {Key(X, EG, TCP, 80, 16): ALLOW})  # only backend X on its target port
    dp.sync_services({Frontend(VIP, 8080, "TCP"): (Backend(X4, 80),),
                      Frontend(VIP, 9090, "TCP"): (Backend(Y4, 80),),
                      Frontend(VIP, 7070, "TCP"): ()})

    passed, events = run(dp, "from_container", frame(LOCAL, VIP, TCP, sport=41000, dport=8080))
    assert passed
    assert [(e.allowed, e.dst, e.dport, e.dst_identity) for e in events] == [(True, X4, 80, X)]
    assert _lookup(dp.lb.ct, _tuple(LOCAL, VIP, 41000, 8080, TCP)) == (X4, 80)
    assert _lookup(dp.lb.rev, _tuple(LOCAL, X4, 41000, 80, TCP)) == (VIP, 8080)
    # the reply from the backend is conntrack's reply of the translated connection
    reply = frame(X4, LOCAL, TCP, sport=80, dport=41000, tcp_flags=SYN | ACK)
    passed, events = run(dp, "to_container", reply)
    assert passed and events == []

    # the other service's backend is not allowed: dropped, and the drop names the backend
    passed, events = run(dp, "from_container", frame(LOCAL, VIP, TCP, sport=41001, dport=9090))
    assert not passed
    assert [(e.allowed, e.dst, e.dport, e.dst_identity) for e in events] == [(False, Y4, 80, Y)]

    # a service without backends drops; a port that is no service is not translated
    assert not run(dp, "from_container", frame(LOCAL, VIP, TCP, sport=41002, dport=7070))[0]
    passed, events = run(dp, "from_container", frame(LOCAL, VIP, UDP, sport=41003, dport=8080))
    assert not passed and [(e.dst, e.dport) for e in events] == [(VIP, 8080)]


def test_a_removed_backend_releases_its_connections(dp: Datapath) -> None:
    dp.endpoints.set(EndpointInfo(LO, EP, EP_ID, EndpointFlags.enforcing()))
    dp.upsert_ipcache(X4, X)
    dp.set_policy(EP, {Key(X, EG, TCP, 80, 16): ALLOW})
    fe = Frontend(VIP, 8080, "TCP")
    dp.sync_services({fe: (Backend(X4, 80),)})
    assert run(dp, "from_container", frame(LOCAL, VIP, TCP, sport=42000, dport=8080))[0]
    assert _lookup(dp.lb.ct, _tuple(LOCAL, VIP, 42000, 8080, TCP)) == (X4, 80)
    dp.sync_services({fe: (Backend(X4B, 80),)})
    assert _lookup(dp.lb.ct, _tuple(LOCAL, VIP, 42000, 8080, TCP)) is None


LOCAL6, X6, Y6 = "2001:2::c612:114", "2001:2::c612:10a", "2001:2::c612:11e"
VIP6 = "2001:2:0:ff::7"


def _lookup6(m: MapFd | None, src: str, dst: str, sport: int, dport: int,
             proto: int) -> tuple[str, int] | None:
    assert m is not None
    pack = lambda ip: (c_uint8 * 16)(*ipaddress.IPv6Address(ip).packed)  # noqa: E731
    val = Lb6Addr()
    if not m.lookup(Lb6Tuple(pack(src), pack(dst), socket.htons(sport), socket.htons(dport), proto), val):
        return None
    return str(ipaddress.IPv6Address(bytes(val.addr))), socket.ntohs(val.port)


def test_ipv6_dnat_before_policy_reply_translated_and_sync(dp: Datapath) -> None:
    """An IPv6 ClusterIP (cilia_lb6): translated to the backend's IPv6 address and target port
    before policy, the backend remembered, the reply's source translated back; a frontend of each
    family in one sync; a service without backends drops."""
    dp.endpoints.set(EndpointInfo(LO, EP, EP_ID, EndpointFlags.enforcing()))
    for prefix, ident in ((X6, X), (Y6, Y), (LOCAL6, EP_ID)):
        dp.upsert_ipcache(prefix, ident)
    dp.set_policy(EP, {Key(X, EG, TCP, 80, 16): ALLOW})
    want = {Frontend(VIP6, 8080, "TCP"): (Backend(X6, 80),), Frontend(VIP6, 9090, "TCP"): (Backend(Y6, 80),),
            Frontend(VIP6, 7070, "TCP"): (), Frontend(VIP, 8080, "TCP"): (Backend(X4, 80),)}
    dp.sync_services(want)
    assert dp.services() == want
    assert len(dp.lb.families[1].m.keys(Lb6Key)) == 3 + 2 and _slots(dp) == 2

    passed, events = run(dp, "from_container", frame(LOCAL6, VIP6, TCP, sport=43000, dport=8080))
    assert passed
    assert [(e.allowed, e.dst, e.dport, e.dst_identity) for e in events] == [(True, X6, 80, X)]
    assert _lookup6(dp.lb.families[1].ct, LOCAL6, VIP6, 43000, 8080, TCP) == (X6, 80)
    assert _lookup6(dp.lb.families[1].rev, LOCAL6, X6, 43000, 80, TCP) == (VIP6, 8080)
    assert dp.service_frontend(LOCAL6, X6, 43000, 80, TCP) == (VIP6, 8080)
    reply = frame(X6, LOCAL6, TCP, sport=80, dport=43000, tcp_flags=SYN | ACK)
    passed, events = run(dp, "to_container", reply)
    assert passed and events == []

    passed, events = run(dp, "from_container", frame(LOCAL6, VIP6, TCP, sport=43001, dport=9090))
    assert not passed
    assert [(e.allowed, e.dst, e.dport, e.dst_identity) for e in events] == [(False, Y6, 80, Y)]
    assert not run(dp, "from_container", frame(LOCAL6, VIP6, TCP, sport=43002, dport=7070))[0]

    dp.sync_services({Frontend(VIP, 8080, "TCP"): (Backend(X4, 80),)})  # the IPv6 frontends go
    assert len(dp.lb.families[1].m.keys(Lb6Key)) == 0
    assert _lookup6(dp.lb.families[1].ct, LOCAL6, VIP6, 43000, 8080, TCP) is None
    with pytest.raises(ValueError, match="other address family"):
        dp.sync_services({Frontend(VIP6, 80, "TCP"): (Backend(X4, 80),)})
