"""MapState → kernel sync: the ordering guarantee (pure, every intermediate state checked with the
§5.5 lookup of cilia.datapath.sim), and the Datapath against real pinned maps (root)."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from helpers_bpf import LO, private_datapath, run, test_pin_root
from helpers_packets import TCP, UDP, frame

from cilia.datapath import sim
from cilia.datapath.bpf import libbpf, loader
from cilia.datapath.bpf.sync import Datapath, PolicyMapFullError, SyncError, plan
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.datapath.maps.policy import PolicyMapEntry, make_key, make_value
from cilia.policy.mapstate import MapState
from cilia.policy.types import Entry, Key, RuleRef

ING, EG = 0, 1
IDS = (0, 1002, 1003)
PROBES = [(i, d, p, port) for i in (1002, 1003, 2) for d in (ING, EG) for p in (TCP, UDP, 1)
          for port in (0, 8, 80, 81, 443, 8080)]


def rref(n: int) -> frozenset[RuleRef]:
    return frozenset({RuleRef("CiliumNetworkPolicy", "ns", f"r{n}", "ingress", 0)})


def consistent_mapstate(rnd: random.Random) -> dict[Key, Entry]:
    """A MapState built with Cilium's insertion rules (§5.4), as the engine would produce it."""
    ms = MapState()
    for _ in range(rnd.randint(0, 10)):
        proto = rnd.choice((0, TCP, UDP, 1))
        if proto == 0:
            key = Key(rnd.choice(IDS), rnd.choice((ING, EG)), 0, 0, 0)
        else:
            plen = rnd.choice((0, 16, 16, 12, 9))
            port = rnd.choice((80, 443, 8080, 0, 8)) & ((0xFFFF << (16 - plen)) & 0xFFFF)
            key = Key(rnd.choice(IDS), rnd.choice((ING, EG)), proto, port, plen)
        ms.insert(key, Entry(rnd.random() < 0.35, rref(rnd.randint(0, 3))))
    return dict(ms.items())


def allowed(state: dict[Key, Entry], probe: tuple[int, int, int, int]) -> bool:
    return sim.policy_lookup(state, *probe).allowed


def test_plan_orders_denies_first_and_deletes_last() -> None:
    a, d = Entry(False, rref(1)), Entry(True, rref(2))
    old = {Key(1002, ING, TCP, 80, 16): a, Key(1003, ING, 0, 0, 0): d, Key(0, EG, 0, 0, 0): a}
    new = {Key(1002, ING, TCP, 80, 16): d, Key(1003, ING, TCP, 0, 0): a, Key(0, EG, 0, 0, 0): a}
    phases = plan(old, new, lambda e: e.deny)
    assert [(p.name, p.upserts, p.deletes) for p in phases] == [
        ("upsert denies", {Key(1002, ING, TCP, 80, 16): d}, []),
        ("upsert allows", {Key(1003, ING, TCP, 0, 0): a}, []),
        ("delete allows", {}, []),
        ("delete denies", {}, [Key(1003, ING, 0, 0, 0)]),
    ]


def test_every_intermediate_state_keeps_both_guarantees() -> None:
    """Per single map operation of the plan: a probe denied by old and new stays denied, and a
    probe allowed by old and new stays allowed."""
    rnd = random.Random(4)
    states = ops = 0
    for _ in range(400):
        old, new = consistent_mapstate(rnd), consistent_mapstate(rnd)
        both_denied = [p for p in PROBES if not allowed(old, p) and not allowed(new, p)]
        both_allowed = [p for p in PROBES if allowed(old, p) and allowed(new, p)]
        cur = dict(old)
        for ph in plan(old, new, lambda e: e.deny):
            steps = [(k, v) for k, v in ph.upserts.items()] + [(k, None) for k in ph.deletes]
            for k, v in steps:
                if v is None:
                    del cur[k]
                else:
                    cur[k] = v
                ops += 1
                assert not [p for p in both_denied if allowed(cur, p)], (old, new, cur)
                assert [p for p in both_allowed if allowed(cur, p)] == both_allowed, (old, new, cur)
        assert cur == new
        states += 1
    assert states == 400 and ops > 1000


# ------------------------------------------------------------------------------------ root tests

A = Entry(False, rref(1))
D = Entry(True, rref(2))


