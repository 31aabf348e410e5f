"""The datapath's address guard on world hosts' devices (issue 13 item 1): a world host's node-side
veth carries the datapath as a guard-only device (no enforcement, empty policy), so what the host
sends to an address outside the lab is dropped with reason 250 — shown by ``cilia observe`` — while
world hosts keep serving each other and the node exactly as before. Outside addresses only in crafted
packets through BPF_PROG_TEST_RUN (documentation ranges): nothing is ever sent off the machine."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_bpf import private_datapath, run
from helpers_packets import TCP, UDP, frame
from pyroute2 import IPRoute

from cilia.agent.endpoints import GUARD_ENDPOINT_IDS, EndpointTable
from cilia.datapath.bpf import loader
from cilia.datapath.bpf.sync import Datapath
from cilia.lab import netns
from cilia.lab.guard_devices import GuardDevices, lab_guard_devices
from cilia.lab.node import Lab
from cilia.lab.world import World, WorldPort
from cilia.observe.flow import Verdict
from cilia.observe.pipeline import FlowPipeline
from cilia.observe.render import compact
from cilia.policy.types import DropReason
from cilia.store import open_store

NODE = 7  # gateway 198.18.112.1; hosts 198.19.7.0/24 (no other live test module uses node 7)
OUT4 = "203.0.113.9"  # documentation range: only ever inside a crafted packet


def test_pods_never_get_a_guard_endpoint_id(tmp_path: Path) -> None:
    table = EndpointTable(None)
    assert table.new_id() == 1 and GUARD_ENDPOINT_IDS.start > 1
    assert all(i not in GUARD_ENDPOINT_IDS for i in range(1, GUARD_ENDPOINT_IDS.start))


@pytest.fixture
def lab_world(tmp_path: Path) -> Iterator[tuple[World, Datapath, GuardDevices]]:
    store = open_store(backend="memory")
    lab = Lab(store, node_index=NODE, run_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    w = World(lab)
    try:
        with private_datapath(tmp_path) as dp:
            yield w, dp, GuardDevices(dp, lambda: lab_guard_devices(lab, underlay=False))
    finally:
        created = w.created()
        w.teardown()
        lab.teardown()
        assert created[0].isdisjoint(netns.names())
        with IPRoute() as ipr:
            assert not [n for n in created[1] if ipr.link_lookup(ifname=n)]


@pytest.mark.root
def test_a_world_hosts_device_is_guarded_and_still_serves(
    lab_world: tuple[World, Datapath, GuardDevices],
) -> None:
    w, dp, guard = lab_world
    web = w.add("gweb", "198.19.7.10", [WorldPort.parse("80")])
    cli = w.add("gcli", "198.19.7.11")
    guard.sync()
    ids = dp.endpoint_ids()
    assert ids.get(web.host_ifindex) in GUARD_ENDPOINT_IDS and ids.get(cli.host_ifindex) in GUARD_ENDPOINT_IDS
    assert all(loader.attached(web.host_ifindex).values())  # both programs on the world host's veth
    eid = ids[cli.host_ifindex]

    # what the world host sends outside the lab: dropped on its own device, reason 250
    passed, events = run(dp, "from_container", frame(cli.ip, OUT4, TCP, sport=45000, dport=443),
                         ifindex=cli.host_ifindex)
    assert not passed
    assert [(e.reason, e.endpoint_id, e.src, e.dst) for e in events] == [
        (DropReason.OUTSIDE_LAB, eid, cli.ip, OUT4)]
    flow = FlowPipeline().ingest(events[0])  # what `cilia observe` shows
    assert flow.verdict is Verdict.DROPPED and "Destination outside the lab" in compact(flow)
    passed, events = run(dp, "from_container", frame(cli.ip, "8.8.8.8", UDP, sport=45001, dport=53),
                         ifindex=cli.host_ifindex)
    assert not passed and [e.reason for e in events] == [DropReason.OUTSIDE_LAB]
    # inside the lab nothing changes: no policy applies to a guard-only device
    assert run(dp, "from_container", frame(cli.ip, web.ip, TCP, sport=45002, dport=80),
               ifindex=cli.host_ifindex)[0]
    assert run(dp, "to_container", frame("198.18.112.20", web.ip, TCP, sport=45003, dport=80),
               ifindex=web.host_ifindex)[0]
    # real traffic between two world hosts through both guarded devices (all lab addresses)
    out = w.run("gcli", ["curl", "-s", "--max-time", "3", f"http://{web.ip}/"], timeout=10)
    assert out.returncode == 0 and "Server name: gweb" in out.stdout

    guard.sync()  # idempotent: same ids, nothing re-attached
    assert dp.endpoint_ids() == ids
    w.delete("gcli")
    guard.sync()  # the deleted host's entry goes; the other stays
    assert dp.endpoint_ids() == {web.host_ifindex: ids[web.host_ifindex]}
    # a new agent process (restart) re-attaches the remaining host with the same id
    again = GuardDevices(dp, guard.devices)
    again.sync()
    assert dp.endpoint_ids() == {web.host_ifindex: ids[web.host_ifindex]}
    assert subprocess.run(["ip", "link", "show", web.host_ifname], capture_output=True).returncode == 0
