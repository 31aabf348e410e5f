"""The agent's REST API bounds and type-checks every request: body size (413), Content-Length syntax,
JSON bodies by model (NaN, a string for a list → 400), idle/read timeouts, at most N connections;
errors are answered, never a traceback. The server and socket are the real ones; a fixed view
stands in for the agent's data."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cilia.agent import api
from cilia.agent.api import APIServer


class View:
    def __init__(self) -> None:
        self.audit_calls: list[tuple[bool, list[str]]] = []
        self.waits: list[tuple[int, float]] = []

    def status(self) -> dict[str, Any]:
        return {"ready": True}

    def endpoints(self) -> list[dict[str, Any]]:
        return []

    def identities(self) -> list[dict[str, Any]]:
        return []

    def flows(self, since: int, limit: int) -> dict[str, Any]:
        return {"flows": [], "last_seq": since, "limit": limit}

    def wait_revision(self, revision: int, timeout: float) -> int:
        self.waits.append((revision, timeout))
        return revision

    def audit(self) -> dict[str, Any]:
        return {"node": False, "namespaces": []}

    def set_audit(self, node: bool, namespaces: list[str]) -> dict[str, Any]:
        self.audit_calls.append((node, namespaces))
        return {"node": node, "namespaces": namespaces}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[APIServer, View]]:
    """One server for the module (closing one takes up to its 0.5 s poll interval)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(api, "MAX_CONNECTIONS", 4)
        mp.setattr(api._Handler, "timeout", 0.5)
        view = View()
        srv = APIServer(tmp_path_factory.mktemp("api") / "cilia.sock", view)
        srv.start()
        try:
            yield srv, view
        finally:
            srv.close()


@pytest.fixture
def server(shared: tuple[APIServer, View]) -> tuple[APIServer, View]:
    shared[1].audit_calls.clear()
    shared[1].waits.clear()
    return shared


def connect(srv: APIServer) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(srv.path))
    return s


def exchange(srv: APIServer, raw: bytes) -> tuple[int, dict[str, Any]]:
    """Send raw bytes; the status code and JSON body of the first response."""
    with connect(srv) as s:
        with contextlib.suppress(BrokenPipeError):  # refused at once (503): the answer is waiting
            s.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        fields = dict(h.split(b": ", 1) for h in head.split(b"\r\n")[1:])
        length = int(fields[b"Content-Length"])
        while len(body) < length:
            body += s.recv(65536)
        return int(head.split()[1]), json.loads(body)


def post(srv: APIServer, path: str, body: bytes, headers: str | None = None) -> tuple[int, dict[str, Any]]:
    hdrs = headers if headers is not None else f"Content-Length: {len(body)}\r\n"
    return exchange(srv, f"POST {path} HTTP/1.1\r\nHost: x\r\n{hdrs}\r\n".encode() + body)


def test_a_huge_body_is_refused_before_it_is_read(server, capsys) -> None:  # type: ignore[no-untyped-def]
    srv, view = server
    code, body = post(srv, "/v1/wait", b"", headers=f"Content-Length: {200 * 1024 * 1024}\r\n")
    assert code == 413 and "at most" in body["error"]
    assert view.waits == []


@pytest.mark.parametrize("length", ["abc", "1_0", "-1", " 1 2", "٣", "0x10", "99999999999999999999"])
def test_a_bad_content_length_is_400(server, capsys, length: str) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    code, body = post(srv, "/v1/wait", b"{}", headers=f"Content-Length: {length}\r\n")
    assert code == 400 and "Content-Length" in body["error"]
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/v1/wait", b'{"timeout": NaN}', "timeout"),
        ("/v1/wait", b'{"timeout": Infinity}', "timeout"),
        ("/v1/wait", b'{"timeout": 1e999}', "timeout"),
        ("/v1/wait", b'{"revision": "7"}', "revision"),
        ("/v1/wait", b'{"revision": true}', "revision"),
        ("/v1/wait", b'{"revision": -1}', "revision"),
        ("/v1/wait", b'{"timeout": -5}', "timeout"),
        ("/v1/wait", b'[1, 2]', "body"),
        ("/v1/wait", b'{"revision": 1, "extra": 1}', "extra"),
        ("/v1/wait", b'{"revision": 1', "body"),
        ("/v1/wait", b'\xff\xfe', "body"),
        ("/v1/audit", b'{"node": true, "namespaces": "abc"}', "namespaces"),
        ("/v1/audit", b'{"node": 1}', "node"),
        ("/v1/audit", b'{"namespaces": [".."]}', "namespaces"),
        ("/v1/audit", b'{"namespaces": [1]}', "namespaces"),
    ],
)
def test_bodies_are_type_checked(server, capsys, route: str, body: bytes, field: str) -> None:  # type: ignore[no-untyped-def]
    srv, view = server
    t = time.monotonic()
    code, out = post(srv, route, body)
    assert code == 400 and "bad request body" in out["error"], out
    assert field in out["error"] or field == "body"
    assert time.monotonic() - t < 2  # NaN used to make the agent wait forever
    assert view.waits == [] and view.audit_calls == []
    assert "Traceback" not in capsys.readouterr().err


def test_good_bodies_still_work(server) -> None:  # type: ignore[no-untyped-def]
    srv, view = server
    assert post(srv, "/v1/wait", b'{"revision": 5, "timeout": 1}') == (200, {"revision": 5})
    assert post(srv, "/v1/wait", b'{"revision": 5, "timeout": 900.5}')[0] == 200
    assert view.waits == [(5, 1.0), (5, 60.0)]  # the timeout is capped
    assert post(srv, "/v1/audit", b'{"node": true, "namespaces": ["team-a"]}')[0] == 200
    assert view.audit_calls == [(True, ["team-a"])]
    assert post(srv, "/v1/wait", b"")[0] == 200  # no body: the defaults


@pytest.mark.parametrize(
    "query", ["since=x", "limit=٣", "limit=1_0", "limit=-1", "limit=100001", "since=1&since=2"]
)
def test_query_integers_are_checked(server, query: str) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    code, out = exchange(srv, f"GET /v1/flows?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert code == 400, out


def test_an_idle_or_half_sent_request_is_dropped(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    with connect(srv) as s:
        s.sendall(b"POST /v1/wait HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")  # never finished
        t = time.monotonic()
        assert s.recv(65536) == b""  # closed by the server at its read timeout (0.5 s here)
        assert time.monotonic() - t < 4
    with connect(srv) as s:  # idle keep-alive
        assert s.recv(65536) == b""


def test_connections_are_bounded(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(api, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(api._Handler, "timeout", 30.0)  # the held connections outlive the check
    srv = APIServer(tmp_path / "bounded.sock", View())
    srv.start()
    try:
        held = [connect(srv) for _ in range(4)]
        for s in held:  # each busy: a request whose body is still coming
            s.sendall(b"POST /v1/wait HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
        try:
            time.sleep(0.2)
            code, out = exchange(srv, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert code == 503 and "too many" in out["error"]
        finally:
            for s in held:
                s.close()
        for _ in range(50):  # the server notices the closed connections and frees their slots
            code, out = exchange(srv, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            if code == 200:
                break
            time.sleep(0.1)
        assert (code, out) == (200, {"ready": True})
    finally:
        srv.close()
