"""Node manifests and hostNetwork pods: read next to pods and Services, validated with file:line:field."""

from __future__ import annotations

from cilia.k8s.cluster import build_cluster
from cilia.k8s.loader import load_text
from cilia.k8s.validate import validate_result

NODES = """\
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {kubernetes.io/os: linux, node-access: ssh}
status:
  addresses:
  - {type: InternalIP, address: 198.18.254.1}
  - {type: Hostname, address: node-a}
  - {type: ExternalIP, address: "2001:2:0:fe::1"}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: kube-system}
spec: {nodeName: node-a, hostNetwork: true, containers: [{name: c}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: probe}
spec:
  selector: {matchLabels: {app: probe}}
  template:
    metadata: {labels: {app: probe}}
    spec: {hostNetwork: true, containers: [{name: c}]}
"""


def test_nodes_and_host_network_pods_are_read() -> None:
    result = load_text(NODES, "nodes.yaml")
    assert validate_result(result).errors == ()
    cluster = build_cluster(result)
    (node,) = cluster.nodes
    assert (node.name, node.label_map) == ("node-a", {"kubernetes.io/os": "linux", "node-access": "ssh"})
    assert node.ips == ("198.18.254.1", "2001:2:0:fe::1")  # InternalIP and ExternalIP, not Hostname
    assert {(p.name, p.host_network, p.node_name) for p in cluster.pods if p.namespace == "kube-system"} == {
        ("agent", True, "node-a")
    }
    assert all(p.host_network for p in cluster.pods if p.owner == "Deployment/probe")


def test_bad_node_is_an_error_with_file_line_and_field() -> None:
    bad = """\
apiVersion: v1
kind: Node
metadata: {name: Node_A, labels: {"bad key!": x}}
status:
  addresses:
  - {type: InternalIP, address: 198.18.254.300}
  - {type: Internal, address: x}
---
apiVersion: v2
kind: Node
metadata: {name: b}
"""
    errors = validate_result(load_text(bad, "n.yaml")).errors
    got = [(e.file, e.line, e.path, e.message.split(":")[0]) for e in errors]
    assert ("n.yaml", 3, "metadata.name", "Invalid value") in got
    assert ("n.yaml", 3, "metadata.labels.bad key!", "Invalid value") in got
    assert ("n.yaml", 6, "status.addresses[0].address", "Invalid value") in got
    assert ("n.yaml", 7, "status.addresses[1].type", "Unsupported value") in got
    assert ("n.yaml", 9, "apiVersion", "no matches for kind \"Node\" in version \"v2\"") in got


def test_node_is_cluster_scoped() -> None:
    doc = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, namespace: whatever}\n"
    assert validate_result(load_text(doc, "n.yaml")).errors == ()
