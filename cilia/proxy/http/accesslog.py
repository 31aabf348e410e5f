"""HAProxy's access log (one raw line per request, forwarded from HAProxy's log ring over a unix
stream socket the agent owns) → :class:`HttpRecord` values.

The line format is :data:`cilia.proxy.http.config.HTTP_LOG`; the path, the host and the request's
header block are URL-encoded by HAProxy (``url_enc``; ``-`` when absent or empty), so a line always
splits into the same fields.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from cilia.proxy.errors import ProxyError

log = logging.getLogger("cilia.proxy.http")
HTTP_FIELDS = 18
TLS_FIELDS = 12
MAX_SHAPES = 4096  # request shapes remembered by the parser
READ_BYTES = 1 << 20  # one recv of the log stream
GATHER_S = 0.005  # after a read, time for the next burst to gather (flows appear ≤ 5 ms later)


class AccessLogError(ProxyError, ValueError):
    """A line that is not in cilia's access log format."""


@dataclass(slots=True)  # not frozen: made once per request, a frozen dataclass's __init__ costs 3×
class HttpRecord:
    """One HTTP request the proxy decided (and, if allowed, forwarded); treat it as a value."""

    time_ns: int
    listener: str  # ingress | egress: the listener that took the connection
    client: tuple[str, int]
    server: tuple[str, int]  # the original destination
    client_identity: int
    server_identity: int
    status: int  # the response's status code (403: refused by the proxy or by the server)
    total_ms: int  # HAProxy's Ta: request received → response sent
    response_ms: int  # HAProxy's Tr: request sent → response headers received (-1: none)
    protocol: str  # HTTP/1.1
    allowed: bool
    decided: tuple[tuple[str, bool], ...]  # the policies the proxy evaluated: (direction, allowed)
    method: str
    path: str  # with the query string, as Cilium's path rules see it
    host: str
    headers: tuple[tuple[str, str], ...]
    # the parser's id of the request's shape (all of the above but time_ns, the client's port and
    # the timers); 0: none. Equal shapes give equal flows but for those values.
    shape: int = field(default=0, compare=False)

    @property
    def latency_ns(self) -> int:
        return max(self.response_ms if self.response_ms >= 0 else self.total_ms, 0) * 1_000_000


@dataclass(slots=True)
class TlsRecord:
    """One TLS connection the proxy decided by its ClientHello's server name."""

    time_ns: int
    listener: str
    client: tuple[str, int]
    server: tuple[str, int]
    client_identity: int
    server_identity: int
    allowed: bool
    decided: tuple[tuple[str, bool], ...]
    sni: str


def _int(text: str, default: int = 0) -> int:
    try:
        return int(text)
    except ValueError:
        return default


@functools.lru_cache(maxsize=4096)
def _text(field: str) -> str:
    """A URL-encoded text field's value ("" when absent: ``-``, which no path is and no real
    host is). Paths, hosts and header blocks repeat from request to request, so decoded fields are
    cached."""
    if field == "-":
        return ""
    return unquote(field, errors="replace") if "%" in field else field


@functools.lru_cache(maxsize=4096)
def _headers(field: str) -> tuple[tuple[str, str], ...]:
    """The request's header block (``name: value`` lines, names in lower case) as (name, value)
    pairs sorted by name, the values of a repeated name joined with ``,`` (one field line)."""
    joined: dict[str, str] = {}
    for line in _text(field).split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep or not name:
            continue
        value = value.strip(" \t")
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return tuple(sorted(joined.items()))


def parse_tls_line(line: str) -> TlsRecord:
    """One TLS listener line (:data:`cilia.proxy.http.config.TLS_LOG`) → a record."""
    f = line.strip().split(" ")
    if len(f) != TLS_FIELDS or f[8] != "tls":
        raise AccessLogError(f"access log: not a TLS line: {line[:200]!r}")
    ts, cip, cport, listener, dst, dport, sid, did, _, verdict, evaluated, sni = f
    secs, _, ms = ts.partition(".")
    return TlsRecord(
        _int(secs) * 1_000_000_000 + _int(ms) * 1_000_000, listener, (cip, _int(cport)), (dst, _int(dport)),
        _int(sid), _int(did), verdict == "allow", _decided(evaluated), _text(sni),
    )  # fmt: skip


