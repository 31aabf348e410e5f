"""The lab's address guard (issue 13): a packet from or to an address outside 198.18.0.0/15 and
2001:2::/48 is dropped by the kernel datapath with its own drop reason, whatever the policy, audit
mode or conntrack says, and the sim decides the same. Crafted packets through BPF_PROG_TEST_RUN
only: nothing is ever sent (the outside addresses are documentation ranges)."""

from __future__ import annotations

import ipaddress
import socket
import time

import pytest
from helpers_bpf import LO, private_datapath, run
from helpers_packets import ACK, ICMP, SYN, TCP, UDP, frame

from cilia.datapath import sim
from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.guard import in_lab
from cilia.datapath.maps.ct import CtKey, CtValue
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.observe.flow import Verdict
from cilia.observe.pipeline import FlowPipeline
from cilia.observe.render import compact
from cilia.policy.types import Direction, DropReason, Entry, Key, MatchType, RuleRef

EP, EP_ID = 9, 1001
POD4, POD6, PEER4 = "198.18.2.20", "2001:2::20", "198.18.2.30"
OUT4, OUT6 = "203.0.113.7", "2001:db8::7"
ING, EG = int(Direction.INGRESS), int(Direction.EGRESS)
ALLOW_ALL = {Key(0, d, 0, 0, 0): Entry(False, frozenset({RuleRef("CiliumNetworkPolicy", "default", "all",
                                                                  "egress", 0)})) for d in (ING, EG)}


def test_lab_ranges() -> None:
    assert [in_lab(a) for a in ("198.18.0.1", "198.19.255.254", "198.17.255.255", "198.20.0.0",
                                "2001:2::1", "2001:2:0:ffff::1", "2001:2:1::1", "10.0.0.1", "::1")] == [
        True, True, False, False, True, True, False, False, False]


def test_sim_drops_outside_whatever_the_policy() -> None:
    dp = sim.Datapath()
    dp.upsert_endpoint(sim.SimEndpoint(EP, POD4, EP_ID, ALLOW_ALL, "pod", audit=True))
    dp.upsert_endpoint(sim.SimEndpoint(EP + 1, PEER4, EP_ID + 1, ALLOW_ALL, "peer"))
    for src, dst, side in ((POD4, OUT4, "egress"), (OUT4, POD4, "ingress")):
        v = dp.flow(src, dst, TCP, 80)
        assert not v.allowed and v.reason is DropReason.OUTSIDE_LAB and v.deciding is not None
        assert v.deciding[0] == side and not v.deciding[1].audited
        assert v.deciding[1].match_type is MatchType.NONE
    assert dp.flow(POD4, PEER4, TCP, 80).allowed  # inside the lab the policy decides


