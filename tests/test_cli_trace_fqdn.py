"""``cilia trace``/``verify`` with toFQDNs: golden text/json for flows to names and addresses a node
learned (its saved DNS cache written by the agent's code on a simulated node, at the real time), the
note on a default-deny drop toFQDNs did not apply to, exit 2 for a name nothing was learned for,
--no-state, and the state directory taken from the environment as the node commands take it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from cilia.agent.fqdn import learn
from tests.helpers_analyze import check_golden, run_cli
from tests.helpers_fqdn import CLIENT, Node
from tests.test_analyze_fqdn import API, CDN, OTHER, POLICY, UNKNOWN

CDN2 = "198.19.0.16"


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """Manifests in tmp/m.yaml, the node's state in tmp/node: api (matchName), cdn with two addresses
    (matchPattern), other (no selector), all learned just now for an hour."""
    node = Node(tmp_path / "node")
    node.apply(CLIENT, POLICY)
    node.now = time.time()
    learn(node.rec, node.state, "api.example.com", {API: 3600})
    learn(node.rec, node.state, "cdn.example.org", {CDN: 3600, CDN2: 3600})
    learn(node.rec, node.state, "other.example.net", {OTHER: 3600})
    (tmp_path / "m.yaml").write_text(yaml.safe_dump_all([CLIENT, POLICY]))
    return tmp_path


def cli(world: Path, *args: str) -> tuple[int, str, str]:
    rc, out, err = run_cli([*args, "-f", str(world / "m.yaml")])
    return rc, out.replace(str(world), "TMP"), err.replace(str(world), "TMP")


CASES = [
    # (golden name, to, port, exit code)
    ("fqdn-match-name", "fqdn:api.example.com", "80/TCP", 0),
    ("fqdn-match-pattern-two-addresses", "fqdn:cdn.example.org", "443/TCP", 0),
    ("fqdn-learned-unselected", "fqdn:other.example.net", "80/TCP", 1),
    ("fqdn-ip-not-learned", UNKNOWN, "80/TCP", 1),
]


@pytest.mark.parametrize(("name", "dst", "port", "code"), CASES)
def test_trace_fqdn_golden(world: Path, name: str, dst: str, port: str, code: int) -> None:
    args = ["trace", "--state-dir", str(world / "node"), "--from", "default/client", "--to", dst,
            "--port", port]
    rc, out, err = cli(world, *args)
    assert (rc, err) == (code, "")
    check_golden("trace", f"{name}.txt", out)
    rc, out, err = cli(world, *args, "-o", "json")
    assert (rc, err) == (code, "")
    assert json.loads(out)["allowed"] is (code == 0)
    check_golden("trace", f"{name}.json", out)


def test_a_learned_ip_peer_is_the_name_s_address(world: Path) -> None:
    by_ip = cli(world, "trace", "--state-dir", str(world / "node"), "--from", "default/client", "--to", API,
                "--port", "80/TCP", "-o", "json")
    by_name = cli(world, "trace", "--state-dir", str(world / "node"), "--from", "default/client", "--to",
                  "fqdn:api.example.com", "--port", "80/TCP", "-o", "json")
    assert by_ip == by_name and by_ip[0] == 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--state-dir", "TMP/node", "--to", "fqdn:never.example.com"],
     "error: no address learned for never.example.com on this node (state dir TMP/node); toFQDNs rules "
     "are decided by DNS answers: look the name up from a pod first, or trace to its IP\n"),
    (["--no-state", "--to", "fqdn:api.example.com"],
     "error: no address learned for api.example.com on this node (no node state read: --no-state); "
     "toFQDNs rules are decided by DNS answers: look the name up from a pod first, or trace to its IP\n"),
    (["--state-dir", "TMP/node", "--no-state", "--to", API],
     "error: --no-state and --state-dir contradict each other: give one\n"),
    (["--state-dir", "TMP/node", "--to", "fqdn:*.example.org"],
     "error: bad peer 'fqdn:*.example.org': fqdn: takes one DNS name, not a pattern (a flow goes to the "
     "addresses of one name); name one the pattern matches\n"),
])
def test_trace_fqdn_errors_exit_2(world: Path, extra: list[str], message: str) -> None:
    args = [a.replace("TMP", str(world)) for a in extra]
    assert cli(world, "trace", "--from", "default/client", "--port", "80/TCP", *args) == (2, "", message)


def test_no_state_ignores_what_the_node_learned(world: Path) -> None:
    rc, out, _ = cli(world, "trace", "--no-state", "--from", "default/client", "--to", API, "--port", "80")
    assert rc == 1 and "no node learned it from a DNS answer (no node state read: --no-state)" in out


def test_state_dir_from_the_environment(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("trace", "--from", "default/client", "--to", "fqdn:api.example.com", "--port", "80")
    monkeypatch.setenv("CILIA_STATE_DIR", str(world / "node"))
    assert cli(world, *args)[0] == 0
    monkeypatch.setenv("CILIA_STATE_DIR", str(world / "empty"))
    rc, _, err = cli(world, *args)
    assert rc == 2 and "(state dir TMP/empty)" in err


def test_a_damaged_cache_exits_2(world: Path) -> None:
    (world / "node" / "fqdn.json").write_text("{not json")
    rc, out, err = cli(world, "trace", "--state-dir", str(world / "node"), "--from", "default/client",
                       "--to", API, "--port", "80")
    assert (rc, out) == (2, "") and err.startswith(
        "error: cannot read what the node learned from DNS answers: TMP/node/fqdn.json: ")


EXPECTATIONS = """\
expectations:
- {from: default/client, to: fqdn:api.example.com, port: 80, expect: allow}
- {from: default/client, to: fqdn:cdn.example.org, port: 80, expect: allow}
- {from: default/client, to: 198.19.0.9, port: 80, expect: deny}
"""


def test_verify_fqdn_golden(world: Path) -> None:
    (world / "expect.yaml").write_text(EXPECTATIONS)
    args = ["verify", "--state-dir", str(world / "node"), "--expect", str(world / "expect.yaml")]
    rc, out, err = cli(world, *args)
    assert (rc, err) == (1, "")
    check_golden("verify", "fqdn.txt", out)
    rc, out, err = cli(world, *args, "-o", "json")
    assert (rc, err) == (1, "")
    assert [(r["to"], r["actual"]) for r in json.loads(out)["results"]] == [
        ("fqdn:api.example.com", "allow"), ("fqdn:cdn.example.org", "deny"), (UNKNOWN, "deny")]
    check_golden("verify", "fqdn.json", out)
