"""cilia.k8s.fix: the seed's deny: correction and fromPorts, comments and order kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from cilia.k8s.fix import Change, fix_paths, fix_text
from cilia.k8s.loader import load_text
from cilia.k8s.validate import validate_result
from tests.conftest import SEED


def _valid(text: str) -> bool:
    return validate_result(load_text(text, "fixed.yaml")).valid


def test_seed_deny_becomes_egress_deny_without_default_deny() -> None:
    original = (SEED / "deny-a-to-b.yaml").read_text()
    result = fix_text(original, "deny-a-to-b.yaml")
    assert result.changes == (
        Change("spec.egressDeny", 'replaced "deny" with egressDeny'),
        Change("spec.enableDefaultDeny.egress", "set enableDefaultDeny.egress: false"),
    )
    assert _valid(result.text)
    assert yaml.safe_load(result.text)["spec"] == {
        "endpointSelector": {"matchLabels": {"app": "app-a"}},
        "egressDeny": [{"toEndpoints": [{"matchLabels": {"app": "app-b"}}]}],
        "enableDefaultDeny": {"egress": False},
    }
    lines = result.text.splitlines()
    # the file's own comment, its quoting and key order are kept; each change says why
    assert lines[:9] == original.splitlines()[:9]
    assert lines[9].strip().startswith("# cilia fix:") and lines[10] == "  egressDeny:"
    assert any("default deny" in ln for ln in lines if ln.strip().startswith("#"))


def test_ingress_deny_entries_and_existing_allow_sections() -> None:
    text = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: x}
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [cluster]
  deny:
  - fromEndpoints: [{matchLabels: {app: bad}}]
    fromPorts: [{ports: [{port: "80", protocol: TCP}]}]
  - toCIDR: [198.19.0.0/16]
"""
    result = fix_text(text, "x.yaml")
    assert _valid(result.text)
    spec = yaml.safe_load(result.text)["spec"]
    assert spec == {
        "endpointSelector": {},
        "ingress": [{"fromEntities": ["cluster"]}],
        "egressDeny": [{"toCIDR": ["198.19.0.0/16"]}],
        "ingressDeny": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "bad"}}],
                "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
            }
        ],
        # ingress already has allow rules, so only egress gets the switch
        "enableDefaultDeny": {"egress": False},
    }
    assert [c.path for c in result.changes] == [
        "spec.deny[0].toPorts",
        "spec.egressDeny",
        "spec.ingressDeny",
        "spec.enableDefaultDeny.egress",
    ]


def test_valid_files_are_untouched() -> None:
    text = (SEED / "allow-frontend-to-b.yaml").read_text()
    assert fix_text(text, "a.yaml").text == text


def test_write_rewrites_in_place(tmp_path: Path) -> None:
    target = tmp_path / "deny.yaml"
    shutil.copy(SEED / "deny-a-to-b.yaml", target)
    [result] = fix_paths([target], write=True)
    assert target.read_text() == result.text and "egressDeny" in result.text
    assert fix_paths([target], write=True)[0].changes == ()  # idempotent
