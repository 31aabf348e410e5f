"""toServices resolution is one function for the engine, the agent and offline analysis."""

from __future__ import annotations

import yaml

from cilia.k8s import api
from cilia.policy.rules import PeerKind
from cilia.policy.translate import ServiceInfo, resolve_services, translate_cnp

POLICY = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: svc, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toServices:
    - k8sService: {serviceName: web, namespace: default}
  egressDeny:
  - toServices:
    - k8sService: {serviceName: web, namespace: default}
"""


def test_only_egress_allow_entries_are_resolved() -> None:
    (rule,) = translate_cnp(api.CiliumNetworkPolicy.model_validate(yaml.safe_load(POLICY)))
    services = [ServiceInfo("web", "default", {"app": "web"})]
    resolved = resolve_services(rule, services)
    allow, deny = resolved.entries
    assert (allow.deny, [p.kind for p in allow.peers]) == (False, [PeerKind.SERVICES])
    assert "app=web" in str(allow.peers[0].selector)
    # Cilium's service watcher rewrites egress rules only: the deny keeps no peer from toServices.
    assert (deny.deny, deny.peers) == (True, ())


def test_no_service_no_change() -> None:
    (rule,) = translate_cnp(api.CiliumNetworkPolicy.model_validate(yaml.safe_load(POLICY)))
    other = [ServiceInfo("other", "default", {"app": "x"})]
    assert resolve_services(rule, other).entries[1] == rule.entries[1]
