"""The corpus' host policies (the 11 files with a nodeSelector in ../shared/corpus), decided offline as
Cilium's docs describe them: a host policy selects the nodes whose labels match, enforces default
deny only in the directions it has sections for, lets through what its rules name (entities, CIDRs,
pods, ports, ICMP types) and leaves nodes it does not select alone. Two files are invalid as stored
(EXPECTED.yaml says why); they are refused, and one is decided once its placeholder is filled in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cilia.analyze.cluster import Analysis
from cilia.analyze.manifests import cluster_from_result
from cilia.analyze.peers import parse_port
from cilia.analyze.trace import trace
from cilia.k8s.errors import ManifestError
from cilia.k8s.loader import load_text

# node-a carries the label the file's nodeSelector names; node-b carries none of them.
NODES = """\
apiVersion: v1
kind: Node
metadata: {{name: node-a, labels: {{kubernetes.io/os: linux, {labels}}}}}
status: {{addresses: [{{type: InternalIP, address: 198.18.254.1}}]}}
---
apiVersion: v1
kind: Node
metadata: {{name: node-b, labels: {{kubernetes.io/os: linux}}}}
status: {{addresses: [{{type: InternalIP, address: 198.18.254.2}}]}}
"""
PODS = [
    ("default", "client", "{name: client}"),
    ("default", "echo-other-node", "{name: echo-other-node}"),
    ("default", "echo-b", "{name: echo-b}"),
    ("default", "test-client", "{zgroup: testClient}"),
    ("default", "hostfw-client", "{zgroup: testClient, test: hostfw}"),
    ("default", "test-ds", "{zgroup: testDS}"),
    ("kube-system", "kube-dns", "{k8s-app: kube-dns}"),
    ("kube-system", "metrics-server", "{k8s-app: metrics-server}"),
]
WORKLOADS = "".join(
    f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, namespace: {ns}, labels: {lb}}}\n"
    f"spec: {{nodeName: node-b, containers: [{{name: c}}]}}\n"
    for ns, n, lb in PODS
)

W, A, B = "198.19.0.1", "node:node-a", "node:node-b"
ALLOW, DENY = True, False

# file -> (node-a's labels, [(from, to, port, allowed)])
CASES: dict[str, tuple[str, list[tuple[str, str, str, bool]]]] = {
    "acend__cilium-basics-training/content__en__docs__10__01__ccwnp.yaml": ("node-access: ssh", [
        (W, A, "22/TCP", ALLOW), (W, A, "80/TCP", DENY), ("default/client", A, "80/TCP", DENY),
        (B, A, "80/TCP", DENY), (W, B, "80/TCP", ALLOW), (A, W, "80/TCP", ALLOW),
    ]),
    "cilium__cilium/cilium-cli__connectivity__builder__manifests__host-firewall-egress.yaml": ("x: y", [
        (A, W, "443/TCP", ALLOW), (A, B, "80/TCP", ALLOW), (A, "default/echo-other-node", "80/TCP", DENY),
        (A, "default/client", "80/TCP", ALLOW), (B, "default/echo-other-node", "8080/TCP", DENY),
        (W, A, "80/TCP", ALLOW),
    ]),
    "cilium__cilium/examples__policies__host__demo-host-policy.yaml": ("node-access: ssh", [
        (W, A, "22/TCP", ALLOW), (W, A, "80/TCP", DENY), (W, A, "8/ICMP", ALLOW), (W, A, "13/ICMP", DENY),
        ("default/client", A, "80/TCP", ALLOW), (B, A, "80/TCP", ALLOW), (W, B, "80/TCP", ALLOW),
    ]),
    "cilium__cilium/examples__policies__host__lock-down-gke.yaml": ("type: worker", [
        (W, A, "22/TCP", ALLOW), (W, A, "3389/TCP", ALLOW), (W, A, "80/TCP", DENY),
        (B, A, "10250/TCP", ALLOW), ("kube-system/metrics-server", A, "10255/TCP", ALLOW),
        ("default/client", A, "10255/TCP", DENY),
        (A, W, "443/TCP", ALLOW), (A, W, "80/TCP", DENY), (A, "169.254.169.254", "53/UDP", ALLOW),
        (A, "kube-system/kube-dns", "53/UDP", ALLOW), (A, "kube-system/kube-dns", "9153/TCP", DENY),
        (A, "default/echo-b", "8080/TCP", ALLOW), (A, B, "12345/TCP", ALLOW),
    ]),
    "cilium__cilium/examples__policies__host__lock-down-ingress.yaml": ("type: ingress-worker", [
        (W, A, "22/TCP", ALLOW), (W, A, "6443/TCP", ALLOW), (W, A, "80/TCP", DENY), (B, A, "80/TCP", ALLOW),
        (A, W, "80/TCP", ALLOW), (W, B, "80/TCP", ALLOW),
    ]),
    "cilium__cilium/cilium-cli__connectivity__builder__manifests__host-firewall-ingress.yaml": ("x: y", [
        ("default/client", A, "80/TCP", DENY), ("default/echo-b", A, "80/TCP", ALLOW),
        (W, A, "80/TCP", ALLOW), (B, A, "80/TCP", ALLOW), (A, W, "80/TCP", ALLOW),
    ]),
    "cilium__cilium/examples__policies__host__lock-down-dev-vms-remote-node.yaml": ("x: y", [
        (W, A, "22/TCP", ALLOW), (W, A, "80/TCP", DENY), (B, A, "80/TCP", ALLOW),
        ("kube-system/kube-dns", A, "6443/TCP", ALLOW), ("kube-system/kube-dns", A, "80/TCP", DENY),
        (A, "198.19.8.8", "123/UDP", ALLOW), (A, "198.19.8.8", "80/TCP", DENY),
        (A, "default/echo-b", "8080/TCP", ALLOW),
    ]),
    "cilium__cilium/test__k8s__manifests__ccnp-default-deny-host-ingress.yaml": ("x: y", [
        (W, A, "22/TCP", ALLOW), (W, A, "6443/TCP", ALLOW), (W, A, "80/TCP", DENY),
        ("default/client", A, "80/TCP", ALLOW), (B, A, "80/TCP", ALLOW), (A, W, "80/TCP", ALLOW),
    ]),
    "cilium__cilium/test__k8s__manifests__host-policies.yaml": ("status: lockdown", [
        ("default/test-client", A, "80/TCP", ALLOW), ("default/hostfw-client", A, "80/TCP", ALLOW),
        ("default/hostfw-client", A, "81/TCP", DENY), ("default/client", A, "81/TCP", ALLOW),
        ("default/client", B, "80/TCP", DENY), (W, B, "80/TCP", ALLOW), (A, B, "80/TCP", ALLOW),
        (A, B, "22/TCP", DENY), ("default/client", B, "8/ICMP", ALLOW),
        (A, "default/client", "80/TCP", ALLOW), (A, "default/hostfw-client", "80/TCP", DENY),
        (A, W, "443/TCP", ALLOW),
    ]),
}
NODEPORT = "cilium__cilium/test__k8s__manifests__ccnp-host-policy-nodeport-tests.yaml"
EXTENDED = "cilium__cilium/examples__policies__host__allow-extended-protocols.yaml"


def _analysis(policy: str, labels: str) -> Analysis:
    text = NODES.format(labels=labels) + WORKLOADS + "---\n" + policy
    return Analysis(cluster_from_result(load_text(text, "corpus.yaml")))


def _decide(a: Analysis, flows: list[tuple[str, str, str, bool]]) -> list[tuple[str, str, str, bool]]:
    return [(s, d, p, all(f.allowed for f in trace(a, s, d, parse_port(p)).flows)) for s, d, p, _ in flows]


@pytest.mark.parametrize("name", sorted(CASES))
def test_host_policy_of_the_corpus(corpus: Path, name: str) -> None:
    labels, flows = CASES[name]
    a = _analysis((corpus / name).read_text(), labels)
    assert a.has_host_policies and a.host_firewall
    assert _decide(a, flows) == flows


def test_nodeport_host_policy_is_refused_as_stored_and_decided_filled_in(corpus: Path) -> None:
    text = (corpus / NODEPORT).read_text()
    with pytest.raises(ManifestError, match="NODE_WITHOUT_CILIUM_IP"):
        _analysis(text, "x: y")
    a = _analysis(text.replace("NODE_WITHOUT_CILIUM_IP", "198.19.0.9"), "x: y")
    flows = [
        (W, A, "22/TCP", ALLOW), (W, A, "6443/TCP", ALLOW), (W, A, "80/TCP", DENY), (B, A, "80/TCP", ALLOW),
        (A, "198.19.0.9", "10250/TCP", ALLOW), (A, "198.19.0.9", "80/TCP", DENY), (A, W, "53/UDP", ALLOW),
        (A, W, "80/TCP", DENY), (A, "default/test-ds", "80/TCP", ALLOW),
        (A, "default/test-ds", "69/UDP", ALLOW), (A, "default/test-ds", "81/TCP", DENY),
        (A, "kube-system/kube-dns", "9153/TCP", ALLOW),
        (A, B, "9999/TCP", ALLOW),
    ]  # fmt: skip
    assert _decide(a, flows) == flows


def test_extended_protocols_host_policy_is_refused(corpus: Path) -> None:
    with pytest.raises(ManifestError) as info:
        _analysis((corpus / EXTENDED).read_text(), "type: egress-worker")
    assert any("VRRP" in e.message or "Port must be specified" in e.message for e in info.value.errors)


def test_every_host_policy_of_the_corpus_is_covered(corpus: Path) -> None:
    found = {
        str(p.relative_to(corpus))
        for p in corpus.rglob("*.yaml")
        if p.name != "EXPECTED.yaml" and "nodeSelector" in p.read_text()
    }
    assert found == {*CASES, NODEPORT, EXTENDED}
