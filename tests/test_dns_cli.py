"""``cilia dns cache`` (what the node's DNS proxy learned, read from its saved state) in text and
JSON, golden files; a damaged state file is an error naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_analyze import check_golden
from typer.testing import CliRunner

from cilia.agent.fqdn import FqdnState
from cilia.cli.main import app
from cilia.identity.labels import Labels
from cilia.proxy.dns.cache import DnsCache

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z
API_LABELS = ["cidr:198.19.0.5/32", "fqdn:*.example.com", "fqdn:api.example.com", "reserved:world"]


def cache_cli(state: Path, *args: str) -> tuple[int, str]:
    dirs = ["--state-dir", str(state), "--run-dir", str(state / "run")]
    r = CliRunner().invoke(app, ["dns", "cache", *dirs, *args])
    return r.exit_code, r.output


def test_dns_cache_text_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_cli(tmp_path) == (0, "no learned addresses (min TTL 0 s)\n")
    monkeypatch.setenv("CILIA_TOFQDNS_MIN_TTL", "30")  # the node's setting, as `cilia up` would read it
    state = FqdnState.for_node(tmp_path, min_ttl=30)
    state.cache = DnsCache(30, {"198.19.0.5": {"api.example.com": T0 + 60, "cdn.example.com": T0 + 30},
                                "198.19.0.6": {"web.example.org": T0 + 3600}})
    state.ips = {"198.19.0.5": Labels.parse(API_LABELS)}
    state.save()
    code, text = cache_cli(tmp_path)
    assert code == 0
    check_golden("dns", "cache.txt", text)
    code, out = cache_cli(tmp_path, "-o", "json")
    assert code == 0
    check_golden("dns", "cache.json", out)
    data = json.loads(out)
    assert data["min_ttl"] == 30 and data["entries"][0] == {
        "ip": "198.19.0.5", "name": "api.example.com", "expires": "2026-11-18T11:07:40Z",
        "selected_by": ["*.example.com", "api.example.com"]}


def test_dns_cache_damaged_file(tmp_path: Path) -> None:
    (tmp_path / "fqdn.json").write_text("[]")
    code, out = cache_cli(tmp_path)
    assert code == 1 and "fqdn.json" in out


def test_dns_cache_of_every_node_of_a_cluster(tmp_path: Path) -> None:
    """On a cluster set up here (``cilia up --nodes N``) each node's proxy learned for its own pods:
    the cache of every node, named."""
    from cilia.agent.cluster import member_configs
    from cilia.agent.config import AgentConfig

    base = AgentConfig.resolve(tmp_path / "state", tmp_path / "run", store="etcd",
                               etcd_endpoints="198.18.254.254:2379", cluster_size=3)  # fmt: skip
    base.save()
    learned = {"node-0": {"198.19.0.5": {"api.example.com": T0 + 60}},
               "node-2": {"198.19.0.6": {"web.example.org": T0 + 3600}}}
    for m in member_configs(base):
        state = FqdnState.for_node(m.state_dir)
        state.cache = DnsCache(0, learned.get(m.node_name, {}))
        state.save()
    dirs = ["--state-dir", str(tmp_path / "state"), "--run-dir", str(tmp_path / "run")]
    r = CliRunner().invoke(app, ["dns", "cache", *dirs])
    assert r.exit_code == 0, r.output
    check_golden("dns", "cache-nodes.txt", r.output)
    r = CliRunner().invoke(app, ["dns", "cache", *dirs, "-o", "json"])
    assert [(e["node"], e["ip"]) for e in json.loads(r.output)["entries"]] == [
        ("node-0", "198.19.0.5"), ("node-2", "198.19.0.6")]
