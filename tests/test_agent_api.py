"""The agent's REST API over a unix socket and its client (no root: a view object stands in for a
running agent only as the data source; the server, socket and client are the real ones)."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cilia.agent.api import APIServer, SocketInUseError
from cilia.agent.client import AgentAPIError, AgentClient, AgentUnavailable


class View:
    """A fixed agent state; ``wait_revision`` advances like the agent's loop does."""

    def __init__(self) -> None:
        self.revision = 3
        self.cond = threading.Condition()

    def status(self) -> dict[str, Any]:
        return {"ready": True, "revision": self.revision}

    def endpoints(self) -> list[dict[str, Any]]:
        return [{"id": 1, "pod": "default/a", "ip": "198.18.0.2", "identity": 256}]

    def identities(self) -> list[dict[str, Any]]:
        return [{"id": 256, "labels": ["k8s:app=a"], "endpoints": ["default/a"]}]

    def flows(self, since: int, limit: int) -> dict[str, Any]:
        if limit < 0:
            raise ValueError("negative limit")
        return {"flows": [{"seq": s} for s in range(since + 1, since + 1 + limit)], "last_seq": since + limit}

    def wait_revision(self, revision: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.revision < revision and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            return self.revision

    def bump(self, to: int) -> None:
        with self.cond:
            self.revision = to
            self.cond.notify_all()


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    view = View()
    server = APIServer(tmp_path / "run" / "cilia.sock", view)
    server.start()
    try:
        yield view, server, AgentClient(server.path, timeout=5)
    finally:
        server.close()


def test_routes_and_socket_mode(served) -> None:  # type: ignore[no-untyped-def]
    view, server, client = served
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    assert client.status() == {"ready": True, "revision": 3}
    assert client.endpoints() == view.endpoints()
    assert client.identities() == view.identities()
    assert client.flows(since=5, limit=2) == {"flows": [{"seq": 6}, {"seq": 7}], "last_seq": 7}
    assert client.is_up()


def test_errors_are_reported_not_fatal(served) -> None:  # type: ignore[no-untyped-def]
    _, _, client = served
    with pytest.raises(AgentAPIError, match=r"404"):
        client._call("GET", "/v1/nope")
    with pytest.raises(AgentAPIError, match=r"400.*since"):
        client._call("GET", "/v1/flows?since=x")
    with pytest.raises(AgentAPIError, match=r"400.*limit"):  # checked before the view sees it
        client.flows(limit=-1)
    assert client.status()["ready"]  # still serving


def test_wait_revision_blocks_until_reconciled(served) -> None:  # type: ignore[no-untyped-def]
    view, _, client = served
    threading.Timer(0.2, view.bump, args=(7,)).start()
    t = time.monotonic()
    assert client.wait_revision(7, timeout=5) == 7
    assert 0.1 < time.monotonic() - t < 4
    assert client.wait_revision(9, timeout=0.2) == 7  # timed out: the revision reached


def test_no_agent_and_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "cilia.sock"
    client = AgentClient(path, timeout=1)
    with pytest.raises(AgentUnavailable, match="cilia up"):
        client.status()
    assert not client.is_up()
    # A socket file left by a killed agent (nobody listening) is replaced.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    server = APIServer(path, View())
    server.start()
    try:
        assert client.status()["ready"]
        with pytest.raises(SocketInUseError, match="another cilia agent"):
            APIServer(path, View())
    finally:
        server.close()
    assert not path.exists()