@pytest.mark.root
def test_set_policy_round_trip_and_diff(tmp_path: Path) -> None:
    with private_datapath(tmp_path) as dp:
        dp.endpoints.set(EndpointInfo(LO, 9, 1001, EndpointFlags.enforcing()))
        ms = {Key(1002, ING, TCP, 80, 16): A, Key(0, ING, TCP, 8, 13): D, Key(1003, EG, 0, 0, 0): A}
        assert dp.set_policy(9, ms) == (3, 0)
        ca, cd = dp.cookies.cookie_for(A.rules), dp.cookies.cookie_for(D.rules)
        assert dp.policy_entries(9) == [
            PolicyMapEntry(9, Key(0, ING, TCP, 8, 13), True, cd, 0, 0, 0),
            PolicyMapEntry(9, Key(1002, ING, TCP, 80, 16), False, ca, 0, 0, 0),
            PolicyMapEntry(9, Key(1003, EG, 0, 0, 0), False, ca, 0, 0, 0),
        ]
        assert dp.endpoints.get(LO) == EndpointInfo(LO, 9, 1001, EndpointFlags.enforcing()
                                                    | EndpointFlags.POLICY_READY)
        new = {Key(1002, ING, TCP, 80, 16): D, Key(1003, EG, 0, 0, 0): A}
        assert dp.apply_diff(9, ms, new) == (1, 1)
        assert {e.key: e.deny for e in dp.policy_entries(9)} == {Key(1002, ING, TCP, 80, 16): True,
                                                                  Key(1003, EG, 0, 0, 0): False}
        # another endpoint's entries are untouched by a full sync of this one
        dp.set_policy(10, {Key(0, EG, 0, 0, 0): A})
        dp.set_policy(9, {})
        assert [(e.endpoint_id, e.key) for e in dp.policy_entries()] == [(10, Key(0, EG, 0, 0, 0))]


@pytest.mark.root
def test_overflow_and_invalid_keys_leave_endpoint_fail_closed(tmp_path: Path) -> None:
    with private_datapath(tmp_path, max_entries_per_endpoint=4) as dp:
        dp.endpoints.set(EndpointInfo(LO, 9, 1001, EndpointFlags.enforcing()))
        dp.upsert_ipcache("198.18.1.10/32", 1002)
        dp.set_policy(9, {Key(0, ING, 0, 0, 0): A})
        assert run(dp, "to_container", frame("198.18.1.10", "198.18.1.20", UDP))[0] is True
        too_many = {Key(1002, ING, TCP, p, 16): A for p in range(10, 15)}
        with pytest.raises(PolicyMapFullError, match="5 entries, the limit is 4"):
            dp.set_policy(9, too_many)
        assert not dp.endpoints.get(LO).flags & EndpointFlags.POLICY_READY  # type: ignore[union-attr]
        passed, events = run(dp, "to_container", frame("198.18.1.10", "198.18.1.20", UDP, sport=1))
        assert (passed, [e.not_ready for e in events]) == (False, [True])
        with pytest.raises(SyncError, match="not aligned"):
            dp.set_policy(9, {Key(1002, ING, TCP, 81, 15): A})
        dp.set_policy(9, {Key(0, ING, 0, 0, 0): A})  # a good sync makes it ready again
        assert run(dp, "to_container", frame("198.18.1.10", "198.18.1.20", UDP, sport=2))[0] is True


@pytest.mark.root
def test_reopen_reuses_pins_cookies_and_reconciles(tmp_path: Path) -> None:
    with private_datapath(tmp_path) as dp:
        dp.endpoints.set(EndpointInfo(LO, 9, 1001, EndpointFlags.enforcing()))
        dp.upsert_ipcache("198.18.1.10/32", 1002)
        dp.set_policy(9, {Key(1002, ING, TCP, 80, 16): A, Key(1002, ING, TCP, 81, 16): A})
        cookie = dp.cookies.cookie_for(A.rules)
        dp.close()
        again = Datapath(pin_root=dp.pin_root, state_dir=dp.state_dir).open()
        try:
            assert again.rules_for(cookie) == A.rules
            assert [e.prefix for e in again.ipcache.dump()] == ["198.18.1.10/32"]
            assert again.endpoints.get(LO).flags & EndpointFlags.POLICY_READY  # type: ignore[union-attr]
            # reconcile: the kernel holds two entries, the new desired state one
            assert again.set_policy(9, {Key(1002, ING, TCP, 80, 16): A}) == (0, 1)
            assert [e.key.port for e in again.policy_entries(9)] == [80]
        finally:
            again.close()
        dp.open()
    assert not Path(dp.pin_root).exists()


