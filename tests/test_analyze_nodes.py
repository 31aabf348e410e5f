"""Nodes and host policies in offline analysis, as Cilium 1.18 decides them.

The facts (from Cilium's source; cilia.analyze.nodes says where): the host endpoint is identity 1 and
carries reserved:host plus the Node's labels after the pods' identity label filter; other nodes are
reserved:remote-node (6, or 7 with reserved:kube-apiserver), and with --enable-node-selector-labels
remote-node-scoped identities with node: labels that fromNodes/toNodes select; host policies (CCNP
nodeSelector) enforce default deny per direction; a hostNetwork pod is its node; host L7 is DNS on
egress only.
"""

from __future__ import annotations

import pytest

from cilia.analyze.cluster import AllowLocalhost, Analysis, EnforcementMode, Options
from cilia.analyze.flow import EndKind, FlowTrace, SideState
from cilia.analyze.manifests import cluster_from_result
from cilia.analyze.nodes import REMOTE_NODE_SCOPE
from cilia.analyze.peers import PeerError, PortSpec
from cilia.analyze.trace import trace
from cilia.identity.labels import Labels
from cilia.identity.nodelabels import host_labels, remote_labels, stripped_labels
from cilia.k8s.errors import ManifestError
from cilia.k8s.loader import load_text
from cilia.policy.l7 import L7Request
from cilia.policy.types import Direction, DropReason, Proto, RuleRef

TCP22, TCP80 = PortSpec(Proto.TCP, 22), PortSpec(Proto.TCP, 80)
UDP53 = PortSpec(Proto.UDP, 53)
CCNP = "CiliumClusterwideNetworkPolicy"

# Two nodes (node-a runs the apiserver: the default/kubernetes Endpoints point at it), a pod on each,
# a hostNetwork pod on node-a, and a pod without nodeName (on no named node: several Nodes).
CLUSTER = """\
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels:
    kubernetes.io/os: linux
    kubernetes.io/hostname: node-a
    node-role.kubernetes.io/control-plane: ""
    node-access: ssh
status:
  addresses: [{type: InternalIP, address: 198.18.254.1}]
---
apiVersion: v1
kind: Node
metadata:
  name: node-b
  labels: {kubernetes.io/os: linux, kubernetes.io/hostname: node-b, role: worker}
status:
  addresses: [{type: InternalIP, address: 198.18.254.2}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: kubernetes, namespace: default}
subsets: [{addresses: [{ip: 198.18.254.1}], ports: [{port: 6443}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-a, labels: {app: web, env: prod}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {podIP: 198.18.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: web-b, labels: {app: web, env: prod}}
spec: {nodeName: node-b, containers: [{name: c}]}
status: {podIP: 198.18.16.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {name: client}}
spec: {nodeName: node-b, containers: [{name: c}]}
status: {podIP: 198.18.16.11}
---
apiVersion: v1
kind: Pod
metadata: {name: sshd, namespace: kube-system}
spec: {nodeName: node-a, hostNetwork: true, containers: [{name: c}]}
"""


def analysis(policies: str = "", base: str = CLUSTER, options: Options = Options()) -> Analysis:
    text = base + ("---\n" + policies if policies else "")
    return Analysis(cluster_from_result(load_text(text, "c.yaml"), options.flags), options)


def one(a: Analysis, src: str, dst: str, port: PortSpec = TCP80, request: L7Request | None = None
        ) -> FlowTrace:
    (flow,) = trace(a, src, dst, port, request).flows
    return flow


# --------------------------------------------------------------------------- identities and labels


