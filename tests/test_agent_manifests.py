"""``apply`` / ``delete`` as library calls: validation first, one transaction, nothing on error."""

from __future__ import annotations

from pathlib import Path

from cilia.agent import manifests
from cilia.agent.resources import AmbiguousNameError, resolve_kind, resolve_name
from cilia.store import Kind, open_store
from tests.conftest import SEED

BROKEN = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers: [{name: web, ports: [{containerPort: 80}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: bad
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: x}}]
    toPorts: [{ports: [{port: "99999", protocol: TCP}]}]
"""


def test_broken_multi_document_file_changes_nothing(tmp_path: Path) -> None:
    store = open_store(backend="memory")
    manifests.apply(store, [str(SEED / "app-b.yaml")])
    rev = store.revision
    f = tmp_path / "broken.yaml"
    f.write_text(BROKEN)
    out = manifests.apply(store, [str(SEED / "app-a.yaml"), str(f)])
    assert not out.ok and out.revision == 0 and out.results == ()
    assert [(e.file, e.line, e.path) for e in out.report.errors] == [
        (str(f), 21, "spec.ingress[0].toPorts[0].ports[0].port")
    ]
    assert store.revision == rev
    assert [r.key.name for r in store.list(Kind.DEPLOYMENTS)] == ["app-b"]


def test_apply_is_one_transaction_and_reports_actions(tmp_path: Path) -> None:
    store = open_store(backend="memory")
    out = manifests.apply(store, [str(SEED / "app-a.yaml"), str(SEED / "app-b.yaml")])
    assert out.ok and out.revision == 1 == store.revision
    assert [(r.kind, r.key.name, r.action) for r in out.results] == [
        ("Deployment", "app-a", "created"),
        ("Deployment", "app-b", "created"),
    ]
    again = manifests.apply(store, [str(SEED / "app-a.yaml")])
    assert [r.action for r in again.results] == ["unchanged"] and store.revision == 1
    changed = tmp_path / "a.yaml"
    changed.write_text((SEED / "app-a.yaml").read_text().replace("replicas: 2", "replicas: 3"))
    out = manifests.apply(store, [str(changed)])
    assert [r.describe() for r in out.results] == ["deployment.apps/app-a configured"] and store.revision == 2
    assert store.get(Kind.DEPLOYMENTS.key("default", "app-a")).value["metadata"]["namespace"] == "default"


def test_apply_fix_stores_the_corrected_deny() -> None:
    store = open_store(backend="memory")
    plain = manifests.apply(store, [str(SEED / "deny-a-to-b.yaml")])
    assert not plain.ok and [e.path for e in plain.report.errors] == ["spec.deny"]
    assert plain.report.errors[0].line == 10 and store.revision == 0
    fixed = manifests.apply(store, [str(SEED / "deny-a-to-b.yaml")], fix=True)
    assert fixed.ok
    spec = store.get(Kind.CNP.key("default", "deny-app-a-to-app-b")).value["spec"]
    assert spec == {
        "endpointSelector": {"matchLabels": {"app": "app-a"}},
        "egressDeny": [{"toEndpoints": [{"matchLabels": {"app": "app-b"}}]}],
        "enableDefaultDeny": {"egress": False},
    }
    assert [c.description for f in fixed.fixes for c in f.changes] == [
        'replaced "deny" with egressDeny',
        "set enableDefaultDeny.egress: false",
    ]


def test_delete_by_file_and_by_name() -> None:
    store = open_store(backend="memory")
    manifests.apply(store, [str(SEED / "app-a.yaml"), str(SEED / "prod-backend-to-database.yaml")])
    out = manifests.delete(store, [str(SEED / "app-a.yaml")])
    assert [r.describe() for r in out.results] == ["deployment.apps/app-a deleted"]
    missing = manifests.delete(store, [str(SEED / "app-a.yaml")])
    assert not missing.ok and str(missing.report.errors[0]).endswith('Deployment "app-a" not found')
    ok = manifests.delete(store, [str(SEED / "app-a.yaml")], ignore_not_found=True)
    assert ok.ok and [r.action for r in ok.results] == ["not found"]
    key = resolve_name(store, Kind.CNP, "prod", "backend")
    assert key == Kind.CNP.key("prod", "backend-to-database")
    out = manifests.delete_keys(store, [key])
    assert [r.describe() for r in out.results] == [
        "ciliumnetworkpolicy.cilium.io/backend-to-database deleted"
    ]
    assert store.list(Kind.CNP) == []


def test_kind_aliases_and_name_prefixes() -> None:
    store = open_store(backend="memory")
    manifests.apply(store, [str(SEED / "prod-backend-to-database.yaml")])
    assert [resolve_kind(k) for k in ("po", "deploy", "cnp", "netpol", "ccnp", "ns", "nope")] == [
        Kind.PODS,
        Kind.DEPLOYMENTS,
        Kind.CNP,
        Kind.KNP,
        Kind.CCNP,
        Kind.NAMESPACES,
        None,
    ]
    assert resolve_name(store, Kind.DEPLOYMENTS, "prod", "data") == Kind.DEPLOYMENTS.key("prod", "database")
    assert resolve_name(store, Kind.DEPLOYMENTS, "default", "data") is None
    assert resolve_name(store, Kind.NAMESPACES, "ignored", "prod") == Kind.NAMESPACES.key("", "prod")
    try:
        resolve_name(store, Kind.DEPLOYMENTS, "prod", "")
    except AmbiguousNameError as e:
        assert e.matches == ["backend", "database"]
    else:
        raise AssertionError("an empty prefix names both deployments")


def test_unused_kinds_are_skipped_with_a_note(tmp_path: Path) -> None:
    f = tmp_path / "sa.yaml"
    f.write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: robot}\n")
    store = open_store(backend="memory")
    out = manifests.apply(store, [str(f)])
    assert out.ok and out.results == () and store.revision == 0
    assert any("ServiceAccount robot" in w for w in out.warnings)
