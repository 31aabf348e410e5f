"""Services on several nodes: a selector's pods running on other nodes are backends too, at the
address their node published (no root: the simulated datapath; the cluster part on a real etcd)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cilia.agent.cluster import ClusterMember
from cilia.agent.config import AgentConfig
from cilia.agent.datapaths import SimNodeDatapath
from cilia.agent.desired import PodKey
from cilia.agent.endpoints import EndpointTable
from cilia.agent.reconcile import Reconciler
from cilia.agent.runtime import AddressOnlyRuntime
from cilia.agent.services import read_table
from cilia.datapath.maps.lb import Backend, Frontend
from cilia.lab.etcd_cluster import EtcdCluster
from cilia.lab.ipam import Ipam
from cilia.store import Store, key_for_object, open_store
from cilia.store.etcd import EtcdBackend
from cilia.store.nodes import NodeInfo, join
from tests.test_services import WEB, pod

REMOTE_IP = "198.18.32.7"  # web-2 on node 2


class SimDatapathWithServices(SimNodeDatapath):
    """The simulated datapath, keeping the service table it is given (the kernel one translates)."""

    services: dict[Frontend, tuple[Backend, ...]] | None = None

    def sync_services(self, table: dict[Frontend, tuple[Backend, ...]]) -> None:
        self.services = dict(table)


def make_node(tmp: Path, store: Store) -> tuple[Reconciler, SimDatapathWithServices]:
    ipam = Ipam(store, 0)
    runtime = AddressOnlyRuntime(tmp / "pods.json", ipam.allocate, ipam.release_owner, ipam.gateway)
    dp = SimDatapathWithServices()
    rec = Reconciler(store, runtime, dp, endpoints=EndpointTable(tmp / "endpoints.json"),
                     schedule=lambda pk, manifest: pk.name != "web-2")
    return rec, dp


def put(store: Store, *objs: dict[str, Any]) -> None:
    for obj in objs:
        store.put(key_for_object(obj, "default"), obj)


def test_remote_pods_are_backends_at_their_published_address(tmp_path: Path) -> None:
    store = open_store(backend="memory")
    put(store, pod("web-1", {"app": "web"}), pod("web-2", {"app": "web"}), WEB)
    rec, dp = make_node(tmp_path, store)
    rec.start()
    local = rec.endpoints.get(PodKey("default", "web-1"))
    assert local is not None and rec.endpoints.get(PodKey("default", "web-2")) is None
    fe80, fe53 = Frontend("198.18.255.1", 80, "TCP"), Frontend("198.18.255.1", 53, "UDP")
    assert dp.services == {fe80: (Backend(local.ip, 8000),), fe53: (Backend(local.ip, 53),)}

    rec.remote_pods[PodKey("default", "web-2")] = REMOTE_IP
    assert rec.sync_services()
    assert dp.services == {
        fe80: tuple(sorted([Backend(local.ip, 8000), Backend(REMOTE_IP, 8000)])),
        fe53: tuple(sorted([Backend(local.ip, 53), Backend(REMOTE_IP, 53)])),
    }
    assert [p["backends"] for p in read_table(tmp_path / "services.json")[0]["ports"]] == [
        sorted([f"{local.ip}:8000", f"{REMOTE_IP}:8000"]), sorted([f"{local.ip}:53", f"{REMOTE_IP}:53"])]

    # An address of a pod that is not (or no longer) desired is no backend.
    rec.remote_pods[PodKey("default", "gone")] = "198.18.32.9"
    assert not rec.sync_services()


# --------------------------------------------------------------------------- the cluster member (etcd)


def test_member_follows_other_nodes_pods_into_the_service_table(etcd: EtcdCluster, tmp_path: Path) -> None:
    store = Store(EtcdBackend(etcd.endpoints))
    other = EtcdBackend(etcd.endpoints)
    cfg = AgentConfig(state_dir=tmp_path / "s", run_dir=tmp_path / "r", store="etcd",
                      etcd_endpoints=",".join(etcd.endpoints), node_name="node-0", node_index=0,
                      cluster_size=3, datapath="sim")
    member = ClusterMember(cfg, store)
    try:
        put(store, pod("web-1", {"app": "web"}), pod("web-2", {"app": "web"}), WEB)
        rec, dp = make_node(tmp_path, store)
        agent = SimpleNamespace(reconciler=rec, _lock=threading.RLock(), _ready=False)
        member.attach(agent)
        with agent._lock:
            rec.start()
        local = rec.endpoints.get(PodKey("default", "web-1"))
        assert local is not None
        fe = Frontend("198.18.255.1", 80, "TCP")
        assert dp.services is not None and dp.services[fe] == (Backend(local.ip, 8000),)

        node2 = join(other, NodeInfo.lab("node-2", 2), ttl=10)
        node2.publish(REMOTE_IP, 300, "default/web-2")

        def backends() -> tuple[Backend, ...]:
            with agent._lock:
                return (dp.services or {}).get(fe, ())

        deadline = time.monotonic() + 10
        while len(backends()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backends() == tuple(sorted([Backend(local.ip, 8000), Backend(REMOTE_IP, 8000)]))
        assert rec.remote_ipcache[f"{REMOTE_IP}/32"] == 300

        node2.leave()  # the node is gone: its pod is no backend any more
        deadline = time.monotonic() + 10
        while len(backends()) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backends() == (Backend(local.ip, 8000),)
    finally:
        member.close()
        other.close()
        store.close()


def test_a_dual_stack_service_balances_remote_pods_at_their_ipv6_twins(tmp_path: Path) -> None:
    """The IPv6 frontend of a dual-stack Service: another node's pod at the IPv6 twin of the
    address its node published (its node routes the twin, cilia.lab.nodes_lab); a local pod of an
    IPv4-only runtime has no IPv6 address, so it is an IPv4 backend only."""
    store = open_store(backend="memory")
    web = {**WEB, "spec": {**WEB["spec"], "ipFamilyPolicy": "PreferDualStack"}}
    put(store, pod("web-1", {"app": "web"}), pod("web-2", {"app": "web"}), web)
    rec, dp = make_node(tmp_path, store)
    rec.start()
    local = rec.endpoints.get(PodKey("default", "web-1"))
    assert local is not None and not local.ip6
    rec.remote_pods[PodKey("default", "web-2")] = REMOTE_IP
    assert rec.sync_services() and dp.services is not None
    fe80, fe80v6 = Frontend("198.18.255.1", 80, "TCP"), Frontend("2001:2:0:ff::1", 80, "TCP")
    assert dp.services[fe80] == tuple(sorted([Backend(local.ip, 8000), Backend(REMOTE_IP, 8000)]))
    assert dp.services[fe80v6] == (Backend("2001:2::c612:2007", 8000),)  # 198.18.32.7's twin
