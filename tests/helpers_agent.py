"""A real agent in the test process, without root: the reconcile loop on a thread, its REST API on a
unix socket, the SQLite store in a temporary state directory and the simulated datapath
(``--datapath sim``: pods get addresses, the kernel's lookup is mirrored in Python). The CLI is
driven through typer against it.

One harness for every test that needs a running node (it used to be copied into three files).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from typer.testing import CliRunner

from cilia.agent.api import APIServer
from cilia.agent.client import AgentClient
from cilia.agent.config import AgentConfig
from cilia.agent.daemon import Agent
from cilia.cli.main import app
from cilia.lab.node_setup import open_node


class SimAgent:
    """One node on the simulated datapath; :meth:`start` / :meth:`stop` (or :func:`running_agent`)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.cfg = AgentConfig.resolve(base / "state", base / "run", datapath="sim")
        self.cfg.save()
        self.node = open_node(self.cfg)
        self.agent = Agent(
            self.cfg, self.node.store, self.node.runtime, self.node.datapath, self.node.gateway
        )
        self.server = APIServer(self.cfg.socket_path, self.agent)
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.client = AgentClient(self.cfg.socket_path)
        self.runner = CliRunner()

    def start(self) -> None:
        self.server.start()
        self.thread.start()

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(timeout=10)
        self.server.close()
        self.node.close()

    def cli(self, *args: str, code: int = 0) -> str:
        """``cilia ARGS`` against this node; asserts the exit code, returns stdout."""
        full = [*args, "--state-dir", str(self.cfg.state_dir), "--run-dir", str(self.cfg.run_dir)]
        res = self.runner.invoke(app, full)
        assert res.exit_code == code, f"cilia {' '.join(args)} -> {res.exit_code}\n{res.output}"
        return res.stdout

    def apply(self, name: str, *docs: dict[str, object]) -> None:
        """Write ``docs`` to ``<base>/<name>.yaml`` and ``cilia apply`` it."""
        path = self.base / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        self.cli("apply", "-f", str(path))

    def ids(self) -> dict[str, tuple[str, int, int]]:
        """``<first two parts of the pod name>`` (the app label of the seed's pods) ->
        (ip, endpoint id, identity) of one pod each."""
        return {
            "-".join(e.pod.name.split("-")[:2]): (e.ip, e.id, e.identity)
            for e in self.agent.reconciler.endpoints
        }


@contextmanager
def running_agent(base: Path) -> Iterator[SimAgent]:
    """A started :class:`SimAgent`, stopped (store and datapath closed) on the way out."""
    s = SimAgent(base)
    s.start()
    try:
        yield s
    finally:
        s.stop()
