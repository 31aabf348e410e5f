"""``cilia up`` with many pods (issue 15 item 8): the starting agent reports each pod it creates
(``pods_created`` of ``pods_to_create`` in its status), ``up`` draws them as a bar on a terminal and
prints nothing of it when stderr is piped. No root: the simulated datapath."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from cilia.agent import process
from cilia.agent.client import AgentClient
from cilia.cli.main import app
from cilia.cli.progress import MIN_PODS, PodProgress
from cilia.lab.node_setup import teardown
from tests.helpers_agent import SimAgent

PODS = 12


def deployment(replicas: int) -> dict[str, Any]:
    labels = {"app": "up-many"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "up-many"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": "x"}]}}},
    }


def test_the_starting_agent_reports_each_pod_and_up_is_quiet_when_piped(tmp_path: Path) -> None:
    # A node whose store holds PODS pods that do not exist (after `cilia down` without --purge).
    first = SimAgent(tmp_path)
    first.start()
    try:
        first.apply("many", deployment(PODS))
    finally:
        first.stop()
    assert not teardown(first.cfg).errors  # pods gone, the store kept (`cilia down`)
    # The next agent creates them at start; at each creation its status says how far it is.
    again = SimAgent(tmp_path)
    seen: list[tuple[int, int]] = []
    create = again.node.runtime.create

    def create_and_look(manifest: dict[str, Any], before_address: Any) -> Any:
        status = again.agent.status()
        seen.append((status["pods_created"], status["pods_to_create"]))
        return create(manifest, before_address)

    again.node.runtime.create = create_and_look  # type: ignore[method-assign]
    again.start()
    try:
        status = again.client.status()
        deadline = time.monotonic() + 30
        while not status["ready"] and time.monotonic() < deadline:
            time.sleep(0.02)
            status = again.client.status()
    finally:
        again.stop()
    assert seen == [(i, PODS) for i in range(PODS)]  # one step per pod, not a timer
    assert (status["pods_created"], status["pods_to_create"], status["endpoints"]) == (PODS, PODS, PODS)
    assert not teardown(again.cfg).errors

    # `cilia up` (the agent as a background process) on the same store, stderr not a terminal: no bar.
    flags = ["--state-dir", str(again.cfg.state_dir), "--run-dir", str(again.cfg.run_dir)]
    up = again.runner.invoke(app, ["up", *flags], env={"TERM": "xterm"})
    try:
        assert up.exit_code == 0, up.output
        assert up.stderr == "" and up.stdout.startswith("cilia node started: agent pid ")
        st = AgentClient(again.cfg.socket_path).status()
        assert (st["pods_created"], st["pods_to_create"], st["endpoints"]) == (PODS, PODS, PODS)
    finally:  # `cilia down --purge`, in this process
        process.stop(again.cfg)
        teardown(again.cfg, purge=True)


def test_the_bar_follows_the_reports_on_a_terminal() -> None:
    screen = io.StringIO()
    bar = PodProgress(Console(file=screen, force_terminal=True, width=100))
    bar({"pods_created": 0, "pods_to_create": MIN_PODS - 1})  # few pods: no bar
    assert screen.getvalue() == ""
    for done in (0, 5, 17):
        bar({"ready": False, "pods_created": done, "pods_to_create": 40})
    bar.close()
    drawn = screen.getvalue()
    assert "creating pods" in drawn and "17/40" in drawn
