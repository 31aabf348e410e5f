"""Client of the agent's REST API (:mod:`cilia.agent.api`), used by the CLI and the tests."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

from cilia.agent.errors import AgentError


class AgentUnavailable(AgentError, ConnectionError):
    """No agent answers on the socket."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"no cilia agent at {path} ({why}); start one with `cilia up`")
        self.path = path


class AgentTimeout(AgentUnavailable):
    """The agent did not answer in time (it may be busy with a long reconcile)."""


class AgentAPIError(AgentError, RuntimeError):
    """The agent answered with an error."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class AgentClient:
    """Typed calls to one agent. Each call opens its own connection (the CLI makes a few)."""

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        conn = _UnixConnection(self.socket_path, timeout or self.timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload else {}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = json.loads(resp.read() or b"null")
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise AgentUnavailable(self.socket_path, e.strerror or type(e).__name__) from e
        except TimeoutError as e:
            raise AgentTimeout(self.socket_path, "timed out") from e
        finally:
            conn.close()
        if resp.status != 200:
            raise AgentAPIError(f"{method} {path}: {resp.status}: {(data or {}).get('error', '')}")
        return data

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status")

    def endpoints(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/endpoints")

    def identities(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/identities")

    def flows(self, since: int = 0, limit: int = 1000) -> dict[str, Any]:
        return self._call("GET", f"/v1/flows?since={since}&limit={limit}")

    def wait_revision(self, revision: int, timeout: float = 10.0) -> int:
        """Block until the agent reconciled store ``revision``; the revision it reached."""
        out = self._call("POST", "/v1/wait", {"revision": revision, "timeout": timeout}, timeout=timeout + 5)
        return int(out["revision"])

    def audit(self) -> dict[str, Any]:
        """The agent's policy audit settings: ``{"node": bool, "namespaces": [...]}``."""
        return self._call("GET", "/v1/audit")

    def set_audit(
        self, node: bool, namespaces: list[str] | None = None, host: bool = False
    ) -> dict[str, Any]:
        """Turn node audit mode on/off, set the audited namespaces and the host endpoint's audit
        mode; the settings in force."""
        body = {"node": node, "namespaces": list(namespaces or ()), "host": host}
        return self._call("POST", "/v1/audit", body)

    def is_up(self) -> bool:
        try:
            return bool(self.status().get("ready"))
        except (AgentUnavailable, AgentAPIError):
            return False
