"""cilia.k8s.objects and cilia.k8s.cluster: typed objects, Deployment expansion, namespaces."""

from __future__ import annotations

import re

import pytest

from cilia.k8s.cluster import build_cluster, load_cluster
from cilia.k8s.errors import ManifestError
from cilia.k8s.loader import load_text
from cilia.k8s.objects import (
    SAFE_ALPHABET,
    ContainerPort,
    Namespace,
    Pod,
    ServiceEndpoints,
    ServicePort,
    Source,
)
from tests.conftest import SEED

POD_NAME = re.compile(rf"^(app-[ab])-([{SAFE_ALPHABET}]{{10}})-([{SAFE_ALPHABET}]{{5}})$")


def test_seed_deployments_expand_to_two_pods_each_deterministically() -> None:
    paths = [SEED / "app-a.yaml", SEED / "app-b.yaml", SEED / "allow-frontend-to-b.yaml"]
    first, second = load_cluster(paths), load_cluster(paths)
    assert [p.name for p in first.pods] == [p.name for p in second.pods]
    assert len(first.pods) == 4 and len({p.name for p in first.pods}) == 4
    for pod in first.pods:
        m = POD_NAME.match(pod.name)
        assert m, pod.name
        app, tmpl_hash, _ = m.groups()
        assert pod.labels == (("app", app), ("pod-template-hash", tmpl_hash))
        assert (pod.namespace, pod.owner) == ("default", f"Deployment/{app}")
        assert pod.ports == (ContainerPort(None, 80, "TCP"),)
    assert [(d.name, d.replicas, len(d.pods)) for d in first.deployments] == [
        ("app-a", 2, 2),
        ("app-b", 2, 2),
    ]
    assert first.namespaces == (Namespace("default", (("kubernetes.io/metadata.name", "default"),), False),)
    assert [(p.kind, p.name, p.namespace) for p in first.policies] == [
        ("CiliumNetworkPolicy", "allow-frontend-to-app-b", "default")
    ]


def test_template_change_changes_the_hash_and_replicas_default_to_one() -> None:
    def deploy(image: str) -> str:
        return (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w, namespace: prod}\n"
            "spec:\n  selector: {matchLabels: {app: w}}\n  template:\n    metadata: {labels: {app: w}}\n"
            f"    spec:\n      containers: [{{name: c, image: {image}}}]\n"
        )

    one = build_cluster(load_text(deploy("nginx:1"), "d.yaml"))
    two = build_cluster(load_text(deploy("nginx:2"), "d.yaml"))
    assert len(one.pods) == 1 and one.pods[0].namespace == "prod"
    assert one.deployments[0].template_hash != two.deployments[0].template_hash
    assert one.namespace("prod") == Namespace("prod", (("kubernetes.io/metadata.name", "prod"),), False)


def test_pod_fields_and_declared_namespace_labels() -> None:
    text = """
apiVersion: v1
kind: Namespace
metadata: {name: team, labels: {tier: gold}}
---
apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: team
  labels: {app: x}
  annotations: {note: hi}
spec:
  serviceAccountName: sa
  nodeName: node-1
  restartPolicy: Always
  containers:
  - name: c
    image: busybox
    command: [sleep]
    args: ["3600"]
    ports: [{name: web, containerPort: 8080, protocol: udp}]
status: {podIP: 198.18.0.5, phase: Running}
"""
    cluster = build_cluster(load_text(text, "p.yaml"))
    [pod] = cluster.pods
    assert pod == Pod(
        name="p",
        namespace="team",
        labels=(("app", "x"),),
        annotations=(("note", "hi"),),
        service_account="sa",
        containers=pod.containers,
        pod_ip="198.18.0.5",
        node_name="node-1",
    )
    [c] = pod.containers
    assert (c.name, c.command, c.args, c.ports) == (
        "c",
        ("sleep",),
        ("3600",),
        (ContainerPort("web", 8080, "UDP"),),
    )
    assert pod.source == Source("p.yaml", 1, 6, 1)
    assert cluster.namespaces == (
        Namespace("team", (("kubernetes.io/metadata.name", "team"), ("tier", "gold")), True),
    )


def test_services_endpoints_and_ignored_kinds() -> None:
    text = """
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  ports: [{port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: ext}
subsets: [{addresses: [{ip: 198.19.0.10}], ports: [{port: 8443}]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-abc, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
endpoints: [{addresses: [198.19.0.11]}]
ports: [{port: 8443, protocol: TCP}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
"""
    cluster = build_cluster(load_text(text, "s.yaml"))
    [svc] = cluster.services
    assert (svc.name, svc.selector, svc.ports) == ("ext", None, (ServicePort(None, 443, 8443, "TCP"),))
    assert cluster.endpoints == (
        ServiceEndpoints("ext", "default", ("198.19.0.10",), (ServicePort(None, 8443, None, "TCP"),)),
        ServiceEndpoints("ext", "default", ("198.19.0.11",), (ServicePort(None, 8443, None, "TCP"),)),
    )
    assert [(i.kind, i.name) for i in cluster.ignored] == [("ServiceAccount", "sa"), ("ConfigMap", "cm")]


def test_load_cluster_refuses_invalid_manifests_with_every_error() -> None:
    with pytest.raises(ManifestError) as info:
        load_cluster([SEED / "app-a.yaml", SEED / "deny-a-to-b.yaml"])
    assert [(e.line, e.path) for e in info.value.errors] == [(10, "spec.deny")]
    assert info.value.file.endswith("deny-a-to-b.yaml")


def test_ccnp_has_no_namespace() -> None:
    text = (
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: c}\n"
        "spec: {endpointSelector: {}, ingress: [{}]}\n"
    )
    cluster = build_cluster(load_text(text, "c.yaml"))
    assert [(p.kind, p.namespace, len(p.rules)) for p in cluster.policies] == [
        ("CiliumClusterwideNetworkPolicy", "", 1)
    ]
    assert cluster.namespaces == ()


def test_pod_name_hashes_are_sha256() -> None:
    import hashlib

    from cilia.k8s.objects import _sha256

    for data in (b"", b"app-a/abc/0", "é".encode()):
        assert _sha256(data) == hashlib.sha256(data).digest()
