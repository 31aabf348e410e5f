"""``cilia observe``, ``cilia policy from-flows`` and ``cilia audit`` through the real CLI: flows from
the flow log (no agent) and from an agent's REST API (the real server and client over a unix socket,
serving a flow pipeline), golden output, follow, errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers_observe import check_golden, seed_flows
from typer.testing import CliRunner

from cilia.agent.api import APIServer
from cilia.cli.main import app
from cilia.k8s.loader import load_text
from cilia.k8s.validate import validate_result
from cilia.observe import render
from cilia.observe.audit import AuditSettings
from cilia.observe.flow import Verdict, flow_from_json
from cilia.observe.log import FlowLog

FLOWS = seed_flows()


def cli(base: Path, *args: str, code: int = 0, stdin: str | None = None) -> tuple[str, str]:
    full = [*args, "--state-dir", str(base / "state"), "--run-dir", str(base / "run")]
    res = CliRunner().invoke(app, full, input=stdin)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == code, f"cilia {' '.join(args)} -> {res.exit_code}\n{res.stdout}\n{res.stderr}"
    return res.stdout, res.stderr


@pytest.fixture
def logged(tmp_path: Path) -> Path:
    log = FlowLog(tmp_path / "state")
    for f in FLOWS:
        log.append(f)
    log.close()
    return tmp_path


def test_observe_from_the_log_golden(logged: Path) -> None:
    out, _ = cli(logged, "observe")
    assert out == render.render(FLOWS, "compact")
    out, _ = cli(logged, "observe", "--verdict", "DROPPED", "-o", "json")
    check_golden("dropped.jsonl", out)
    out, _ = cli(logged, "observe", "--to-pod", "default/app-b", "-o", "table")
    check_golden("to-app-b.table.txt", out)
    out, _ = cli(logged, "observe", "--from-label", "app=client", "--protocol", "udp")
    check_golden("client-udp.compact.txt", out)


def test_observe_by_event_type(logged: Path) -> None:
    """``--type drop`` / ``policy-verdict`` split the seed flows by verdict, as hubble's event types."""
    drops, _ = cli(logged, "observe", "--type", "drop")
    verdicts, _ = cli(logged, "observe", "--type", "policy-verdict")
    assert drops == render.render([f for f in FLOWS if f.verdict is Verdict.DROPPED], "compact")
    assert verdicts == render.render([f for f in FLOWS if f.verdict is not Verdict.DROPPED], "compact")
    _, err = cli(logged, "observe", "--type", "trace", code=2)
    assert "--type" in err


def test_observe_last_and_suppressed_note(logged: Path) -> None:
    out, err = cli(logged, "observe", "--last", "2", "-o", "json")
    assert [flow_from_json(json.loads(line)) for line in out.splitlines()] == FLOWS[-2:]
    assert "suppressed 7 events" in err


def test_observe_nothing_matched(logged: Path) -> None:
    out, err = cli(logged, "observe", "--namespace", "kube-system")
    assert (out, "no flows matched (8 flows in the flow log" in err) == ("", True)


def test_follow_prints_new_flows(logged: Path) -> None:
    log = FlowLog(logged / "state")
    extra = [replace(FLOWS[0], seq=9), replace(FLOWS[1], seq=10)]

    def writer() -> None:
        time.sleep(1.0)  # after the command's first read, also on a busy machine
        for f in extra:
            log.append(f)

    t = threading.Thread(target=writer)
    t.start()
    out, _ = cli(
        logged, "observe", "-f", "--follow-for", "2.5", "--verdict", "DROPPED", "--last", "1", "-o", "json"
    )
    t.join()
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [8, 9]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--verdict", "DENIED"], "--verdict 'DENIED'"),
        (["-o", "yaml"], "unknown output format"),
        (["-f", "-o", "table"], "--follow prints flows as they come"),
        (["--since", "later"], "neither a duration"),
    ],
)
def test_observe_errors(tmp_path: Path, args: list[str], message: str) -> None:
    _, err = cli(tmp_path, "observe", *args, code=2)
    assert message in err


# ------------------------------------------------------------------------------- from the agent