def test_host_labels_are_filtered_like_pod_labels() -> None:
    node = {
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": "n1",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "failure-domain.beta.kubernetes.io/zone": "z1",
        "k8s.io/cloud": "x",
        "node-role.kubernetes.io/control-plane": "",
        "node.kubernetes.io/instance-type": "m5",
        "topology.kubernetes.io/zone": "z1",
        "node-access": "ssh",
    }
    assert host_labels(node).strings() == [
        "k8s:node-access=ssh",
        "k8s:node-role.kubernetes.io/control-plane=",
        "k8s:node.kubernetes.io/instance-type=m5",
        "k8s:topology.kubernetes.io/zone=z1",
        "reserved:host=",
    ]
    assert stripped_labels(node) == (
        "beta.kubernetes.io/os",
        "failure-domain.beta.kubernetes.io/zone",
        "k8s.io/cloud",
        "kubernetes.io/arch",
        "kubernetes.io/hostname",
        "kubernetes.io/os",
    )
    # remote nodes keep every label (node: source) under node-selector labels, none without
    assert remote_labels(node).strings() == ["reserved:remote-node="]
    assert "node:kubernetes.io/os=linux" in remote_labels(node, node_selector_labels=True).strings()


def test_node_identities_depend_on_where_the_packet_is_decided() -> None:
    a = analysis()
    node_a, node_b = a.resolve("node:node-a")[0], a.resolve("node:node-b")[0]
    assert (node_a.kind, node_a.identity, node_a.ip) == (EndKind.NODE, 1, "198.18.254.1")
    # node-a hosts the apiserver: on itself host + kube-apiserver, elsewhere kube-apiserver (7)
    assert "reserved:kube-apiserver=" in node_a.labels.strings()
    web_a, web_b = a.resolve("default/web-a")[0], a.resolve("default/web-b")[0]
    assert (a.identity_seen_by(node_a, web_a), a.identity_seen_by(node_a, web_b)) == (1, 7)
    assert (a.identity_seen_by(node_b, web_a), a.identity_seen_by(node_b, web_b)) == (6, 1)
    # a node's address is the node, never world; so is a hostNetwork pod
    assert a.resolve("198.18.254.2")[0].node == "node-b"
    v6 = analysis(base=CLUSTER.replace("[{type: InternalIP, address: 198.18.254.2}]",
                                       "[{type: InternalIP, address: '2001:2:0:00fe::2'}]"))
    assert v6.resolve("2001:2:0:fe::2")[0].node == "node-b"
    sshd = a.resolve("kube-system/sshd")[0]
    assert (sshd.kind, sshd.node, sshd.identity) == (EndKind.NODE, "node-a", 1)
    assert "kube-system/sshd" not in {ep.name for ep in a.endpoints}  # no endpoint of its own
    with pytest.raises(PeerError, match="several Nodes"):
        a.resolve("entity:host")
    # a pod without spec.nodeName among several Nodes runs on none of them: every node is remote
    unplaced = "apiVersion: v1\nkind: Pod\nmetadata: {name: nowhere}\nspec: {containers: [{name: c}]}\n"
    b = analysis(unplaced)
    assert b.identity_seen_by(b.resolve("node:node-b")[0], b.resolve("default/nowhere")[0]) == 6
    with pytest.raises(PeerError, match="no Node node-c"):
        a.resolve("node:node-c")


def test_node_selector_labels_give_remote_nodes_scoped_identities() -> None:
    a = analysis(options=Options(node_selector_labels=True))
    node_b = a.resolve("node:node-b")[0]
    seen = a.identity_seen_by(node_b, a.resolve("default/web-a")[0])
    assert seen & REMOTE_NODE_SCOPE and seen > REMOTE_NODE_SCOPE
    labels = a.labels_of(seen)
    wanted = {"reserved:remote-node=", "node:role=worker", "node:kubernetes.io/os=linux"}
    assert wanted <= set(labels.strings())
    # --node-labels keeps only the labels it names (Cilium's node label filter, an allowlist)
    b = analysis(options=Options(node_selector_labels=True, node_labels=("role",)))
    seen = b.identity_seen_by(b.resolve("node:node-b")[0], b.resolve("default/web-a")[0])
    assert b.labels_of(seen).strings() == ["node:role=worker", "reserved:remote-node="]