def parse_any(line: str) -> HttpRecord | TlsRecord:
    """An HTTP or a TLS listener's line → its record."""
    if line.count(" ") == TLS_FIELDS - 1:
        return parse_tls_line(line)
    return parse_line(line)


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the lines of one request shape share (everything but the time, the client's port and
    HAProxy's two timers), parsed once."""

    id: int
    server: tuple[str, int]
    client_identity: int
    server_identity: int
    status: int
    protocol: str
    allowed: bool
    decided: tuple[tuple[str, bool], ...]
    method: str
    path: str
    host: str
    headers: tuple[tuple[str, str], ...]


_SHAPES: dict[tuple[str, ...], _Shape] = {}
_SHAPE_IDS = itertools.count(1)


def _shape(key: tuple[str, ...], line: str) -> _Shape:
    _cip, _listener, dst, dport, sid, did, status, rest = key
    g = rest.split(" ")
    if len(g) != HTTP_FIELDS - 11:
        raise AccessLogError(f"access log: expected {HTTP_FIELDS} fields: {line[:200]!r}")
    proto, verdict, evaluated, method, path, host, headers = g
    shape = _Shape(
        next(_SHAPE_IDS), (dst, _int(dport)), _int(sid), _int(did), _int(status), proto, verdict == "allow",
        _decided(evaluated), method if method != "-" else "", _text(path), _text(host), _headers(headers),
    )  # fmt: skip
    if len(_SHAPES) >= MAX_SHAPES:
        _SHAPES.clear()
    _SHAPES[key] = shape
    return shape


def parse_line(line: str) -> HttpRecord:
    """One access log line → a record (:class:`AccessLogError` for a line in another format).

    A stream of requests of one shape repeats everything but the time, the client's port and the
    timers: that part is parsed once per shape, and the record's ``shape`` names it (the agent
    attributes and templates a shape once)."""
    f = line.strip().split(" ", 11)
    if len(f) != 12:
        raise AccessLogError(f"access log: {len(f)} fields, expected {HTTP_FIELDS}: {line[:200]!r}")
    ts, cip, cport, listener, dst, dport, sid, did, status, ta, tr, rest = f
    key = (cip, listener, dst, dport, sid, did, status, rest)
    shape = _SHAPES.get(key)
    if shape is None:
        shape = _shape(key, line)
    secs, _, ms = ts.partition(".")
    try:  # the common case: every number present
        time_ns = int(secs) * 1_000_000_000 + int(ms) * 1_000_000
        port, total, response = int(cport), int(ta), int(tr)
    except ValueError:  # a request HAProxy refused before the listener's rules ran
        time_ns = _int(secs) * 1_000_000_000 + _int(ms) * 1_000_000
        port, total, response = _int(cport), _int(ta, -1), _int(tr, -1)
    return HttpRecord(
        time_ns, listener, (cip, port), shape.server, shape.client_identity, shape.server_identity,
        shape.status, total, response, shape.protocol, shape.allowed, shape.decided, shape.method,
        shape.path, shape.host, shape.headers, shape.id,
    )  # fmt: skip


@functools.lru_cache(maxsize=256)
def _decided(evaluated: str) -> tuple[tuple[str, bool], ...]:
    """``egress+,ingress-`` (Lua) or ``egress+;ingress-`` (the native decision: no comma in a
    configuration word) → the policies evaluated, in order, and whether each allowed."""
    parts = evaluated.replace(";", ",").split(",")
    return tuple((p[:-1], p.endswith("+")) for p in parts if len(p) > 1 and p[-1] in "+-")


class AccessLogReader:
    """Listens on the access log socket (unix stream, 0600), to which HAProxy's log ring forwards
    its lines, and hands every parsed line to ``on_record`` (or each burst to ``on_batch``).

    The lines arrive in bulk (HAProxy's ring forwarder writes what has accumulated); after each
    read the reader waits :data:`GATHER_S` so that the next read takes a larger burst: the per-burst
    costs (a wake-up, the node view, one flow log write) are shared by more requests. HAProxy may
    reconnect (a restart, an idle timeout): every connection is read."""

    def __init__(self, path: Path, on_record: Callable[[HttpRecord | TlsRecord], None],
                 on_batch: Callable[[list[HttpRecord | TlsRecord]], None] | None = None) -> None:
        """``on_batch`` (if given) takes the records of each burst at once instead of ``on_record``."""
        self.path = path
        self.on_record = on_record
        self.on_batch = on_batch
        self.errors = 0
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old)
        self.sock.listen(8)
        self.sock.setblocking(False)  # woken by poll
        self._poll = select.poll()
        self._poll.register(self.sock, select.POLLIN)
        self._conns: dict[int, tuple[socket.socket, list[bytes]]] = {}  # fd → (connection, partial line)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cilia-http-log", daemon=True)

    def start(self) -> AccessLogReader:
        self._thread.start()
        return self

    def _read(self) -> bytes | None:
        """The whole lines that arrived since the last call (b"" after a quiet interval), None once
        the reader is closed."""
        try:
            events = self._poll.poll(200)
        except (OSError, ValueError):
            return None
        if self._stop.is_set():
            return None
        out: list[bytes] = []
        for fd, _ in events:
            if fd == self.sock.fileno():
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    conn, _ = self.sock.accept()
                    conn.setblocking(False)
                    self._conns[conn.fileno()] = (conn, [])
                    self._poll.register(conn, select.POLLIN)
                continue
            conn, partial = self._conns[fd]
            closed = False
            while True:
                try:
                    chunk = conn.recv(READ_BYTES)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    chunk = b""
                if not chunk:
                    closed = True
                    break
                head, nl, tail = chunk.rpartition(b"\n")
                if nl:
                    out += partial
                    out.append(head + nl)
                    partial.clear()
                partial.append(tail)
                if len(chunk) < READ_BYTES:
                    break
            if closed:
                self._poll.unregister(fd)
                conn.close()
                del self._conns[fd]
        return b"".join(out)

    def _loop(self) -> None:
        while not self._stop.is_set():
            data = self._read()
            if data is None:
                return
            if not data:
                continue
            records = self._parse(data)
            if records:
                try:
                    if self.on_batch is not None:
                        self.on_batch(records)
                    else:
                        for record in records:
                            self.on_record(record)
                except Exception:  # a consumer's failure must not stop the log
                    log.exception("http access log consumer")
            self._stop.wait(GATHER_S)

    def _parse(self, data: bytes) -> list[HttpRecord | TlsRecord]:
        out = []
        for line in data.decode(errors="replace").splitlines():
            if not line or line.isspace():
                continue
            try:
                out.append(parse_any(line))
            except AccessLogError:
                self.errors += 1  # HAProxy's own messages (alerts) share the socket
                log.info("haproxy: %s", line.strip()[:300])
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        for conn, _ in self._conns.values():
            conn.close()
        self._conns.clear()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