@pytest.fixture(scope="module")
def dp(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("cilia.datapath.bpf.libbpf")
    with private_datapath(tmp_path_factory.mktemp("guard")) as d:
        d.endpoints.set(EndpointInfo(LO, EP, EP_ID, EndpointFlags.enforcing()))
        d.set_policy(EP, ALLOW_ALL)
        yield d


def _only_event(events: list) -> object:
    mine = [e for e in events if e.endpoint_id == EP]
    assert len(mine) == 1, mine
    return mine[0]


CASES = [
    ("from_container", POD4, OUT4, TCP, EG),
    ("from_container", POD4, OUT4, UDP, EG),
    ("from_container", POD4, OUT4, ICMP, EG),
    ("from_container", POD6, OUT6, TCP, EG),
    ("from_container", OUT4, PEER4, TCP, EG),  # a spoofed outside source
    ("to_container", OUT4, POD4, TCP, ING),
    ("to_container", OUT6, POD6, UDP, ING),
]


@pytest.mark.root
@pytest.mark.parametrize(("prog", "src", "dst", "proto", "direction"), CASES)
def test_kernel_drops_outside_addresses(dp: Datapath, prog: str, src: str, dst: str, proto: int,
                                        direction: int) -> None:
    before = dp.metrics_map.counts()
    passed, events = run(dp, prog, frame(src, dst, proto, sport=41000, dport=53))
    ev = _only_event(events)
    assert not passed
    assert (ev.reason, ev.allowed, ev.audited, ev.direction, ev.src, ev.dst) == (
        DropReason.OUTSIDE_LAB, False, False, Direction(direction), src, dst)
    flow = FlowPipeline().ingest(ev)  # what `cilia observe` shows
    assert flow.verdict is Verdict.DROPPED and "Destination outside the lab" in compact(flow)
    key = (Direction(direction).label, "dropped", "Destination outside the lab")
    assert dp.metrics_map.counts().get(key, 0) == before.get(key, 0) + 1
    # the same packet inside the lab passes: the policy allows everything
    inside = (src if in_lab(src) else (PEER4 if ":" not in src else "2001:2::30"),
              dst if in_lab(dst) else (PEER4 if ":" not in dst else "2001:2::30"))
    assert run(dp, prog, frame(*inside, proto, sport=41000, dport=53))[0]


@pytest.mark.root
def test_audit_mode_and_conntrack_do_not_open_it(dp: Datapath) -> None:
    dp.set_audit(EP, True)
    try:
        assert not run(dp, "from_container", frame(POD4, OUT4, TCP, sport=42000, dport=443))[0]
        # a conntrack entry for a connection to the outside (as if opened before the guard):
        # neither the reply nor more forward packets pass
        key = CtKey(ep_id=EP, direction=EG, proto=TCP, family=4, saddr=ctypes_addr(POD4),
                    daddr=ctypes_addr(OUT4), sport=socket.htons(42001), dport=socket.htons(443))
        dp.ct.update(key, CtValue(time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 60 * 10**9, 1, 60, 0, 0))
        assert not run(dp, "to_container", frame(OUT4, POD4, TCP, sport=443, dport=42001,
                                                 tcp_flags=SYN | ACK))[0]
        assert not run(dp, "from_container", frame(POD4, OUT4, TCP, sport=42001, dport=443, tcp_flags=ACK))[0]
    finally:
        dp.set_audit(EP, False)
        dp.flush_ct(EP)


def ctypes_addr(ip: str):  # type: ignore[no-untyped-def]
    from ctypes import c_uint8

    raw = ipaddress.ip_address(ip).packed
    return (c_uint8 * 16)(*raw.ljust(16, b"\0"))


@pytest.mark.root
def test_guard_only_device(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A device registered without enforcement (e.g. a world host's veth: attach with no ENFORCE
    flag, then an empty policy) forwards everything inside the lab and drops the rest."""
    with private_datapath(tmp_path) as d:
        d.endpoints.set(EndpointInfo(LO, EP + 1, 2, EndpointFlags(0)))
        d.set_policy(EP + 1, {})  # marks it ready
        assert run(d, "from_container", frame("198.19.0.9", PEER4, TCP, sport=43000, dport=80))[0]
        assert run(d, "to_container", frame(PEER4, "198.19.0.9", TCP, sport=80, dport=43000))[0]
        passed, events = run(d, "from_container", frame("198.19.0.9", OUT4, TCP, sport=43001, dport=80))
        assert not passed and [e.reason for e in events] == [DropReason.OUTSIDE_LAB]


@pytest.mark.root
def test_a_service_backend_outside_the_lab_is_not_reached(dp: Datapath) -> None:
    from cilia.datapath.maps.lb import Backend, Frontend

    dp.sync_services({Frontend("198.18.255.77", 80, "TCP"): (Backend(OUT4, 80),)})
    try:
        passed, events = run(dp, "from_container", frame(POD4, "198.18.255.77", TCP, sport=44000, dport=80))
        assert not passed
        assert [(e.reason, e.dst) for e in _mine(events)] == [(DropReason.OUTSIDE_LAB, OUT4)]
    finally:
        dp.sync_services({})


def _mine(events: list) -> list:  # type: ignore[type-arg]
    return [e for e in events if e.endpoint_id == EP]
