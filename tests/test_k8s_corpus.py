"""Validation agrees with the hand-reviewed EXPECTED.yaml on every valid/invalid corpus file.

Only policy objects are judged (EXPECTED.yaml's rule); the files are read in place.
"""

from __future__ import annotations

from typing import Any

import pytest

from cilia.k8s.errors import Error
from cilia.k8s.loader import load_paths
from cilia.k8s.validate import is_policy, validate_document
from tests.conftest import CORPUS, corpus_expected

EXPECTED: list[dict[str, Any]] = corpus_expected()
pytestmark = pytest.mark.usefixtures("corpus")


def policy_errors(file: str) -> list[Error]:
    result = load_paths([CORPUS / file])
    errors = list(result.errors)
    for doc in result.documents:
        if is_policy(doc):
            errors += validate_document(doc)[0]
    return errors


def test_corpus_is_present() -> None:
    assert len(EXPECTED) == 200


@pytest.mark.parametrize(
    "entry", corpus_expected("valid", "invalid"), ids=lambda e: e["file"].split("/")[-1]
)
def test_corpus_file(entry: dict[str, Any]) -> None:
    errors = policy_errors(entry["file"])
    got = "valid" if not errors else "invalid"
    assert got == entry["expect"], [str(e) for e in errors] or entry.get("reason")


def test_corpus_invalid_reasons() -> None:
    """The invalid files fail for the reason the reviewer gave, not for another one."""
    reasons = {
        e["file"].split("/")[-1]: sorted({(err.path, err.message) for err in policy_errors(e["file"])})
        for e in EXPECTED
        if e["expect"] == "invalid"
    }
    in_op = 'Unsupported value: "in": supported values: "In", "NotIn", "Exists", "DoesNotExist"'
    assert reasons == {
        "examples__policies__auth__auth.yaml": [
            ("spec.egress[0].auth", 'unknown field "spec.egress[0].auth"')
        ],
        "examples__policies__host__allow-extended-protocols.yaml": [
            ("spec.egress[0].toPorts[0].ports[5].port", "Required value"),
            (
                "spec.egress[0].toPorts[0].ports[5].protocol",
                'Unsupported value: "VRRP": supported values: "TCP", "UDP", "SCTP", "ANY"',
            ),
        ],
        "examples__policies__kubernetes__clustermesh__cross-cluster-policy.yaml": [
            ("metadata.description", 'unknown field "metadata.description"')
        ],
        "examples__policies__l3__entities__from_nodes.yaml": [("apiversion", "apiVersion not set")],
        "examples__policies__l3__match-expressions__and-statement.yaml": [
            ("spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator", in_op),
            ("spec.ingress[0].fromEndpoints[0].matchExpressions[1].operator", in_op),
        ],
        "examples__policies__l3__match-expressions__or-statement.yaml": [
            ("spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator", in_op),
            ("spec.ingress[0].fromEndpoints[1].matchExpressions[0].operator", in_op),
        ],
        "test__k8s__manifests__ccnp-host-policy-nodeport-tests.yaml": [
            (
                "spec.egress[1].toCIDR[0]",
                'Invalid value: "NODE_WITHOUT_CILIUM_IP/32": spec.egress[1].toCIDR[0] in body must be '
                'of type cidr: "NODE_WITHOUT_CILIUM_IP/32"',
            )
        ],
        "chapter12__invalid-policy.yaml": [
            ("spec.egress[0]", "combining ToEndpoints and ToEntities is not supported yet")
        ],
    }
