"""connectivity agrees with trace (issue 15 item 7): for random clusters whose policies name CIDR
prefixes (with except holes), kube-apiserver, remote-node, host and world, every group of the matrix
is a peer ``cilia trace`` resolves (its ``peer``), and for random pairs and ports the cell is trace's
verdict and the cell's deciding rule is the one trace's sides give."""

from __future__ import annotations

import random

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cilia.analyze.cluster import Analysis
from cilia.analyze.connectivity import cell_rule, connectivity, deciding_rules, group_end
from cilia.analyze.deciding import decided_by
from cilia.analyze.every_port import every_port
from cilia.analyze.manifests import cluster_from_result
from cilia.analyze.peer_names import PortQuery, label_query
from cilia.analyze.peers import PortSpec
from cilia.analyze.trace_query import side_of, trace_between
from cilia.k8s.loader import load_text
from cilia.policy.types import Proto
from tests.conftest import REPO

_CIDRS = ["1.1.1.1/32", "198.19.0.0/16", "198.19.1.0/24", "0.0.0.0/0"]
_ENTITIES = ["world", "host", "cluster", "kube-apiserver", "remote-node", "all"]


def _documents(rng: random.Random) -> list[dict]:
    docs: list[dict] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in ("a", "b")
    ]
    for i in range(rng.randint(2, 5)):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"p{i}",
                    "namespace": rng.choice(["a", "b"]),
                    "labels": {"app": rng.choice(["x", "y", "z"])},
                },
                "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            }
        )

    def peer(f: str) -> dict:
        choice = rng.random()
        if choice < 0.3:
            return {f"{f}Endpoints": [{"matchLabels": {"app": rng.choice(["x", "y", "z"])}}]}
        if choice < 0.6:
            return {f"{f}Entities": [rng.choice(_ENTITIES)]}
        if choice < 0.8:
            return {f"{f}CIDR": [rng.choice(_CIDRS)]}
        return {f"{f}CIDRSet": [{"cidr": "198.19.0.0/16", "except": ["198.19.2.0/24"]}]}

    for i in range(rng.randint(1, 4)):
        spec: dict = {"endpointSelector": {"matchLabels": {"app": rng.choice(["x", "y", "z"])}}}
        for direction, f in (("ingress", "from"), ("egress", "to")):
            for section in (direction, direction + "Deny"):
                if rng.random() < 0.45:
                    entry = peer(f)
                    if rng.random() < 0.6:
                        port = rng.choice(["443", "53", "http"])
                        proto = "TCP" if port == "http" else rng.choice(["TCP", "UDP"])
                        entry["toPorts"] = [{"ports": [{"port": port, "protocol": proto}]}]
                    spec[section] = [entry]
        if not any(k in spec for k in ("ingress", "ingressDeny", "egress", "egressDeny")):
            spec["egress"] = [peer("to")]
        docs.append(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNetworkPolicy",
                "metadata": {"name": f"pol{i}", "namespace": rng.choice(["a", "b"])},
                "spec": spec,
            }
        )
    return docs


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_random_cells_are_trace_verdicts(seed: int) -> None:
    rng = random.Random(seed)
    docs = _documents(rng)
    a = Analysis(cluster_from_result(load_text(yaml.safe_dump_all(docs), "r.yaml")))
    conn = connectivity(a)
    # every peer the policies name has a row: world, host, each prefix (its identity), each entity
    names = {g.name for g in conn.groups}
    assert {"world", "host"} <= names
    named = {e for doc in docs for section in doc.get("spec", {}).values() if isinstance(section, list)
             for entry in section for f in ("fromEntities", "toEntities") for e in entry.get(f, ())}
    if "kube-apiserver" in named:
        assert "kube-apiserver" in names
    if "remote-node" in named:  # the kube-apiserver identity has the remote-node label too
        assert {"remote-node", "kube-apiserver"} <= names
    assert {ident for _, ident in a.prefix_identities} <= {g.identity for g in conn.groups}
    rules = deciding_rules(a, conn)
    for _ in range(30):
        s, d = rng.randrange(len(conn.groups)), rng.randrange(len(conn.groups))
        ci = rng.randrange(len(conn.classes))
        src_g, dst_g, cls = conn.groups[s], conn.groups[d], conn.classes[ci]
        proto, lo, hi = rng.choice(cls.segments)
        low = lo if proto in (Proto.ICMP, Proto.ICMPV6) else max(lo, 1)
        port = PortSpec(Proto(proto), rng.randint(low, hi))
        # the question as a user types it: the group's peer argument
        src = side_of(a, src_g.peer, None, None, "from")
        dst = side_of(a, dst_g.peer, None, None, "to")
        assert [e.identity for e in src.ends] == [src_g.identity]
        assert [e.identity for e in dst.ends] == [dst_g.identity]
        result = trace_between(a, src, dst, PortQuery(str(port), port))
        assert conn.allowed(s, d, ci) == result.allowed, (src_g.name, dst_g.name, cls.label, port)
        cell = rules[cls.label][src_g.name][dst_g.name]
        assert cell["verdict"].startswith("allow") == result.allowed
        # the deciding rule of the cell is the one trace names (for the group-named ends)
        flow = trace_between(
            a,
            src.__class__(src_g.name, (group_end(a, src_g),)),
            dst.__class__(dst_g.name, (group_end(a, dst_g),)),
            PortQuery(str(port), port),
        ).flows[0]
        assert cell["text"] == decided_by(flow)["text"]
        expected = cell_rule(a, group_end(a, src_g), group_end(a, dst_g), cls)
        assert cell == {"verdict": cell["verdict"], **expected}


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_trace_without_port_is_the_matrix_column(seed: int) -> None:
    """``trace`` without ``--port`` gives, per class, the verdict of the matrix's cell."""
    rng = random.Random(seed)
    a = Analysis(cluster_from_result(load_text(yaml.safe_dump_all(_documents(rng)), "r.yaml")))
    conn = connectivity(a)
    s, d = rng.randrange(len(conn.groups)), rng.randrange(len(conn.groups))
    src = side_of(a, conn.groups[s].peer, None, None, "from")
    answer = every_port(a, src, side_of(a, conn.groups[d].peer, None, None, "to"))
    assert [v.label for v in answer.verdicts] == [c.label for c in conn.classes]
    assert [v.result.allowed for v in answer.verdicts] == [
        conn.allowed(s, d, ci) for ci in range(len(conn.classes))
    ]


