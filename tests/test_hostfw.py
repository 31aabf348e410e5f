"""Host firewall facts (Cilium's ``enable-host-firewall``), checked on the agent's host endpoint
without root: what the live host firewall (tests/test_hostfw_live.py) enforces comes from here.

Facts (Cilium docs ``security/host-firewall.rst``, ``policy/language.rst`` "Host Policies"):
* the host is an endpoint with identity 1 (``reserved:host``) whose labels are the node's labels;
  ``cilium-dbg endpoint list`` shows ``k8s:node-access=ssh`` and ``reserved:host`` on it;
* node labels pass Cilium's identity label filter: ``kubernetes.io/*`` labels (hostname, os) are not
  on the host endpoint, so a nodeSelector on them selects nothing;
* host policies are CCNPs with ``nodeSelector``; only they select the host endpoint;
* a direction of the host endpoint is default-deny only when a selecting host policy has a section
  in that direction (the demo policy: ingress enforced, egress not);
* without the host firewall the host endpoint is never enforced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cilia.agent.desired import PolicyKey, parse_policy
from cilia.agent.hostendpoint import (
    HOST_ENDPOINT_ID,
    HOST_IDENTITY,
    default_node_labels,
    host_labels,
    node_manifest,
)
from cilia.agent.policystate import PolicyState
from cilia.datapath.sim import policy_lookup
from cilia.identity.labels import Labels
from cilia.identity.reserved import RESERVED_LABELS, ReservedIdentity
from cilia.policy.types import Direction, Proto

DEMO = "cilium__cilium/examples__policies__host__demo-host-policy.yaml"
POD = 300  # a pod identity of the cluster
POD_LABELS = Labels.parse(["k8s:app=client", "k8s:io.kubernetes.pod.namespace=default",
                           "k8s:io.cilium.k8s.policy.cluster=default"])
WORLD = int(ReservedIdentity.WORLD)


def _state(host_firewall: bool, node_labels: dict[str, str], *docs: dict[str, Any]) -> PolicyState:
    st = PolicyState(host_firewall=host_firewall)
    for rid, lbls in RESERVED_LABELS.items():
        st.add_identity(int(rid), lbls)
    st.add_identity(POD, POD_LABELS)
    st.add_identity(HOST_IDENTITY, host_labels(node_labels))
    for doc in docs:
        meta = doc["metadata"]
        st.set_policy(PolicyKey(doc["kind"], meta.get("namespace", ""), meta["name"]), parse_policy(doc))
    return st


def _allowed(st: PolicyState, direction: Direction, peer: int, proto: Proto, port: int) -> bool:
    return policy_lookup(st.mapstate(HOST_IDENTITY), peer, direction, proto, port).allowed


def _demo(corpus: Path) -> dict[str, Any]:
    return yaml.safe_load((corpus / DEMO).read_text())


def test_host_endpoint_labels_are_reserved_host_and_the_filtered_node_labels() -> None:
    labels = host_labels({**default_node_labels("node-0"), "node-access": "ssh"})
    assert labels.strings() == ["k8s:node-access=ssh", "reserved:host="]
    assert HOST_ENDPOINT_ID not in range(1, 0xFEFF)  # never a pod's endpoint id
    assert node_manifest("node-0", {"b": "2", "a": "1"})["metadata"] == {"name": "node-0",
                                                                        "labels": {"a": "1", "b": "2"}}


def test_demo_host_policy_enforces_ingress_only_on_the_labelled_node(corpus: Path) -> None:
    st = _state(True, {**default_node_labels("node-0"), "node-access": "ssh"}, _demo(corpus))
    assert st.enforcement(HOST_IDENTITY) == {"ingress": True, "egress": False}
    # fromEntities cluster: a pod reaches every port; the world only TCP 22 and ICMP echo
    assert _allowed(st, Direction.INGRESS, POD, Proto.TCP, 4240)
    assert _allowed(st, Direction.INGRESS, WORLD, Proto.TCP, 22)
    assert _allowed(st, Direction.INGRESS, WORLD, Proto.ICMP, 8)
    assert not _allowed(st, Direction.INGRESS, WORLD, Proto.TCP, 4240)
    assert not _allowed(st, Direction.INGRESS, WORLD, Proto.UDP, 22)
    assert _allowed(st, Direction.EGRESS, WORLD, Proto.TCP, 4240)  # egress not enforced
    assert st.summary(HOST_IDENTITY)["default_deny_by"]["ingress"] == [
        "CiliumClusterwideNetworkPolicy demo-host-policy"]


def test_demo_host_policy_selects_no_node_without_the_label(corpus: Path) -> None:
    st = _state(True, default_node_labels("node-0"), _demo(corpus))
    assert st.enforcement(HOST_IDENTITY) == {"ingress": False, "egress": False}
    assert _allowed(st, Direction.INGRESS, WORLD, Proto.TCP, 4240)


def test_host_policies_are_not_enforced_without_the_host_firewall(corpus: Path) -> None:
    st = _state(False, {"node-access": "ssh"}, _demo(corpus))
    assert st.enforcement(HOST_IDENTITY) == {"ingress": False, "egress": False}
    assert _allowed(st, Direction.INGRESS, WORLD, Proto.TCP, 4240)


def test_a_node_selector_on_a_filtered_kubelet_label_selects_nothing() -> None:
    pol = {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
           "metadata": {"name": "linux-nodes"},
           "spec": {"nodeSelector": {"matchLabels": {"kubernetes.io/os": "linux"}},
                    "ingress": [{"fromEntities": ["cluster"]}]}}
    st = _state(True, default_node_labels("node-0"), pol)  # the node *has* kubernetes.io/os=linux
    assert st.enforcement(HOST_IDENTITY) == {"ingress": False, "egress": False}


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_each_direction_is_default_deny_only_with_a_section_in_it(direction: str) -> None:
    section = {"ingress": [{"fromEntities": ["world"]}]} if direction == "ingress" else {
        "egress": [{"toEntities": ["world"]}]}
    pol = {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
           "metadata": {"name": "one-way"}, "spec": {"nodeSelector": {}, **section}}
    st = _state(True, {}, pol)
    other = "egress" if direction == "ingress" else "ingress"
    assert st.enforcement(HOST_IDENTITY) == {direction: True, other: False}
    d = Direction.INGRESS if direction == "ingress" else Direction.EGRESS
    assert _allowed(st, d, WORLD, Proto.TCP, 80)
    assert not _allowed(st, d, POD, Proto.TCP, 80)


def test_endpoint_selector_policies_never_select_the_host() -> None:
    pol = {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
           "metadata": {"name": "all-endpoints"}, "spec": {"endpointSelector": {},
                                                           "ingress": [{"fromEntities": ["world"]}]}}
    st = _state(True, {}, pol)
    assert st.enforcement(HOST_IDENTITY) == {"ingress": False, "egress": False}
    assert st.enforcement(POD) == {"ingress": True, "egress": False}


# --------------------------------------------------------------------------- apply-time safety


def _cluster_cfg(tmp_path: Path, host_firewall: bool = True) -> Any:
    from cilia.agent.config import AgentConfig

    return AgentConfig(state_dir=tmp_path / "s", run_dir=tmp_path / "r", store="etcd",
                       etcd_endpoints="198.18.254.254:2379", cluster_size=2, host_firewall=host_firewall)


def _ccnp(name: str, spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from cilia.store import Kind

    return Kind.CCNP.key("", name), {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
                                     "metadata": {"name": name}, "spec": spec}


def test_a_host_policy_cutting_the_agents_from_etcd_is_refused(tmp_path: Path, corpus: Path) -> None:
    from cilia.agent.hostsafety import FORCE_FLAG, store_lockouts
    from cilia.store import Kind, open_store

    cfg = _cluster_cfg(tmp_path)
    with open_store(tmp_path / "store") as store:
        only_cluster = dict([_ccnp("egress-cluster",
                                   {"nodeSelector": {}, "egress": [{"toEntities": ["cluster"]}]})])
        problems = store_lockouts(store, cfg, only_cluster)
        assert [p.split(":")[0] for p in problems] == ["node node-0", "node node-1"]
        assert all("198.18.254.254:2379/TCP" in p and FORCE_FLAG in p for p in problems)
        # Cilium's own lock-down example allows etcd from remote nodes (etcd runs on its nodes); in the
        # lab etcd is outside the cluster (world), so the example would cut the agents off
        lock_down = yaml.safe_load((corpus / "cilium__cilium/examples__policies__host__"
                                    "lock-down-dev-vms-remote-node.yaml").read_text())
        assert store_lockouts(store, cfg, {Kind.CCNP.key("", "lock-down-dev-vms"): lock_down})
        # the connectivity test's host egress policy allows the world: safe
        egress = yaml.safe_load((corpus / "cilium__cilium/cilium-cli__connectivity__builder__manifests__"
                                 "host-firewall-egress.yaml").read_text())
        assert store_lockouts(store, cfg, {Kind.CCNP.key("", "host-firewall-egress"): egress}) == []
        etcd_port = {"ports": [{"port": "2379", "protocol": "TCP"}]}
        to_etcd = dict([_ccnp("etcd-only", {"nodeSelector": {}, "egress": [
            {"toCIDR": ["198.18.254.0/24"], "toPorts": [etcd_port]}]})])
        assert store_lockouts(store, cfg, to_etcd) == []
        # a policy selecting one labelled node concerns that node only
        store.put(Kind.NODES.key("", "node-1"), node_manifest("node-1", {"role": "edge"}))
        edge = dict([_ccnp("edge", {"nodeSelector": {"matchLabels": {"role": "edge"}},
                                    "egress": [{"toEntities": ["cluster"]}]})])
        assert [p.split(":")[0] for p in store_lockouts(store, cfg, edge)] == ["node node-1"]
        # ingress-only host policies never cut the agent's own (outgoing) store connection
        ingress = dict([_ccnp("in", {"nodeSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]})])
        assert store_lockouts(store, cfg, ingress) == []
        assert store_lockouts(store, _cluster_cfg(tmp_path, host_firewall=False), only_cluster) == []


# --------------------------------------------------------------------------- kernel object, hostNetwork pods


def test_the_host_object_shares_every_map_of_the_datapath_by_name_and_layout() -> None:
    from cilia.datapath.bpf import hostfw, loader

    host, dp = loader.load_spec(hostfw.object_path()), loader.load_spec()
    assert sorted(p.name for p in host.programs) == ["host_egress", "host_ingress"]
    assert {p.section for p in host.programs} == {"tc"}
    for m in host.maps:  # pinned by name: the same map only if type and sizes agree
        assert m == dp.map(m.name)
    assert hostfw.HOST_ENDPOINT_ID == HOST_ENDPOINT_ID


def test_host_network_pods_are_served_on_the_node_addresses_only() -> None:
    import socket

    from cilia.agent.desired import PodKey
    from cilia.agent.hostpods import HostNetworkPods
    from cilia.k8s.objects import Container, ContainerPort, Pod

    with socket.socket() as probe:  # a free port on loopback for the test's "node address"
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    container = Container("c", None, (), (), (ContainerPort(None, port, "TCP"),))
    pod = Pod("hf-hostnet", "default", (), containers=(container,),
              host_network=True)
    pods = HostNetworkPods(lambda: ["127.0.0.1"])
    key = PodKey("default", "hf-hostnet")
    try:
        pods.sync({key: pod})
        assert pods.running() == {key: [f"127.0.0.1:{port}/TCP"]}
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            c.sendall(b"GET /x HTTP/1.0\r\n\r\n")
            reply = c.recv(4096).decode()
        assert reply.startswith("HTTP/1.1 200") and "Server name: hf-hostnet" in reply and "URI: /x" in reply
        pods.sync({})
        assert pods.running() == {}
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        pods.close()


# --------------------------------------------------------------------------- output (golden files)


def test_get_nodes_and_the_host_endpoint_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers_analyze import check_golden, run_cli

    from cilia.agent.views import endpoints_table

    monkeypatch.setenv("CILIA_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CILIA_RUN_DIR", str(tmp_path / "run"))
    code, out, _ = run_cli(["label", "node", "cilia-node-0", "node-access=ssh", "--no-wait"])
    assert (code, out) == (0, "node/cilia-node-0 labeled\n")
    code, _, err = run_cli(["label", "node", "node-7", "a=b", "--no-wait"])
    assert code == 1 and "not found" in err and "cilia-node-0" in err
    code, table, _ = run_cli(["get", "nodes"])
    assert code == 0
    check_golden("get", "nodes.txt", table)
    code, js, _ = run_cli(["get", "nodes", "-o", "json"])
    check_golden("get", "nodes.json", js)
    host = {"id": HOST_ENDPOINT_ID, "host": True, "node": "cilia-node-0", "pod": "", "ip": "198.18.0.1",
            "identity": 1, "state": "ready", "enforcement": {"ingress": True, "egress": False}, "audit": True,
            "host_ifname": "", "policy_entries": 12, "labels": ["k8s:node-access=ssh", "reserved:host="]}
    pod = {"id": 1, "pod": "default/a", "ip": "198.18.0.2", "identity": 256, "state": "ready",
           "enforcement": {"ingress": False, "egress": False}, "audit": False, "host_ifname": "lxc1",
           "policy_entries": 3, "labels": ["k8s:app=a"]}
    check_golden("get", "endpoints-host.txt", endpoints_table([host, pod], namespace="default").render())


def test_open_tcp_connections_of_the_node(tmp_path: Path) -> None:
    """The node's established connections are read with their opening direction: an accepted one
    (a listener on its port) is ingress, one the node opened is egress; other addresses are not the
    node's."""
    from cilia.agent.hostendpoint import open_tcp_connections

    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  inode\n"
    rows = [
        "0: 01C012C6:10A0 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1",  # listen :4256
        "1: 01C012C6:10A0 07C013C6:D431 01 00000000:00000000 00:00000000 00000000 0 0 2",  # accepted
        "2: 01C012C6:9C40 020013C6:094B 01 00000000:00000000 00:00000000 00000000 0 0 3",  # opened
        "3: 0200007F:9C41 0100007F:094B 01 00000000:00000000 00:00000000 00000000 0 0 4",  # not the node's
    ]
    proc = tmp_path / "tcp"
    proc.write_text(header + "\n".join(rows) + "\n")
    assert open_tcp_connections(["198.18.192.1"], proc) == [
        (0, "198.19.192.7", 0xD431, "198.18.192.1", 0x10A0),
        (1, "198.18.192.1", 0x9C40, "198.19.0.2", 0x094B),
    ]