# --------------------------------------------------------------------------- host policies

SSH_ONLY = f"""\
apiVersion: cilium.io/v2
kind: {CCNP}
metadata: {{name: ssh-only}}
spec:
  nodeSelector: {{matchLabels: {{node-access: ssh}}}}
  ingress:
  - fromEntities: [cluster]
  - toPorts: [{{ports: [{{port: "22", protocol: TCP}}]}}]
"""


def test_host_policy_decides_the_nodes_it_selects_per_direction() -> None:
    a = analysis(SSH_ONLY)
    assert one(a, "entity:world", "node:node-a", TCP22).allowed
    denied = one(a, "entity:world", "node:node-a", TCP80)
    assert (denied.allowed, denied.ingress.reason, denied.ingress.default_deny_by) == (
        False,
        DropReason.POLICY_DENIED,
        (RuleRef(CCNP, "", "ssh-only", "", -1),),
    )
    assert "default deny" in denied.ingress.note and "ssh-only" in denied.ingress.note
    # not selected: node-b; and egress of node-a: the policy has no egress section
    assert one(a, "entity:world", "node:node-b", TCP80).ingress.state is SideState.UNENFORCED
    out = one(a, "node:node-a", "198.19.0.1", TCP80)
    assert out.allowed and out.egress.state is SideState.UNENFORCED
    # cluster covers pods and other nodes: allowed from both, by ingress[0]
    for src in ("default/web-b", "node:node-b", "entity:remote-node"):
        flow = one(a, src, "node:node-a", TCP80)
        assert flow.allowed and flow.ingress.rules == (RuleRef(CCNP, "", "ssh-only", "ingress", 0),), src


def test_host_network_pod_is_decided_by_its_node_host_policy() -> None:
    a = analysis(SSH_ONLY)
    flow = one(a, "entity:world", "kube-system/sshd", TCP80)
    assert not flow.allowed and flow.ingress.owner == "kube-system/sshd (hostNetwork on node:node-a)"
    assert flow.ingress.default_deny_by == (RuleRef(CCNP, "", "ssh-only", "", -1),)
    assert one(a, "entity:world", "kube-system/sshd", TCP22).allowed


def test_label_filter_makes_a_selector_on_kubernetes_io_select_no_host() -> None:
    by_os = SSH_ONLY.replace("node-access: ssh", "kubernetes.io/os: linux")
    flow = one(analysis(by_os), "entity:world", "node:node-a", TCP80)
    assert flow.allowed and flow.ingress.state is SideState.UNENFORCED


def test_host_egress_to_own_pods_and_allow_localhost() -> None:
    lockdown = f"""\
apiVersion: cilium.io/v2
kind: {CCNP}
metadata: {{name: egress-lockdown}}
spec:
  nodeSelector: {{}}
  egress:
  - toEndpoints: [{{matchLabels: {{app: web}}}}]
    toPorts: [{{ports: [{{port: "80", protocol: TCP}}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: web-from-client}}
spec:
  endpointSelector: {{matchLabels: {{app: web}}}}
  ingress: [{{fromEndpoints: [{{matchLabels: {{name: client}}}}]}}]
"""
    a = analysis(lockdown)
    # node-a -> its own pod: host egress allows, the pod's ingress allows its host (allow-localhost)
    own = one(a, "node:node-a", "default/web-a")
    assert own.allowed and own.ingress.rules == (RuleRef("reserved", "", "allow-localhost-ingress", "", -1),)
    # node-a -> a pod on node-b: there node-a is a remote node, which web's policy does not allow
    far = one(a, "node:node-a", "default/web-b")
    assert not far.allowed and far.decided_by is far.ingress and "identity 7 here" in far.ingress.note
    # host egress default deny on other ports and peers
    assert one(a, "node:node-b", "default/web-b", TCP22).egress.reason == DropReason.POLICY_DENIED
    assert not one(a, "node:node-b", "entity:world").allowed


