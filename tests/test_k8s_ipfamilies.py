"""A Service's IP families as the Kubernetes API server gives them (cilia.k8s.ipfamilies): the
families a policy and the given fields resolve to in a dual-stack cluster (IPv4 first), and the
validation of ipFamilyPolicy/ipFamilies/clusterIPs with file:line:field errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cilia.k8s.ipfamilies import findings, resolve
from tests.helpers_analyze import run_cli


@pytest.mark.parametrize(
    ("policy", "families", "ips", "want"),
    [
        (None, (), (), ("IPv4",)),
        ("SingleStack", ("IPv6",), (), ("IPv6",)),
        ("PreferDualStack", (), (), ("IPv4", "IPv6")),
        ("RequireDualStack", ("IPv6",), (), ("IPv6", "IPv4")),
        (None, (), ("2001:2:0:ff::3",), ("IPv6",)),
        (None, (), ("198.18.255.1", "2001:2:0:ff::3"), ("IPv4", "IPv6")),  # RequireDualStack inferred
        (None, ("IPv6", "IPv4"), (), ("IPv6", "IPv4")),
        ("PreferDualStack", (), ("198.18.255.4",), ("IPv4", "IPv6")),
    ],
)
def test_families(policy: str | None, families: tuple[str, ...], ips: tuple[str, ...],
                  want: tuple[str, ...]) -> None:
    assert resolve(policy, families, ips) == want


def test_findings_name_the_field() -> None:
    assert findings({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"],
                     "clusterIPs": ["198.18.255.1", "2001:2:0:ff::1"], "clusterIP": "198.18.255.1"}) == []
    got = findings({"ipFamilyPolicy": "Dual", "ipFamilies": ["IPv6", "IPv6"],
                    "clusterIPs": ["198.18.255.1", "None"]})
    assert [(p, m.split(":")[0]) for p, m in got] == [
        (("spec", "ipFamilyPolicy"), "Unsupported value"),
        (("spec", "ipFamilies", 1), "Duplicate value"),
        (("spec", "clusterIPs", 0), "Invalid value"),  # IPv4 where ipFamilies[0] says IPv6
        (("spec", "clusterIPs", 1), "Invalid value"),  # "None" only as the single entry
    ]


def test_validate_reports_file_line_field(tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n"
                    "  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv4, IPv6]\n  ports: [{port: 80}]\n")
    code, out, _ = run_cli(["validate", "-f", str(path)])
    assert code == 1 and f"{path}:5:3: spec.ipFamilyPolicy: Invalid value: \"SingleStack\"" in out, out
