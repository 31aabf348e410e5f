"""Audit decision logic: which rules are audited (policy annotation, namespace), the full policy that
adds them back, and the verdict only they would cause."""

from __future__ import annotations

from pathlib import Path

import yaml
from helpers_observe import TCP, UDP, seed_node

from cilia.k8s import api
from cilia.observe.audit import AuditRules, AuditSettings, annotation_on, classify, split
from cilia.policy.repository import ResourceKey
from cilia.policy.translate import translate
from cilia.policy.types import Direction, DropReason, MatchType

KEY = ResourceKey("CiliumNetworkPolicy", "default", "no-dns")
KNP = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-only, namespace: shop, annotations: {cilia.io/audit: "True"}}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: 80}]}]
"""

CNP = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c, namespace: shop}
spec:
  endpointSelector: {}
  egress: [{toEntities: [world]}]
"""

CCNP = """
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: cw}
spec:
  endpointSelector: {}
  egress: [{toEntities: [world]}]
"""


def rules_of(text: str) -> list:
    doc = yaml.safe_load(text)
    model = api.NetworkPolicy if doc["kind"] == "NetworkPolicy" else api.CiliumNetworkPolicy
    return translate(model.model_validate(doc))


def test_which_rules_are_audited() -> None:
    knp, cnp, ccnp = rules_of(KNP), rules_of(CNP), rules_of(CCNP)
    assert split(knp) == ([], knp)  # its own annotation (case-insensitive "true")
    assert split(cnp) == (cnp, [])
    assert split(cnp, lambda ns: ns == "shop") == ([], cnp)  # the namespace's annotation
    assert split(ccnp, lambda ns: True) == (ccnp, [])  # cluster-wide: only its own annotation
    assert (annotation_on({"cilia.io/audit": "true"}), annotation_on({"cilia.io/audit": "no"}),
            annotation_on(None)) == (True, False, False)  # fmt: skip


def test_settings_round_trip(tmp_path: Path) -> None:
    assert AuditSettings.load(tmp_path) == AuditSettings()
    s = AuditSettings(True, frozenset({"b", "a"}))
    path = s.save(tmp_path)
    assert path.read_text() == '{\n "node": true,\n "namespaces": [\n  "a",\n  "b"\n ]\n}\n'
    assert AuditSettings.load(tmp_path) == s


def test_full_policy_and_classify() -> None:
    node = seed_node()
    audit = AuditRules()
    client = node.pods["client-0"]
    pol = node.engine.policy(client.identity)
    ids = node.engine.cache.identities
    assert audit.full_policy(pol, ids) is None  # no audited rule at all
    deny_dns = rules_of("""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: no-dns, namespace: default, annotations: {cilia.io/audit: "true"}}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egressDeny: [{toCIDR: ["198.19.0.0/16"], toPorts: [{ports: [{port: "53", protocol: UDP}]}]}]
""")
    audit.set(KEY, deny_dns)
    assert audit.revision == 1
    full = audit.full_policy(pol, ids)
    assert full is not None and audit.full_policy(pol, ids) is full  # cached by content
    assert audit.full_policy(node.engine.policy(node.pods["app-a-7d4b9"].identity), ids) is None
    v = classify(full, Direction.EGRESS, node.world_id, UDP, 53)
    assert v is not None
    assert (v.reason, v.match_type, sorted(r.name for r in v.entry.rules), v.audited) == (  # type: ignore[union-attr]
        DropReason.POLICY_DENY,
        MatchType.L3_L4,
        ["no-dns"],
        True,
    )
    assert classify(full, Direction.EGRESS, node.world_id, UDP, 54) is None  # still allowed by client-egress
    assert classify(full, Direction.EGRESS, node.world_id, TCP, 53) is None
    audit.delete(KEY)
    assert (audit.full_policy(pol, ids), bool(audit)) == (None, False)
