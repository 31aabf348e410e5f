"""``cilia verify`` expectations with a request for the L7 proxies: ``http: {method, path, host,
headers}`` and ``tls: {sni}``; a request a proxy refuses is ``deny`` (golden text and JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers_analyze import check_golden, run_cli
from tests.test_trace_l7 import MANIFESTS

PAIR = "from: deployment:default/client, to: deployment:default/web"
EXPECTATIONS = f"""\
expectations:
- {{{PAIR}, port: 80, expect: allow}}
- {{{PAIR}, port: 80, http: {{path: /public}}, expect: allow}}
- {{{PAIR}, port: 80,
   http: {{method: POST, path: /public}}, expect: deny}}
- {{{PAIR}, port: 80,
   http: {{method: POST, path: /submit, headers: {{X-Token: s3cret}}}}, expect: allow}}
- {{{PAIR}, port: 443, tls: {{sni: api.example.com}}, expect: allow}}
- {{{PAIR}, port: 443, tls: {{sni: example.com}}, expect: deny}}
- {{{PAIR}, port: 80, http: {{method: PUT}}, expect: allow}}
"""

def test_verify_with_l7_requests(tmp_path: Path) -> None:
    manifests = tmp_path / "l7.yaml"
    manifests.write_text(MANIFESTS)
    expect = tmp_path / "expect.yaml"
    expect.write_text(EXPECTATIONS)
    args = ["verify", "-f", str(manifests), "--expect", str(expect)]
    code, out, err = run_cli(args)
    assert (code, err) == (1, "")
    text = out.replace(str(tmp_path), "DIR")
    check_golden("verify", "l7.txt", text)
    assert "6 passed, 1 failed" in text
    assert "FAIL DIR/expect.yaml:10: deployment:default/client -> deployment:default/web 80/TCP http PUT / " \
           "expect allow: deny" in text
    code, out, _ = run_cli([*args, "-o", "json"])
    assert code == 1
    out = out.replace(str(tmp_path), "DIR")
    check_golden("verify", "l7.json", out)
    data = json.loads(out)
    actual = [r["actual"] for r in data["results"]]
    assert actual == ["allow", "allow", "deny", "allow", "allow", "deny", "deny"]
    http = {"method": "POST", "path": "/submit", "headers": {"X-Token": "s3cret"}}
    assert data["results"][3]["http"] == http
    assert data["results"][4]["tls"] == {"sni": "api.example.com"}


def test_unknown_request_fields_are_refused_with_file_and_line(tmp_path: Path) -> None:
    manifests = tmp_path / "l7.yaml"
    manifests.write_text(MANIFESTS)
    expect = tmp_path / "expect.yaml"
    expect.write_text("expectations:\n- {from: a/b, to: c/d, port: 80, http: {verb: GET}, expect: deny}\n")
    code, _, err = run_cli(["verify", "-f", str(manifests), "--expect", str(expect)])
    assert code == 2 and "expectations[0].http.verb" in err


def test_dns_expectations(tmp_path: Path) -> None:
    from tests.test_trace_l7 import DNS_MANIFESTS

    manifests = tmp_path / "dns.yaml"
    manifests.write_text(DNS_MANIFESTS)
    expect = tmp_path / "expect.yaml"
    expect.write_text(
        "expectations:\n"
        "- {from: default/client, to: default/dns, port: 53, protocol: UDP, dns: {name: a.example.com}, "
        "expect: allow}\n"
        "- {from: default/client, to: default/dns, port: 53, protocol: UDP, dns: {name: a.example.org}, "
        "expect: deny}\n"
    )
    code, out, _ = run_cli(["verify", "-f", str(manifests), "--expect", str(expect)])
    assert code == 0 and "2 passed, 0 failed" in out and "dns a.example.org expect deny: deny" in out