@pytest.mark.root
def test_failed_kernel_update_leaves_endpoint_fail_closed(tmp_path: Path) -> None:
    with private_datapath(tmp_path) as dp:
        dp.endpoints.set(EndpointInfo(LO, 9, 1001, EndpointFlags.enforcing()))
        dp.set_policy(9, {Key(0, ING, 0, 0, 0): A})
        good_fd = dp.policy.m.fd
        dp.policy.m.fd = 10**6  # no such descriptor: the kernel rejects the update (EBADF)
        try:
            with pytest.raises(SyncError, match=r"phase 'upsert denies'.*EBADF.*fail-closed"):
                dp.set_policy(9, {Key(0, ING, 0, 0, 0): A, Key(1002, ING, TCP, 80, 16): D})
        finally:
            dp.policy.m.fd = good_fd
        assert dp.endpoints.get(LO) == EndpointInfo(LO, 9, 1001, EndpointFlags.enforcing())  # not ready
        assert run(dp, "to_container", frame("198.18.1.10", "198.18.1.20", UDP))[0] is False
        # the next sync re-reads what the kernel holds for the endpoint and converges
        stray = Key(1003, EG, UDP, 53, 16)  # written behind the Datapath's back
        dp.policy.m.update(make_key(9, stray), make_value(stray, D, 0))
        assert dp.set_policy(9, {Key(1002, ING, TCP, 80, 16): A}) == (1, 2)
        assert [(e.key, e.deny) for e in dp.policy_entries(9)] == [(Key(1002, ING, TCP, 80, 16), False)]
        assert dp.endpoints.get(LO).flags & EndpointFlags.POLICY_READY  # type: ignore[union-attr]


@pytest.mark.root
def test_identity_change_orders_upserts_ipcache_deletes(tmp_path: Path) -> None:
    """Relabel: 198.18.1.10 moves 1002 → 1004; endpoint 9 allowed 1002 on 80 and now allows 1004 on
    80, and denied 1004 on 81 before. Upserts (denies, allows) precede the ipcache move, deletes follow."""
    with private_datapath(tmp_path) as dp:
        dp.endpoints.set(EndpointInfo(LO, 9, 1001, EndpointFlags.enforcing()))
        dp.upsert_ipcache("198.18.1.10/32", 1002)
        old = {Key(1002, ING, TCP, 80, 16): A, Key(1002, ING, TCP, 81, 16): D}
        new = {Key(1004, ING, TCP, 80, 16): A, Key(1004, ING, TCP, 81, 16): D}
        dp.set_policy(9, old)
        log: list[str] = []
        for name, m in (("policy", dp.policy.m), ("ipcache", dp.ipcache.v4)):
            upd, dele = m.update, m.delete
            m.update = lambda k, v, f=0, upd=upd, name=name: (log.append(f"{name} update"), upd(k, v, f))[1]
            m.delete = lambda k, dele=dele, name=name: (log.append(f"{name} delete"), dele(k))[1]
        dp.update_identity(["198.18.1.10/32"], 1004, {9: (old, new)})
        assert log == ["policy update", "policy update", "ipcache update", "policy delete", "policy delete"]
        assert dp.ipcache.identity_of("198.18.1.10") == 1004
        assert {e.key for e in dp.policy_entries(9)} == set(new)
        assert run(dp, "to_container", frame("198.18.1.10", "198.18.1.20", TCP, dport=80))[0] is True
        assert run(dp, "to_container", frame("198.18.1.10", "198.18.1.20", TCP, dport=81))[0] is False


@pytest.mark.root
def test_stale_pin_with_another_layout_is_a_clear_load_error() -> None:
    root = test_pin_root()
    Path(root).mkdir(parents=True)
    fd = libbpf.map_create(1, "cilia_endpoints", 4, 8, 16)  # a hash map with a smaller value
    try:
        libbpf.obj_pin(fd, f"{root}/cilia_endpoints")
        assert os.path.exists(f"{root}/cilia_endpoints")
        with pytest.raises(loader.LoadError, match="may come from another cilia version"):
            loader.load(root)
    finally:
        os.close(fd)
        loader.unpin_all(root)
    assert not os.path.exists(root)


@pytest.mark.root
def test_policy_synced_before_attach_makes_the_device_ready(tmp_path: Path) -> None:
    dev = f"ciliad{os.getpid() % 100000}"  # a veth of our own, down: nothing flows through it
    peer = f"ciliae{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "add", dev, "type", "veth", "peer", "name", peer], check=True)
    try:
        ifindex = int(Path(f"/sys/class/net/{dev}/ifindex").read_text())
        with private_datapath(tmp_path) as dp:
            dp.set_policy(9, {Key(0, ING, 0, 0, 0): A})
            dp.attach(ifindex, 9, 1001)
            assert dp.endpoints.get(ifindex) == EndpointInfo(ifindex, 9, 1001, EndpointFlags.enforcing()
                                                             | EndpointFlags.POLICY_READY)
            assert None not in loader.attached(ifindex).values()
            dp.attach(ifindex, 10, 1002)  # another endpoint on the device: not synced, not ready
            assert dp.endpoints.get(ifindex) == EndpointInfo(ifindex, 10, 1002, EndpointFlags.enforcing())
            dp.detach(ifindex)
            assert loader.attached(ifindex) == {"from_container": None, "to_container": None}
            assert dp.endpoints.get(ifindex) is None
    finally:
        subprocess.run(["ip", "link", "del", dev], check=False)
