"""``policy from-flows`` proposes toFQDNs (issue 16 item 5): an egress flow to an outside address
whose DNS names the node learned (``destination_names``) becomes a ``toFQDNs`` ``matchName`` peer
instead of a /32, and the subject's DNS traffic gets ``rules.dns`` so the DNS proxy learns the
addresses; ``--diff`` shows the proposal as ``cilia diff`` against the current policies."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from helpers_observe import WORLD_IP, seed_flows

from cilia.k8s.loader import load_text
from cilia.k8s.validate import validate_result
from cilia.observe.flow import L4, Verdict
from cilia.observe.fromflows import policies_from_flows, to_yaml
from tests.helpers_analyze import run_cli

NS = {"k8s:io.kubernetes.pod.namespace": "default"}


def _flows() -> list:
    """The seed's flows plus the client reaching api.example.com (an address learned from DNS) on
    443/TCP; its DNS query went to WORLD_IP:53/UDP (a seed flow)."""
    flows = seed_flows()
    dns = next(f for f in flows if f.l4.destination_port == 53 and f.verdict is Verdict.FORWARDED)
    api = replace(
        dns, seq=100, ip_destination="198.19.0.7", l4=L4(6, 40000, 443, syn=True),
        destination_names=("api.example.com.", "API.example.com"),
    )  # fmt: skip
    return [*flows, api]


def _client(docs: list[dict]) -> dict:
    return next(d for d in docs if d["metadata"]["name"] == "from-flows-client")


def test_to_fqdns_instead_of_a_cidr_with_the_dns_rule() -> None:
    docs, skipped = policies_from_flows(_flows())
    assert skipped == []
    assert _client(docs)["spec"]["egress"] == [
        {"toCIDR": [f"{WORLD_IP}/32"],
         "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}],
                      "rules": {"dns": [{"matchName": "api.example.com"}]}}]},
        {"toEndpoints": [{"matchLabels": {"app": "app-b", **NS}}],
         "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]},
        {"toFQDNs": [{"matchName": "api.example.com"}],
         "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]},
    ]  # fmt: skip
    report = validate_result(load_text(to_yaml(docs), "<from-flows>"))
    assert (report.errors, report.objects) == ((), 3)


def test_without_a_dns_flow_a_note_says_the_dns_rule_is_missing() -> None:
    flows = [f for f in _flows() if f.l4.destination_port != 53]
    docs, skipped = policies_from_flows(flows)
    to_api = {"toFQDNs": [{"matchName": "api.example.com"}],
              "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}  # fmt: skip
    assert to_api in _client(docs)["spec"]["egress"]
    assert [n for n in skipped if "toFQDNs rules need a DNS rule" in n] == [
        "default/app=client: toFQDNs rules need a DNS rule (egress to the DNS server on port 53 with "
        "rules.dns) for the DNS proxy to learn the addresses; no DNS flow of these pods was seen: add one"
    ]


def test_diff_against_the_current_policies(tmp_path: Path) -> None:
    lines = tmp_path / "flows.json"
    lines.write_text("".join(json.dumps(f.to_json()) + "\n" for f in _flows()))
    pods = tmp_path / "pods.yaml"
    pods.write_text(
        "".join(
            f"---\napiVersion: v1\nkind: Pod\n"
            f"metadata: {{name: {name}, namespace: default, labels: {{app: {app}}}}}\n"
            "spec: {containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}\n"
            for name, app in (("app-a-0", "app-a"), ("app-b-0", "app-b"), ("client-0", "client"))
        )
    )
    rc, out, err = run_cli(["policy", "from-flows", "--flows", str(lines), "--diff", "-f", str(pods),
                            "--diff-output", "json"])  # fmt: skip
    assert rc == 0, err
    data = json.loads(out)
    closed = {(c["from"], c["to"]) for c in data["changes"] if c["change"] == "closed"}
    # the generated policies put the client's egress and app-b's ingress into default deny:
    # the client can no longer reach app-a, nor app-a reach app-b
    assert ("default/client-0", "default/app-a-0") in closed
    assert ("default/app-a-0", "default/app-b-0") in closed
    assert not [c for c in data["changes"] if c["change"] == "opened"]
