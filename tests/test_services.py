"""Services in the agent without a kernel (in-memory store, address-only pods, simulated datapath):
ClusterIP allocation and release, the stored ``spec.clusterIP``, backends of selector and
selector-less Services (named target ports, headless Services), as state sequences; and the
Service's own labels reaching toServices' ``k8sServiceSelector`` live and offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cilia.agent.datapaths import SimNodeDatapath
from cilia.agent.desired import PodKey
from cilia.agent.endpoints import EndpointTable
from cilia.agent.reconcile import Reconciler
from cilia.agent.runtime import AddressOnlyRuntime
from cilia.agent.services import SERVICE_RANGE, ClusterIPs, ServiceIPError, read_table
from cilia.analyze.cluster import analyse_paths
from cilia.analyze.engine_adapter import service_infos
from cilia.lab.ipam import Ipam
from cilia.store import Delete, Kind, Store, key_for_object, open_store


def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                             "labels": labels},
            "spec": {"containers": [{"name": "web", "image": "x",
                                     "ports": [{"name": "http", "containerPort": 8000}]}]}}


def service(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "labels": labels or {}}, "spec": spec}


WEB = service("web", {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"},
                                                           {"port": 53, "protocol": "UDP"},
                                                           {"port": 9, "protocol": "SCTP"}]})
EXT = service("ext", {"ports": [{"port": 443, "targetPort": 8443}]}, labels={"tier": "external"})
EXT_EP = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "ext", "namespace": "default"},
          "subsets": [{"addresses": [{"ip": "198.19.0.6"}, {"ip": "198.19.0.5"}], "ports": [{"port": 8443}]}]}
HEADLESS = service("db", {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]})


class Node:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store: Store = open_store(backend="memory")
        self.datapath = SimNodeDatapath()
        ipam = Ipam(self.store, 0)
        self.runtime = AddressOnlyRuntime(tmp / "pods.json", ipam.allocate, ipam.release_owner, ipam.gateway)
        self.restart()

    def restart(self) -> None:
        self.rec = Reconciler(self.store, self.runtime, self.datapath,
                              endpoints=EndpointTable(self.tmp / "endpoints.json"))
        self.watch = self.store.watch(self.rec.start() + 1)
        self.pump()

    def pump(self) -> None:
        for _ in range(10):
            evs = self.watch.drain()
            if not evs:
                return
            self.rec.handle(evs)
        raise AssertionError("reconcile did not settle")

    def put(self, *objs: dict[str, Any]) -> None:
        for obj in objs:
            self.store.put(key_for_object(obj, "default"), obj)
        self.pump()

    def delete(self, kind: Kind, name: str) -> None:
        self.store.txn([Delete(kind.key("default", name))])
        self.pump()

    def ip(self, name: str) -> str:
        ep = self.rec.endpoints.get(PodKey("default", name))
        assert ep is not None
        return ep.ip

    def table(self) -> list[dict[str, Any]]:
        return read_table(self.tmp / "services.json")

    def stored_cluster_ip(self, name: str) -> str | None:
        rec = self.store.get(Kind.SERVICES.key("default", name))
        assert rec is not None
        return (rec.value.get("spec") or {}).get("clusterIP")


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def test_cluster_ips_and_backends_follow_the_desired_state(node: Node) -> None:
    node.put(pod("web-1", {"app": "web"}), pod("web-2", {"app": "web"}), pod("other", {"app": "other"}),
             WEB, EXT, EXT_EP, HEADLESS)
    w1, w2 = sorted([node.ip("web-1"), node.ip("web-2")])
    assert node.table() == [
        {"namespace": "default", "name": "ext", "clusterIP": "198.18.255.1", "ports": [
            {"port": 443, "protocol": "TCP", "targetPort": "8443",
             "backends": ["198.19.0.5:8443", "198.19.0.6:8443"]}]},
        {"namespace": "default", "name": "web", "clusterIP": "198.18.255.2", "ports": [
            {"port": 80, "protocol": "TCP", "targetPort": "http", "backends": [f"{w1}:8000", f"{w2}:8000"]},
            {"port": 53, "protocol": "UDP", "targetPort": "53", "backends": [f"{w1}:53", f"{w2}:53"]}]},
    ]
    assert (node.stored_cluster_ip("ext"), node.stored_cluster_ip("web"), node.stored_cluster_ip("db")) == (
        "198.18.255.1", "198.18.255.2", "None")

    # a backend goes; a restart keeps every ClusterIP and the table
    node.delete(Kind.PODS, "web-1")
    node.restart()
    assert [(r["name"], r["clusterIP"], r["ports"][0]["backends"]) for r in node.table()] == [
        ("ext", "198.18.255.1", ["198.19.0.5:8443", "198.19.0.6:8443"]),
        ("web", "198.18.255.2", [f"{node.ip('web-2')}:8000"]),
    ]

    # a deleted Service gives its ClusterIP back; the next one gets the lowest free address
    node.delete(Kind.SERVICES, "ext")
    assert ClusterIPs(node.store).allocations() == {"198.18.255.2": "service:default/web"}
    node.put(service("api", {"selector": {"app": "web"}, "ports": [{"port": 81}]}),
             service("pinned", {"clusterIP": "198.18.255.77", "ports": [{"port": 1}]}))
    assert ClusterIPs(node.store).allocations() == {
        "198.18.255.1": "service:default/api", "198.18.255.2": "service:default/web",
        "198.18.255.77": "service:default/pinned"}


def test_the_range_can_run_out(tmp_path: Path) -> None:
    ips = ClusterIPs(open_store(backend="memory"))
    got = [ips.allocate(PodKey("default", f"s{i}")) for i in range(SERVICE_RANGE.num_addresses - 2)]
    assert len(set(got)) == 254 and got[0] == "198.18.255.1" and got[-1] == "198.18.255.254"
    with pytest.raises(ServiceIPError, match=r"no free ClusterIP left in 198\.18\.255\.0/24"):
        ips.allocate(PodKey("default", "one-too-many"))
    assert ips.allocate(PodKey("default", "s7")) == got[7]  # an existing one is still answered


def test_k8s_service_selector_matches_the_service_labels(node: Node, tmp_path: Path) -> None:
    policy = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
              "metadata": {"name": "to-ext", "namespace": "default"},
              "spec": {"endpointSelector": {"matchLabels": {"app": "client"}}, "egress": [{"toServices": [
                  {"k8sServiceSelector": {"selector": {"matchLabels": {"tier": "external"}}}}]}]}}
    node.put(pod("client", {"app": "client"}), EXT, EXT_EP, policy)
    assert {"198.19.0.5/32", "198.19.0.6/32"} <= set(node.rec.cidr_identities)
    # offline: the same manifests, the same labels
    path = tmp_path / "m.yaml"
    path.write_text("\n---\n".join(json.dumps(o) for o in (EXT, EXT_EP)))
    infos = service_infos(analyse_paths([str(path)]).cluster)
    assert [(i.name, dict(i.labels), i.backend_ips) for i in infos] == [
        ("ext", {"tier": "external"}, ("198.19.0.6", "198.19.0.5"))]


def test_dual_stack_and_ipv6_services(node: Node) -> None:
    """PreferDualStack/RequireDualStack get an IPv4 and an IPv6 ClusterIP (IPv6 from the lab's
    2001:2:0:ff::/120), SingleStack IPv6 one IPv6 ClusterIP, the stored spec filled in as the API
    server does; an IPv6 frontend's backends are the IPv6 Endpoints addresses; a family dropped
    from a Service releases its address; AAAA answers for the Service name."""
    from cilia.lab import dns

    ports = [{"port": 443, "targetPort": 8443}]
    dual = service("dual", {"ipFamilyPolicy": "PreferDualStack", "ports": ports})
    six = service("six", {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"], "ports": ports})
    eps = [{"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": n, "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "198.19.0.6"}, {"ip": "2001:2::c613:6"}],
                         "ports": [{"port": 8443}]}]} for n in ("dual", "six")]
    node.put(dual, six, *eps)
    rec = node.store.get(Kind.SERVICES.key("default", "dual"))
    assert rec is not None
    spec = rec.value["spec"]
    assert (spec["clusterIP"], spec["clusterIPs"], spec["ipFamilies"], spec["ipFamilyPolicy"]) == (
        "198.18.255.1", ["198.18.255.1", "2001:2:0:ff::1"], ["IPv4", "IPv6"], "PreferDualStack")
    assert node.table() == [
        {"namespace": "default", "name": "dual", "clusterIP": "198.18.255.1",
         "clusterIPs": ["198.18.255.1", "2001:2:0:ff::1"], "ports": [
             {"port": 443, "protocol": "TCP", "targetPort": "8443", "backends": ["198.19.0.6:8443"]},
             {"clusterIP": "2001:2:0:ff::1", "port": 443, "protocol": "TCP", "targetPort": "8443",
              "backends": ["[2001:2::c613:6]:8443"]}]},
        {"namespace": "default", "name": "six", "clusterIP": "2001:2:0:ff::2", "ports": [
            {"port": 443, "protocol": "TCP", "targetPort": "8443", "backends": ["[2001:2::c613:6]:8443"]}]},
    ]
    assert node.stored_cluster_ip("six") == "2001:2:0:ff::2"
    names = {"dual.default": ["198.18.255.1", "2001:2:0:ff::1"], "six.default": ["2001:2:0:ff::2"]}
    for name, qtype, want in (("dual", dns.TYPE_A, ["198.18.255.1"]),
                              ("dual", dns.TYPE_AAAA, ["2001:2:0:ff::1"]),
                              ("six", dns.TYPE_A, []), ("six", dns.TYPE_AAAA, ["2001:2:0:ff::2"])):
        reply = dns.answer(dns.query(7, f"{name}.default.svc.cluster.local", qtype), {}, services=names)
        assert reply is not None and [a for _, a, _ in dns.parse(reply).answers] == want, (name, qtype)
    # back to IPv4 only: the IPv6 ClusterIP is released and the frontend goes
    node.put(service("dual", {"ipFamilyPolicy": "SingleStack", "clusterIP": "198.18.255.1", "ports": ports}))
    assert [r["name"] for r in node.table()] == ["dual", "six"]
    assert node.table()[0]["ports"] == [
        {"port": 443, "protocol": "TCP", "targetPort": "8443", "backends": ["198.19.0.6:8443"]}]
    assert "2001:2:0:ff::1" not in ClusterIPs(node.store, "IPv6").allocations()
