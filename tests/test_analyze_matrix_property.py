"""The set-based matrix (:class:`cilia.analyze.matrix.SideRows`) equals the per-pair one on random
clusters: every (source group, destination group, port class) decided by the engine's MapState of each
side and the datapath's lookup, one pair at a time — allowed cells and cells filtered at L7 alike.

The clusters mix what the distillation and the lookup treat specially: denies over port ranges and
any port, identity-0 (L4-only) allows and denies, named ports (ambiguous across pods on egress),
HTTP rules (proxy redirects), mutual authentication, CIDRs with except, entities and default deny.
"""

from __future__ import annotations

import random
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cilia.analyze.cluster import Analysis, EnforcementMode, Options
from cilia.analyze.connectivity import Connectivity, connectivity
from cilia.analyze.manifests import cluster_from_result
from cilia.k8s.loader import load_text
from cilia.policy.types import Direction

APPS = ("x", "y", "z")


def _pods(rng: random.Random) -> list[dict[str, Any]]:
    docs = []
    for i in range(rng.randint(2, 7)):
        labels = {"app": rng.choice(APPS), **({"tier": "t"} if rng.random() < 0.3 else {})}
        ports = [{"containerPort": rng.choice([80, 8080]), "name": "http"}] if rng.random() < 0.7 else []
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{i}", "namespace": rng.choice(["a", "b"]), "labels": labels},
                "spec": {"containers": [{"name": "c", "ports": ports}]},
            }
        )
    return docs


def _to_ports(rng: random.Random, deny: bool) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.2:
        return {}
    if kind < 0.3:
        return {"toPorts": [{"ports": [{"port": "http", "protocol": "TCP"}]}]}
    port = rng.choice([0, 53, 80, 443, 8080])
    pp: dict[str, Any] = {"port": str(port), "protocol": rng.choice(["TCP", "TCP", "UDP", "ANY"])}
    if port and rng.random() < 0.3:
        pp["endPort"] = port + rng.choice([1, 20, 500])
    out: dict[str, Any] = {"ports": [pp]}
    if not deny and pp["protocol"] == "TCP" and "endPort" not in pp and port and rng.random() < 0.35:
        out["rules"] = {"http": [{"method": rng.choice(["GET", "POST"])}]}
    return {"toPorts": [out]}


def _peer(rng: random.Random, direction: str) -> dict[str, Any]:
    f = "from" if direction == "ingress" else "to"
    choice = rng.random()
    if choice < 0.45:
        sel: dict[str, Any] = {"matchLabels": {"app": rng.choice(APPS)}}
        if rng.random() < 0.3:
            sel["matchLabels"]["k8s:io.kubernetes.pod.namespace"] = rng.choice(["a", "b"])
        if rng.random() < 0.2:
            sel = {"matchExpressions": [{"key": "tier", "operator": rng.choice(["Exists", "DoesNotExist"])}]}
        return {f"{f}Endpoints": [sel]}
    if choice < 0.65:
        return {f"{f}Entities": [rng.choice(["world", "host", "cluster", "all"])]}
    if choice < 0.8:
        cidr: dict[str, Any] = {"cidr": rng.choice(["198.19.0.0/16", "198.19.1.0/24", "0.0.0.0/0"])}
        if rng.random() < 0.5:
            cidr["except"] = ["198.19.1.0/25"] if cidr["cidr"] != "198.19.1.0/24" else ["198.19.1.128/25"]
        return {f"{f}CIDRSet": [cidr]}
    return {}


def _documents(rng: random.Random) -> list[dict[str, Any]]:
    docs = _pods(rng)
    for i in range(rng.randint(1, 4)):
        spec: dict[str, Any] = {"endpointSelector": {"matchLabels": {"app": rng.choice(APPS)}}}
        for direction in ("ingress", "egress"):
            for section in (direction, direction + "Deny"):
                if rng.random() < 0.45:
                    entries = []
                    for _ in range(rng.randint(1, 2)):
                        entry = _peer(rng, direction) | _to_ports(rng, section.endswith("Deny"))
                        if not section.endswith("Deny") and rng.random() < 0.25:
                            entry["authentication"] = {"mode": "required"}
                        entries.append(entry)
                    spec[section] = entries
            if rng.random() < 0.2:
                spec.setdefault("enableDefaultDeny", {})[direction] = False
        if not any(k in spec for k in ("ingress", "ingressDeny", "egress", "egressDeny")):
            spec["ingress"] = [{}]
        docs.append(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNetworkPolicy",
                "metadata": {"name": f"pol{i}", "namespace": rng.choice(["a", "b"])},
                "spec": spec,
            }
        )
    return docs


def _per_pair(a: Analysis, conn: Connectivity) -> tuple[set[tuple[int, int, int]], set[tuple[int, int, int]]]:
    """(allowed, filtered at L7) cells, each looked up in both sides' MapStates."""
    allowed, l7 = set(), set()
    for ci, cls in enumerate(conn.classes):
        for src in conn.groups:
            for dst in conn.groups:
                sides = []
                if src.local:
                    egress = a.side(src.identity, Direction.EGRESS)
                    sides.append(egress.lookup(dst.identity, cls.proto, cls.port))
                if dst.local:
                    ingress = a.side(dst.identity, Direction.INGRESS)
                    sides.append(ingress.lookup(src.identity, cls.proto, cls.port))
                if all(v.allowed for v in sides):
                    allowed.add((ci, src.index, dst.index))
                    if any(v.entry is not None and v.entry.proxy_port for v in sides):
                        l7.add((ci, src.index, dst.index))
    return allowed, l7


def _cells(conn: Connectivity, l7: bool) -> set[tuple[int, int, int]]:
    matrices = conn.l7 if l7 else conn.matrices
    return {(ci, s, d) for ci, m in enumerate(matrices) for s in range(m.size) for d in m.targets(s)}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([EnforcementMode.DEFAULT, EnforcementMode.ALWAYS]))
def test_set_matrix_equals_per_pair_lookups(seed: int, mode: EnforcementMode) -> None:
    docs = _documents(random.Random(seed))
    cluster = cluster_from_result(load_text(yaml.safe_dump_all(docs), "r.yaml"))
    a = Analysis(cluster, Options(mode))
    conn = connectivity(a)
    allowed, l7 = _per_pair(a, conn)
    assert _cells(conn, False) == allowed
    assert _cells(conn, True) == l7