def test_from_nodes_needs_the_flag_and_selects_remote_nodes_by_label() -> None:
    policy = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: to-prod-from-control-plane-nodes}
spec:
  endpointSelector: {matchLabels: {env: prod}}
  ingress:
  - fromNodes: [{matchLabels: {node-role.kubernetes.io/control-plane: ""}}]
"""
    with pytest.raises(ManifestError, match="enable-node-selector-labels"):
        analysis(policy)
    a = analysis(policy, options=Options(node_selector_labels=True))
    assert one(a, "node:node-a", "default/web-b").allowed  # control-plane node, remote to web-b
    assert not one(a, "node:node-b", "default/web-a").allowed  # a worker
    # on node-a itself, node-a is the host: fromNodes requires reserved:remote-node, allow-localhost
    # lets it in anyway
    same = one(a, "node:node-a", "default/web-a")
    assert same.ingress.rules == (RuleRef("reserved", "", "allow-localhost-ingress", "", -1),)


def test_remote_node_and_kube_apiserver_entities_as_peers() -> None:
    policy = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-from-apiserver}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{fromEntities: [kube-apiserver]}]
"""
    a = analysis(policy)
    assert one(a, "entity:kube-apiserver", "default/web-b").allowed
    assert not one(a, "entity:remote-node", "default/web-b").allowed
    assert one(a, "node:node-a", "default/web-b").allowed  # node-a runs the apiserver
    assert not one(a, "node:node-b", "default/web-a").allowed


def test_host_dns_rules_on_egress_are_decided_by_the_dns_proxy() -> None:
    policy = f"""\
apiVersion: cilium.io/v2
kind: {CCNP}
metadata: {{name: host-dns}}
spec:
  nodeSelector: {{matchLabels: {{role: worker}}}}
  egress:
  - toEntities: [world]
    toPorts:
    - ports: [{{port: "53", protocol: UDP}}]
      rules: {{dns: [{{matchPattern: "*.example.com"}}]}}
"""
    a = analysis(policy)
    ok = one(a, "node:node-b", "198.19.0.53", UDP53, L7Request(dns="api.example.com"))
    assert ok.allowed and ok.egress.l7 is not None and ok.egress.l7.parser == "dns"
    refused = one(a, "node:node-b", "198.19.0.53", UDP53, L7Request(dns="api.other.org"))
    assert not refused.allowed and refused.egress.refused_at_l7
    http = policy.replace('port: "53", protocol: UDP', 'port: "80", protocol: TCP').replace(
        'dns: [{matchPattern: "*.example.com"}]', 'http: [{method: GET}]'
    )
    with pytest.raises(ManifestError, match="L7 protocol HTTP is not supported on host egress"):
        analysis(http)
    ingress = policy.replace("egress:", "ingress:").replace("toEntities", "fromEntities")
    with pytest.raises(ManifestError, match="L7 policy is not supported on host ingress"):
        analysis(ingress)


def test_enforcement_always_with_host_policies_enforces_every_host() -> None:
    a = analysis(SSH_ONLY, options=Options(EnforcementMode.ALWAYS))
    flow = one(a, "node:node-b", "entity:world")
    assert not flow.allowed and flow.egress.default_deny_by == ()
    no_host_policy = analysis("", options=Options(EnforcementMode.ALWAYS))  # host firewall off
    assert one(no_host_policy, "node:node-b", "entity:world").egress.state is SideState.NO_POLICY


def test_single_node_is_entity_host() -> None:
    single = CLUSTER.split("---\n")[0]
    a = analysis(SSH_ONLY, base=single)
    host = a.resolve("entity:host")[0]
    assert (host.kind, host.node) == (EndKind.NODE, "node-a")
    assert not one(a, "entity:world", "entity:host").allowed
    everyone = SSH_ONLY.replace("{matchLabels: {node-access: ssh}}", "{}")
    assert not one(analysis(everyone, base=single.replace("node-access: ssh", "x: y")), "entity:world",
                   "entity:host").allowed
    assert Labels(host.labels).strings()[-1] == "reserved:host="
    assert a.side_of(host, Direction.EGRESS).enforced is False


