"""The agent's local REST API: JSON over HTTP/1.1 on a unix socket (mode 0600, root only).

Routes (all JSON):

* ``GET /v1/status``: readiness, pid, the store revision the agent has reconciled, counts.
* ``GET /v1/endpoints``, ``GET /v1/identities``: the endpoint table and the identities in use.
* ``GET /v1/flows?since=SEQ&limit=N``: decoded datapath events from the bounded flow ring.
* ``POST /v1/wait`` ``{"revision": N, "timeout": S}``: returns once the agent has reconciled store
  revision ``N`` (or the timeout passed), with the revision reached.
* ``GET /v1/audit``, ``POST /v1/audit`` ``{"node": bool, "namespaces": [...]}``: policy audit mode
  (node switch and audited namespaces), persisted by the agent; answers the settings in force.

The server only routes; what it serves comes from an :class:`AgentView` (the daemon). Every
request is bounded and type-checked: bodies up to :data:`MAX_BODY` (413 beyond) with a valid
``Content-Length``, JSON bodies validated by pydantic models (400 with the field), a read/idle
timeout per connection and at most :data:`MAX_CONNECTIONS` at once (503 beyond); errors are
answered, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cilia.agent.errors import AgentError
from cilia.k8s.names import namespace_errors

log = logging.getLogger(__name__)


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
    out = {"node": rec.node_audit, "namespaces": sorted(rec.audit_namespaces)}
    return out | ({"host": True} if rec.host_audit else {})


def set_audit(view: Any, node: bool, namespaces: list[str], host: bool = False) -> dict[str, Any]:
    """Apply audit settings: ``view.set_audit`` or, for the node agent, its reconciler under the
    agent's lock (the reconcile loop runs beside the API)."""
    own = getattr(view, "set_audit", None)
    if own is not None:
        return own(node, namespaces)
    rec = _reconciler(view)
    with view._lock:
        out = rec.set_audit(node, namespaces, host=host)
        host_endpoint = getattr(view, "host_endpoint", None)
        if host_endpoint is not None:  # the host endpoint's audit flag now, not at the next sync
            host_endpoint.sync()
        return out


def _reconciler(view: Any) -> Any:
    rec = getattr(view, "reconciler", None)
    if rec is None:
        raise _Unsupported("this agent has no policy audit mode")
    return rec


MAX_BODY = 8 * 1024 * 1024  # bytes of a request body; more is refused with 413 before reading it
IO_TIMEOUT = 10.0  # seconds a connection may sit idle or take to send one read's worth
MAX_CONNECTIONS = 64  # connections served at once; the next ones get 503 and are closed
MAX_FLOW_LIMIT = 100_000
_DIGITS = re.compile(r"\A[0-9]{1,12}\Z")  # ASCII only: int() would also take "1_0", " 7", "٣"


class WaitRequest(BaseModel):
    """``POST /v1/wait``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    revision: int = Field(default=0, ge=0)
    timeout: float = Field(default=10.0, ge=0, allow_inf_nan=False)


class AuditRequest(BaseModel):
    """``POST /v1/audit``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    node: bool = False
    namespaces: list[str] = Field(default_factory=list, max_length=10_000)
    host: bool = False  # the host endpoint's own audit mode (host firewall)

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, value: list[str]) -> list[str]:
        for ns in value:
            problems = namespace_errors(ns)
            if problems:
                raise ValueError(f"namespace {ns!r}: {problems[-1]}")
        return value


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    view: AgentView

    def __init__(self, path: str, handler: type[BaseHTTPRequestHandler]) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(path, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            body = b'{"error": "the agent is serving too many connections; retry"}'
            with contextlib.suppress(OSError):
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # broad: the slot is released whatever failed, then re-raised
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("API connection ended by an error: %s", sys.exc_info()[1])  # no traceback


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = IO_TIMEOUT  # applied to the connection's socket: idle keep-alive and slow senders end

    def log_message(self, format: str, *args: Any) -> None:  # the agent log has what matters
        pass

    def _reply(self, code: int, body: Any) -> None:
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _int(self, query: dict[str, list[str]], name: str, default: int, high: int) -> int:
        values = query.get(name)
        if not values:
            return default
        if len(values) > 1 or not _DIGITS.match(values[0]) or int(values[0]) > high:
            raise _BadRequest(f"query parameter {name!r} must be an integer from 0 to {high}")
        return int(values[0])

    def _body(self) -> bytes:
        """The request body, after checking its declared length (400 if unreadable, 413 if too big)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise _BadRequest("chunked request bodies are not accepted; send Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return b""
        if len(set(lengths)) != 1 or not _DIGITS.match(lengths[0].strip()):
            self.close_connection = True  # the body's end is unknown: the connection cannot go on
            raise _BadRequest(f"invalid Content-Length {lengths[0]!r}")
        length = int(lengths[0])
        if length > MAX_BODY:
            self.close_connection = True
            raise _TooLarge(f"request body of {length} bytes; at most {MAX_BODY}")
        data = self.rfile.read(length)
        if len(data) != length:
            self.close_connection = True
            raise _BadRequest(f"request body ended after {len(data)} of {length} bytes")
        return data

    def _guard(self, route: Callable[[], None]) -> None:
        try:
            route()
        except _BadRequest as e:
            self._reply(400, {"error": str(e)})
        except _TooLarge as e:
            self._reply(413, {"error": str(e)})
        except _Unsupported as e:
            self._reply(501, {"error": str(e)})
        except (TimeoutError, ConnectionError):
            self.close_connection = True
        except Exception as e:  # the agent must keep serving; the client shows the error
            log.warning("API %s %s: %s: %s", self.command, self.path, type(e).__name__, e)
            self._reply(500, {"error": f"{type(e).__name__}: {e}"})

    def do_GET(self) -> None:
        self._guard(self._get)

    def do_POST(self) -> None:
        self._guard(self._post)

    def _get(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        view = self.server.view
        if url.path == "/v1/status":
            self._reply(200, view.status())
        elif url.path == "/v1/endpoints":
            self._reply(200, view.endpoints())
        elif url.path == "/v1/identities":
            self._reply(200, view.identities())
        elif url.path == "/v1/flows":
            since = self._int(query, "since", 0, 2**63 - 1)
            limit = self._int(query, "limit", 1000, MAX_FLOW_LIMIT)
            self._reply(200, view.flows(since, limit))
        elif url.path == "/v1/audit":
            self._reply(200, audit_settings(view))
        else:
            self._reply(404, {"error": f"no route GET {url.path}"})

    def _post(self) -> None:
        url = urlparse(self.path)
        raw = self._body() or b"{}"
        if url.path == "/v1/wait":
            wait = _parse(WaitRequest, raw)
            reached = self.server.view.wait_revision(wait.revision, min(wait.timeout, 60.0))
            self._reply(200, {"revision": reached})
        elif url.path == "/v1/audit":
            audit = _parse(AuditRequest, raw)
            self._reply(200, set_audit(self.server.view, audit.node, list(audit.namespaces), audit.host))
        else:
            self._reply(404, {"error": f"no route POST {url.path}"})


_M = TypeVar("_M", bound=BaseModel)


def _parse(model: type[_M], raw: bytes) -> _M:
    """The body as ``model``: JSON (no NaN/Infinity), an object, every field of its type (a string is
    never taken for a list, a float never for an int); 400 with what is wrong otherwise."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise _BadRequest(f"bad request body: {problems}") from None


class _BadRequest(Exception):
    pass


class _TooLarge(Exception):
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


class SocketInUseError(AgentError, RuntimeError):
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