def test_labels_of_no_pod_decide_as_that_pod_would() -> None:
    """--to-labels/--from-labels that no pod has are traced as a new pod with those labels (as
    cilium policy trace -s): the same verdicts and rules as after adding such a pod."""
    base = (REPO / "tests/inputs/peers/cluster.yaml").read_text()
    extra = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "db-x", "namespace": "prod", "labels": {"app": "db", "tier": "x"}},
            "spec": {"containers": [{"name": "c"}]},
        }
    )
    without = Analysis(cluster_from_result(load_text(base, "c.yaml")))
    with_pod = Analysis(cluster_from_result(load_text(base + "---\n" + extra, "c.yaml")))
    for direction in ("to", "from"):
        answers = []
        for a, peer in ((without, None), (with_pod, "prod/db-x")):
            query = None if peer else label_query("app=db,tier=x", "prod")
            new = side_of(a, peer, query, "prod", direction)
            other = side_of(a, "deploy/api", None, "prod", "from" if direction == "to" else "to")
            src, dst = (other, new) if direction == "to" else (new, other)
            answer = every_port(a, src, dst)
            rules = [[f.egress.rules + f.ingress.rules for f in v.result.flows] for v in answer.verdicts]
            verdicts = zip(answer.verdicts, rules, strict=True)
            answers.append([(v.label, v.result.allowed, r) for v, r in verdicts])
        assert answers[0] == answers[1]
        allowed = [ok for _, ok, _ in answers[0]]
        # api reaches app=db on 5432 only; nothing of api's takes traffic from app=db
        assert (direction == "to") == any(allowed) and not all(allowed)
