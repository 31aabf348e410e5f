"""World hosts at the lab level (root, no agent): records, routes and addresses as whole structures,
input errors, servers restored after the workload daemon restarts, and teardown leaving nothing."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from cilia.lab import netns
from cilia.lab.node import Lab
from cilia.lab.world import World, WorldError, WorldHost, WorldPort, world_ifname
from cilia.store import open_store

pytestmark = pytest.mark.root

NODE = 12  # gateway 198.18.192.1; hosts 198.19.12.0/24


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = open_store(backend="memory")
    lab = Lab(store, node_index=NODE, run_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    w = World(lab)
    try:
        yield w
    finally:
        created = w.created()
        w.teardown()
        lab.teardown()
        assert created[0].isdisjoint(netns.names())
        with IPRoute() as ipr:
            assert not [n for n in created[1] if ipr.link_lookup(ifname=n)]


def _curl(w: World, client: str, url: str) -> str:
    out = w.run(client, ["curl", "-s", "--max-time", "2", url], timeout=10)
    return out.stdout if out.returncode == 0 else f"exit {out.returncode}"


def test_hosts_are_plumbed_and_recorded(world: World, tmp_path: Path) -> None:
    web = world.add("web", "198.19.12.10", [WorldPort.parse("80"), WorldPort.parse("53/udp")])
    assert web == WorldHost("web", "198.19.12.10", (WorldPort(80, "TCP"), WorldPort(53, "UDP")),
                            "cilia-world12-web", world_ifname(NODE, "web"), web.host_ifindex, "198.18.192.1",
                            str(tmp_path / "logs" / "_world" / "web.log"))
    assert world.list() == [web] and world.get("web") == web
    with IPRoute() as ipr:
        v4 = ipr.get_addr(index=web.host_ifindex, family=socket.AF_INET)
        addrs = [a.get_attr("IFA_ADDRESS") for a in v4]
        routes = [(r.get_attr("RTA_DST"), r.get("dst_len")) for r in ipr.get_routes(oif=web.host_ifindex)
                  if r.get_attr("RTA_DST")]
    assert addrs == ["198.18.192.1"] and ("198.19.12.10", 32) in routes
    inside = subprocess.run(["nsenter", f"--net={netns.path_of(web.netns)}", "ip", "-4", "-o", "route"],
                            capture_output=True, text=True, check=True).stdout
    assert "198.18.0.0/15 via 198.18.192.1 dev eth0" in inside and "default" not in inside  # lab only
    world.add("cli", "198.19.12.11")
    assert "Server name: web" in _curl(world, "cli", "http://198.19.12.10/")
    world.delete("cli")
    assert [h.name for h in world.list()] == ["web"]


def test_bad_input_changes_nothing(world: World) -> None:
    world.add("web", "198.19.12.10")
    cases = [
        (("Web", "198.19.12.20"), "lower-case letters"),
        (("far", "198.18.0.9"), "outside 198.19.0.0/16"),
        (("bad", "not-an-ip"), "is not an IPv4 address"),
        (("twin", "198.19.12.10"), "taken by world host web"),
        (("web", "198.19.12.21"), "world host web already exists"),
    ]
    for (name, ip), message in cases:
        with pytest.raises(WorldError, match=message):
            world.add(name, ip)
    with pytest.raises(WorldError, match=r"expected 1\.\.65535"):
        WorldPort.parse("70000/TCP")
    assert [h.name for h in world.list()] == ["web"]


def test_servers_come_back_after_the_workload_daemon_restarts(world: World) -> None:
    world.add("web", "198.19.12.10", [WorldPort(80)])
    world.add("cli", "198.19.12.11")
    world.lab.workloads.stop()
    assert _curl(world, "cli", "http://198.19.12.10/").startswith("exit")
    assert world.restore_workloads() == 1
    assert "Server name: web" in _curl(world, "cli", "http://198.19.12.10/")
