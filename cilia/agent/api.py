"""The agent's local REST API: JSON over HTTP/1.1 on a unix socket (mode 0600, root only).

Routes (all JSON):

* ``GET /v1/status``: readiness, pid, the store revision the agent has reconciled, counts.
* ``GET /v1/endpoints``, ``GET /v1/identities``: the endpoint table and the identities in use.
* ``GET /v1/flows?since=SEQ&limit=N``: decoded datapath events from the bounded flow ring.
* ``POST /v1/wait`` ``{"revision": N, "timeout": S}``: returns once the agent has reconciled store
  revision ``N`` (or the timeout passed), with the revision reached.
* ``GET /v1/audit``, ``POST /v1/audit`` ``{"node": bool, "namespaces": [...]}``: policy audit mode
  (node switch and audited namespaces), persisted by the agent; answers the settings in force.

The server only routes; what it serves comes from an :class:`AgentView` (the daemon).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse


class AgentView(Protocol):
    """What the API serves; implemented by the running agent."""

    def status(self) -> dict[str, Any]: ...
    def endpoints(self) -> list[dict[str, Any]]: ...
    def identities(self) -> list[dict[str, Any]]: ...
    def flows(self, since: int, limit: int) -> dict[str, Any]: ...
    def wait_revision(self, revision: int, timeout: float) -> int: ...


def audit_settings(view: Any) -> dict[str, Any]:
    """The agent's audit settings: ``view.audit()`` or, for the node agent, its reconciler's."""
    own = getattr(view, "audit", None)
    if own is not None:
        return own()
    rec = _reconciler(view)
    return {"node": rec.node_audit, "namespaces": sorted(rec.audit_namespaces)}


def set_audit(view: Any, node: bool, namespaces: list[str]) -> dict[str, Any]:
    """Apply audit settings: ``view.set_audit`` or, for the node agent, its reconciler under the
    agent's lock (the reconcile loop runs beside the API)."""
    own = getattr(view, "set_audit", None)
    if own is not None:
        return own(node, namespaces)
    rec = _reconciler(view)
    with view._lock:
        return rec.set_audit(node, namespaces)


def _reconciler(view: Any) -> Any:
    rec = getattr(view, "reconciler", None)
    if rec is None:
        raise _Unsupported("this agent has no policy audit mode")
    return rec


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    view: AgentView


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the agent log has what matters
        pass

    def _reply(self, code: int, body: Any) -> None:
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _int(self, query: dict[str, list[str]], name: str, default: int) -> int:
        try:
            return int(query.get(name, [default])[0])
        except ValueError as e:
            raise _BadRequest(f"query parameter {name!r} must be an integer") from e

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        view = self.server.view
        try:
            if url.path == "/v1/status":
                self._reply(200, view.status())
            elif url.path == "/v1/endpoints":
                self._reply(200, view.endpoints())
            elif url.path == "/v1/identities":
                self._reply(200, view.identities())
            elif url.path == "/v1/flows":
                since = self._int(query, "since", 0)
                limit = self._int(query, "limit", 1000)
                self._reply(200, view.flows(since, limit))
            elif url.path == "/v1/audit":
                self._reply(200, audit_settings(view))
            else:
                self._reply(404, {"error": f"no route GET {url.path}"})
        except _BadRequest as e:
            self._reply(400, {"error": str(e)})
        except _Unsupported as e:
            self._reply(501, {"error": str(e)})
        except Exception as e:  # the agent must keep serving; the client shows the error
            self._reply(500, {"error": f"{type(e).__name__}: {e}"})

    def do_POST(self) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if url.path == "/v1/wait":
                rev = int(body.get("revision", 0))
                timeout = min(float(body.get("timeout", 10.0)), 60.0)
                self._reply(200, {"revision": self.server.view.wait_revision(rev, timeout)})
            elif url.path == "/v1/audit":
                node = body.get("node", False)
                namespaces = body.get("namespaces", [])
                if not isinstance(node, bool) or not all(isinstance(n, str) for n in namespaces):
                    raise ValueError('expected {"node": bool, "namespaces": [str, ...]}')
                self._reply(200, set_audit(self.server.view, node, list(namespaces)))
            else:
                self._reply(404, {"error": f"no route POST {url.path}"})
        except _Unsupported as e:
            self._reply(501, {"error": str(e)})
        except (ValueError, TypeError, AttributeError) as e:
            self._reply(400, {"error": f"bad request body: {e}"})
        except Exception as e:
            self._reply(500, {"error": f"{type(e).__name__}: {e}"})


class _BadRequest(Exception):
    pass


class _Unsupported(Exception):
    pass


class APIServer:
    """Serves an :class:`AgentView` on a unix socket in a background thread."""

    def __init__(self, path: Path, view: AgentView) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            _remove_stale_socket(path)
        old_umask = os.umask(0o177)  # the socket is created 0600: no window with wider access
        try:
            self._server = _Server(str(path), _Handler)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._server.view = view
        self._thread = threading.Thread(target=self._server.serve_forever, name="cilia-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class SocketInUseError(RuntimeError):
    """Another agent is already serving on the socket."""


def _remove_stale_socket(path: Path) -> None:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: a leftover of a killed agent
        return
    finally:
        probe.close()
    raise SocketInUseError(f"{path}: another cilia agent is running (stop it with `cilia down`)")
