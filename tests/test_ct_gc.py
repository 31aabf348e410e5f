"""Conntrack garbage collection on a real (private, pinned) datapath: expired entries go, live ones
stay, the agent's timer runs the pass and stops."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from helpers_bpf import LO, private_datapath, run
from helpers_packets import TCP, frame

from cilia.agent import ctgc
from cilia.agent.datapaths import SimNodeDatapath
from cilia.datapath.maps.ct import CtValue
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.policy.types import Entry, Key


def test_the_simulated_datapath_has_nothing_to_collect() -> None:
    assert ctgc.collect(SimNodeDatapath()) == 0


@pytest.mark.root
def test_timer_deletes_expired_entries_only(tmp_path: Path) -> None:
    with private_datapath(tmp_path) as dp:
        dp.endpoints.set(EndpointInfo(LO, 5, 1001, EndpointFlags.enforcing()))
        dp.upsert_ipcache("198.18.1.10/32", 1002)
        dp.set_policy(5, {Key(1002, 0, TCP, 80, 16): Entry(False, frozenset())})
        for sport in (4000, 4001, 4002):
            assert run(dp, "to_container", frame("198.18.1.10", "198.18.1.20", TCP, sport=sport))[0]
        for k in dp.ct.ct_keys():
            if socket.ntohs(k.sport) != 4002:
                v = CtValue()
                assert dp.ct.lookup(k, v)
                v.expires_ns = 1
                dp.ct.update(k, v)
        assert sorted(e.sport for e in dp.ct.dump() if e.expires_in_s < 0) == [4000, 4001]
        stop = ctgc.start(dp, interval_s=0.05)
        try:
            deadline = time.monotonic() + 5
            while len(dp.ct.dump()) > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
        assert [e.sport for e in dp.ct.dump()] == [4002]
