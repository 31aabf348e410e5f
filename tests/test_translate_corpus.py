"""Every valid policy of the corpus translates, and the result keeps the rule model's invariants."""

from __future__ import annotations

from typing import Any

import pytest

from cilia.k8s import api
from cilia.k8s.loader import load_paths
from cilia.k8s.validate import is_policy, validate_document
from cilia.policy.rules import PeerKind, PolicyRule
from cilia.policy.translate import translate
from cilia.policy.types import Direction, Proto
from tests.conftest import CORPUS, corpus_expected

EXPECTED: list[dict[str, Any]] = corpus_expected()
pytestmark = pytest.mark.usefixtures("corpus")
SECTIONS = {Direction.INGRESS: {"ingress", "ingressDeny"}, Direction.EGRESS: {"egress", "egressDeny"}}


def valid_policies(file: str) -> list[api.CiliumNetworkPolicy | api.NetworkPolicy]:
    out: list[api.CiliumNetworkPolicy | api.NetworkPolicy] = []
    for doc in load_paths([CORPUS / file]).documents:
        if is_policy(doc) and not validate_document(doc)[0]:
            model = api.NetworkPolicy if doc.kind == "NetworkPolicy" else api.CiliumNetworkPolicy
            out.append(model.model_validate(doc.data))
    return out


def check(rule: PolicyRule) -> None:
    assert rule.ref.index == -1 and rule.ref.section == ""
    assert rule.namespace == rule.ref.namespace
    assert set(rule.has_section) == set(rule.default_deny) == set(Direction)
    if rule.namespace and not rule.node_selector:
        assert rule.subject.match_values("k8s.io.kubernetes.pod.namespace") == (rule.namespace,)
    for entry in rule.entries:
        assert entry.ref.section in SECTIONS[entry.direction]
        assert entry.deny == entry.ref.section.endswith("Deny")
        assert (entry.ref.kind, entry.ref.namespace, entry.ref.name) == rule.ref[:3]
        for p in entry.ports or ():
            assert p.proto != Proto.ANY
            assert p.name or p.port <= p.end_port
        kinds = {p.kind for p in entry.peers}
        assert PeerKind.WILDCARD not in kinds or kinds == {PeerKind.WILDCARD}


@pytest.mark.parametrize(
    "entry", corpus_expected("valid"), ids=lambda e: e["file"].split("/")[-1]
)
def test_corpus_policy_translates(entry: dict[str, Any]) -> None:
    for obj in valid_policies(entry["file"]):
        rules = translate(obj)
        assert rules
        for rule in rules:
            check(rule)
