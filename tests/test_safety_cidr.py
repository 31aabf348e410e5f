"""CIDR edge cases: a trailing newline is refused cleanly; an IPv4-mapped IPv6 CIDR is decided as
Cilium decides it (an IPv6 prefix: no IPv4 flow matches it) and never silently (lint CL014)."""

from __future__ import annotations

import json

import pytest

from cilia.analyze.lintraw import _mapped_v4
from cilia.k8s.netaddr import cidr_problem, parse_prefix
from tests.helpers_analyze import REPO, check_golden, run_cli

APP_A = "examples/seed/app-a.yaml"
MAPPED = "tests/inputs/mapped-ipv4-deny.yaml"


@pytest.mark.parametrize("text", ["10.0.0.0/8\n", "10.0.0.0/8 ", "10.0.0.0/\n8", "10.0.0.0/08", "10.0.0.0/٨"])
def test_odd_prefixes_are_refused(text: str) -> None:
    assert parse_prefix(text) is None and cidr_problem(text) is not None


def test_to_cidr_with_a_newline_fails_validation_cleanly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "p.yaml"
    f.write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c}\n"
        'spec:\n  endpointSelector: {}\n  egress:\n  - toCIDR: ["10.0.0.0/8\\n"]\n'
    )
    rc, out, _ = run_cli(["validate", "-f", str(f)])
    assert rc == 1 and "toCIDR[0]" in out and '"10.0.0.0/8\\n"' in out  # escaped, not a raw newline


@pytest.mark.parametrize(
    ("text", "v4"),
    [
        ("::ffff:198.19.0.10/128", "198.19.0.10/32"),
        ("::ffff:198.19.0.0/112", "198.19.0.0/16"),
        ("::ffff:198.19.0.10", "198.19.0.10/32"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("::/0", None),
        ("198.19.0.10/32", None),
        ("2001:2::1/128", None),
    ],
)
def test_mapped_prefixes_are_recognised(text: str, v4: str | None) -> None:
    assert _mapped_v4(text) == v4


def test_a_mapped_deny_denies_no_ipv4_flow_as_in_cilium(tmp_path) -> None:  # type: ignore[no-untyped-def]
    args = ["--from", "deployment:default/app-a", "--to", "198.19.0.10", "--port", "80", "-o", "json"]
    _, out, _ = run_cli(["trace", "-f", APP_A, "-f", MAPPED, *args])
    assert json.loads(out)["allowed"] is True
    plain = tmp_path / "v4.yaml"
    plain.write_text((REPO / MAPPED).read_text().replace("::ffff:198.19.0.10/128", "198.19.0.10/32"))
    _, out, _ = run_cli(["trace", "-f", APP_A, "-f", str(plain), *args])
    assert json.loads(out)["allowed"] is False


def test_lint_reports_every_mapped_cidr() -> None:
    rc, out, err = run_cli(["lint", "-f", APP_A, "-f", MAPPED])
    assert rc == 1 and err == ""
    check_golden("lint", "mapped-ipv4.txt", out)
    _, out, _ = run_cli(["lint", "-f", APP_A, "-f", MAPPED, "-o", "json"])
    check_golden("lint", "mapped-ipv4.json", out)
    found = [(f["rule"], f["path"]) for f in json.loads(out)["findings"] if f["rule"] == "CL014"]
    assert found == [
        ("CL014", "spec.egressDeny[0].toCIDR[0]"),
        ("CL014", "spec.egressDeny[1].toCIDRSet[0].cidr"),
        ("CL014", "spec.egressDeny[1].toCIDRSet[0].except[0]"),
        ("CL014", "spec.ingress[0].from[0].ipBlock.cidr"),
    ]


def test_addresses_in_services_endpoints_and_pods_are_ips(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "svc.yaml"
    f.write_text(
        'apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: "198.18.255.9\\n"\n'
        "  selector: {app: web}\n  ports: [{port: 80}]\n---\n"
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: ext}\nsubsets:\n"
        '- addresses: [{ip: "not-an-ip"}, {ip: 198.19.0.1}]\n  ports: [{port: 80}]\n---\n'
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: ext-1}\n"
        'endpoints: [{addresses: ["198.19.0.01"]}]\n---\n'
        'apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: "1.2.3.4.5"}\n---\n'
        "apiVersion: v1\nkind: Service\nmetadata: {name: headless}\nspec: {clusterIP: None}\n"
    )
    rc, out, _ = run_cli(["validate", "-f", str(f), "-o", "json"])
    assert rc == 1
    assert [e["path"] for e in json.loads(out)["errors"]] == [
        "spec.clusterIP", "subsets[0].addresses[0].ip", "endpoints[0].addresses[0]", "status.podIP",
    ]
