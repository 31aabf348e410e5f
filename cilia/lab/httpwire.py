"""HTTP/1.x request heads as the pods' built-in web server reads them: strictly, as RFC 9112 says.

Anything a strict server refuses is a :class:`BadRequest` (answered 400, connection closed): a request
line that is not ``METHOD SP target SP HTTP/1.0|1.1``, header lines without a token name and a colon,
folded lines, control characters, a ``Content-Length`` that is not plain digits (``1_0``, ``+5``,
two different values), ``Transfer-Encoding`` (the server reads no chunked bodies). Whatever reaches
the access log is escaped as nginx escapes it (``\\xHH``), so ``cilia logs`` never prints a raw
control character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cilia.lab.errors import LabError

VERSIONS = ("HTTP/1.0", "HTTP/1.1")
_TOKEN = re.compile(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # RFC 9110 token
_TARGET = re.compile(r"\A[\x21-\x7e]+\Z")  # visible ASCII, no spaces or controls
_FIELD_VALUE = re.compile(r"\A[\t\x20-\x7e\x80-\xff]*\Z")  # no controls but HTAB
_DIGITS = re.compile(r"\A[0-9]{1,18}\Z")


class BadRequest(LabError, ValueError):
    """A request head a strict HTTP/1.x server refuses with 400."""


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names; a repeated field's values joined with ", "
    content_length: int

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        tokens = {t.strip() for t in conn.split(",")}
        return "close" not in tokens if self.version == "HTTP/1.1" else "keep-alive" in tokens


def parse_head(head: bytes, max_body: int) -> RequestHead:
    """The request line and header fields of ``head`` (up to and including the empty line)."""
    text = head.decode("latin-1")
    if not text.endswith("\r\n\r\n"):
        raise BadRequest("request head does not end with an empty line")
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest("request line is not METHOD SP target SP version")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise BadRequest("invalid method")
    if not _TARGET.match(target):
        raise BadRequest("invalid request target")
    if version not in VERSIONS:
        raise BadRequest(f"unsupported version {escape(version)}")
    headers: dict[str, str] = {}
    lengths: set[str] = set()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):  # also refuses obs-fold (a line starting with a space)
            raise BadRequest("invalid header line")
        value = value.strip(" \t")
        if not _FIELD_VALUE.match(value) or "\n" in value or "\r" in value:
            raise BadRequest(f"invalid value of header {name}")
        key = name.lower()
        if key == "content-length":
            lengths.update(v.strip(" \t") for v in value.split(","))
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if "transfer-encoding" in headers:
        raise BadRequest("Transfer-Encoding is not supported")
    if version == "HTTP/1.1" and "host" not in headers:
        raise BadRequest("HTTP/1.1 request without Host")
    length = 0
    if lengths:
        if len(lengths) != 1 or not _DIGITS.match(next(iter(lengths))):
            raise BadRequest("invalid Content-Length")
        length = int(next(iter(lengths)))
        if length > max_body:
            raise BadRequest("request body too large")
    return RequestHead(method, target, version, headers, length)


def escape(text: str) -> str:
    """``text`` for a log line as nginx writes it: ``"``, ``\\``, controls and non-ASCII as ``\\xHH``."""
    out = []
    for c in text:
        if 0x20 <= ord(c) < 0x7F and c not in '"\\':
            out.append(c)
        else:
            out.extend(f"\\x{b:02X}" for b in c.encode("utf-8"))
    return "".join(out)