class PipelineView:
    """The agent's REST view as far as flows go: a list served the way FlowPipeline.snapshot does."""

    def __init__(self, flows: list[Any]) -> None:
        self.flows_ = flows

    def status(self) -> dict[str, Any]:
        return {"ready": True}

    def endpoints(self) -> list[dict[str, Any]]:
        return []

    def identities(self) -> list[dict[str, Any]]:
        return []

    def flows(self, since: int, limit: int) -> dict[str, Any]:
        out = [f.to_json() for f in self.flows_ if f.seq > since][: max(limit, 0)]
        return {"flows": out, "last_seq": out[-1]["seq"] if out else since, "lost": 1, "suppressed": 7}

    def wait_revision(self, revision: int, timeout: float) -> int:
        return revision


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    server = APIServer(tmp_path / "run" / "cilia.sock", PipelineView(FLOWS))
    server.start()
    try:
        yield tmp_path
    finally:
        server.close()


def test_observe_reads_the_agent(agent: Path) -> None:
    out, err = cli(agent, "observe", "--verdict", "DROPPED", "-o", "json")
    check_golden("dropped.jsonl", out)  # the same flows as from the log
    assert "suppressed 7 events (rate limit) and lost 1" in err
    # the log is empty here: --from-log proves the agent was the source above
    out, _ = cli(agent, "observe", "--from-log")
    assert out == ""


# ------------------------------------------------------------------------------- from-flows


def test_policy_from_flows_from_the_log_and_a_file(logged: Path) -> None:
    out, _ = cli(logged, "policy", "from-flows")
    check_golden("from-flows.yaml", out)
    assert validate_result(load_text(out, "<out>")).errors == ()
    jsonl = render.render(FLOWS, "json")
    from_file, _ = cli(logged, "policy", "from-flows", "--flows", "-", stdin=jsonl)
    assert from_file == out
    data, _ = cli(logged, "policy", "from-flows", "-n", "default", "--pod", "client", "-o", "json")
    items = json.loads(data)["items"]
    assert [d["metadata"]["name"] for d in items] == [
        "from-flows-app-a",
        "from-flows-app-b",
        "from-flows-client",
    ]


def test_policy_from_flows_errors(tmp_path: Path) -> None:
    _, err = cli(tmp_path, "policy", "from-flows", code=1)
    assert "no forwarded or audited flow" in err
    _, err = cli(tmp_path, "policy", "from-flows", "--flows", "-", stdin="{not json\n", code=2)
    assert "<stdin>:1: not a flow" in err


# ------------------------------------------------------------------------------- audit


def test_audit_on_off_status(tmp_path: Path) -> None:
    out, _ = cli(tmp_path, "audit", "on", "-o", "json")
    assert json.loads(out) == {"node": True, "namespaces": [], "applied_by_agent": False}
    cli(tmp_path, "audit", "on", "-n", "staging", "-n", "dev")
    out, _ = cli(tmp_path, "audit", "off")
    assert out == "policy audit mode: node off; namespaces: dev, staging\n"
    cli(tmp_path, "audit", "off", "-n", "dev")
    assert AuditSettings.load(tmp_path / "state") == AuditSettings(False, frozenset({"staging"}))
    out, _ = cli(tmp_path, "audit", "status", "-o", "json")
    assert json.loads(out)["namespaces"] == ["staging"]
    _, err = cli(tmp_path, "audit", "maybe", code=2)
    assert "unknown mode" in err


def test_audit_with_an_agent_that_cannot_apply_it(agent: Path) -> None:
    _, err = cli(agent, "audit", "on", "-o", "json", code=1)
    assert "saved, but the agent did not apply it" in err and "501" in err
    assert AuditSettings.load(agent / "state").node


def test_audited_flows_are_listed(tmp_path: Path) -> None:
    log = FlowLog(tmp_path / "state")
    audited = replace(FLOWS[0], verdict=Verdict.AUDIT, seq=1)
    log.append(audited)
    out, _ = cli(tmp_path, "observe", "--verdict", "AUDIT")
    assert out == (
        "Nov 18 11:06:41.001: default/app-a-7d4b9:43210 (ID:256) -> default/app-b-5c8f2:80 (ID:257) "
        "policy-verdict:L3-Only EGRESS AUDITED (TCP) Policy denied by denylist: would be denied by "
        "CiliumNetworkPolicy default/deny-app-a-to-app-b egressDeny[0]\n"
    )