def test_service_with_host_network_backends_is_decided_by_the_host_policy() -> None:
    svc = """\
apiVersion: v1
kind: Service
metadata: {name: ssh, namespace: kube-system}
spec: {selector: {app: sshd}, ports: [{port: 2222, targetPort: 22}], clusterIP: 198.18.255.22}
"""
    base = CLUSTER.replace("metadata: {name: sshd, namespace: kube-system}",
                           "metadata: {name: sshd, namespace: kube-system, labels: {app: sshd}}")
    a = analysis(SSH_ONLY + "---\n" + svc, base=base)
    result = trace(a, "entity:world", "svc:kube-system/ssh", PortSpec(Proto.TCP, 2222))
    (flow,) = result.flows
    assert result.allowed and flow.dst.node == "node-a" and flow.port == 22
    assert flow.ingress.rules == (RuleRef(CCNP, "", "ssh-only", "ingress", 1),)


def test_each_node_decides_with_its_own_host_labels() -> None:
    """On each node identity 1 carries that node's labels, which a selector can match (one naming a
    reserved key: Cilium scopes the others to pods, namespace Exists)."""
    policy = """\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web-from-ssh-hosts}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{fromEndpoints: [{matchLabels: {"reserved:host": "", node-access: ssh}}]}]
"""
    a = analysis(policy, options=Options(allow_localhost=AllowLocalhost.POLICY))
    mine = one(a, "node:node-a", "default/web-a")
    assert mine.allowed and mine.ingress.rules == (RuleRef(CCNP, "", "web-from-ssh-hosts", "ingress", 0),)
    assert not one(a, "node:node-b", "default/web-b").allowed  # node-b's host has no node-access


def test_without_node_manifests_every_pod_runs_on_the_local_node() -> None:
    pods = "\n---\n".join(d for d in CLUSTER.split("---\n") if "kind: Node" not in d)
    a = analysis(SSH_ONLY.replace("{matchLabels: {node-access: ssh}}", "{}"), base=pods)
    sshd = a.resolve("kube-system/sshd")[0]  # nodeName node-a, but no Node objects: the local node
    assert (sshd.kind, sshd.node) == (EndKind.NODE, "host")
    with_ip = pods.replace("hostNetwork: true, containers: [{name: c}]}",
                           "hostNetwork: true, containers: [{name: c}]}\nstatus: {podIP: 198.18.254.9}")
    b = analysis(base=with_ip)
    assert b.resolve("198.18.254.9")[0].node == "host"  # its IP is its node's, not world
    assert not one(a, "entity:world", "kube-system/sshd").allowed
    assert one(a, "entity:host", "default/web-b").ingress.rules == (
        RuleRef("reserved", "", "allow-localhost-ingress", "", -1),
    )


def test_node_option_names_the_local_node() -> None:
    a = analysis(SSH_ONLY, options=Options(local_node="node-a"))
    host = a.resolve("entity:host")[0]
    assert (host.kind, host.node) == (EndKind.NODE, "node-a")
    assert not one(a, "entity:world", "entity:host").allowed  # node-a has node-access=ssh
    assert a.labels_of(1) == host.labels  # the host identity carries node-a's labels
    unplaced = "apiVersion: v1\nkind: Pod\nmetadata: {name: nowhere}\nspec: {containers: [{name: c}]}\n"
    b = analysis(unplaced, options=Options(local_node="node-b"))
    assert b.resolve("default/nowhere")[0].node == "node-b"  # pods without nodeName run on it
    with pytest.raises(PeerError, match="--node node-c: no such Node"):
        analysis(options=Options(local_node="node-c"))
