"""The small part of the DNS wire format (RFC 1035) the DNS proxy and the lab's DNS server need:
one question, A answers (with name compression on reading), NOERROR/NXDOMAIN/REFUSED, and the
2-byte length framing of DNS over TCP (RFC 1035 §4.2.2, RFC 7766)."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

TYPE_A = 1
CLASS_IN = 1
RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 3, 5
_HEADER = struct.Struct("!HHHHHH")
MAX_POINTERS = 16
MAX_TCP_MESSAGE = 65535
TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
              65: "HTTPS", 255: "ANY"}


def type_name(qtype: int) -> str:
    """``A``, ``AAAA`` … (``TYPE<n>`` for the others, as RFC 3597 writes unknown types)."""
    return TYPE_NAMES.get(qtype, f"TYPE{qtype}")


class DnsFormatError(ValueError):
    """A message cilia cannot read."""


@dataclass(frozen=True)
class Question:
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int


@dataclass(frozen=True)
class Message:
    id: int
    flags: int
    question: Question | None
    answers: tuple[tuple[str, str, int], ...] = ()  # (name, IPv4 address, ttl) of A records

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)


def _read_name(data: bytes, off: int) -> tuple[str, int]:
    """The name at ``off`` and the offset after it (following compression pointers)."""
    labels: list[str] = []
    end = -1
    for _ in range(MAX_POINTERS + 128):
        if off >= len(data):
            raise DnsFormatError("name runs past the message")
        n = data[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(data):
                raise DnsFormatError("truncated compression pointer")
            if end < 0:
                end = off + 2
            off = ((n & 0x3F) << 8) | data[off + 1]
            continue
        if n == 0:
            return ".".join(labels).lower(), (end if end >= 0 else off + 1)
        labels.append(data[off + 1: off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    raise DnsFormatError("too many labels or pointers in a name")


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise DnsFormatError(f"bad label in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def parse(data: bytes) -> Message:
    """The header, the first question and the A answers of a message."""
    if len(data) < _HEADER.size:
        raise DnsFormatError("shorter than a DNS header")
    mid, flags, qd, an, _ns, _ar = _HEADER.unpack_from(data)
    off = _HEADER.size
    question = None
    for i in range(qd):
        name, off = _read_name(data, off)
        if off + 4 > len(data):
            raise DnsFormatError("truncated question")
        qtype, qclass = struct.unpack_from("!HH", data, off)
        off += 4
        if i == 0:
            question = Question(name, qtype, qclass)
    answers = []
    for _ in range(an):
        name, off = _read_name(data, off)
        if off + 10 > len(data):
            raise DnsFormatError("truncated answer")
        rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, off)
        off += 10
        rdata = data[off: off + rdlen]
        off += rdlen
        if rtype == TYPE_A and rclass == CLASS_IN and len(rdata) == 4:
            answers.append((name, str(ipaddress.IPv4Address(rdata)), ttl))
    return Message(mid, flags, question, tuple(answers))


def query(mid: int, name: str, qtype: int = TYPE_A) -> bytes:
    """A recursive query for ``name``."""
    return _HEADER.pack(mid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)


def response(request: Message, addresses: list[str], rcode: int = RCODE_NOERROR, ttl: int = 60) -> bytes:
    """The answer to ``request``: A records for ``addresses`` (in order) or an error code."""
    q = request.question
    qd = b"" if q is None else encode_name(q.name) + struct.pack("!HH", q.qtype, q.qclass)
    answers = b"".join(
        struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, ttl, 4) + ipaddress.IPv4Address(a).packed
        for a in addresses
    ) if q is not None else b""
    flags = 0x8000 | (request.flags & 0x0100) | 0x0080 | (rcode & 0xF)
    count = len(addresses) if q is not None else 0
    return _HEADER.pack(request.id, flags, 1 if q else 0, count, 0, 0) + qd + answers


def frame(message: bytes) -> bytes:
    """A message as sent over TCP: its length (2 bytes, network order), then the message."""
    if len(message) > MAX_TCP_MESSAGE:
        raise DnsFormatError(f"a DNS message of {len(message)} bytes does not fit TCP framing")
    return struct.pack("!H", len(message)) + message


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_framed(sock: socket.socket) -> bytes | None:
    """The next length-framed message on a TCP connection; None when the peer closed it."""
    head = _recv_exact(sock, 2)
    if head is None:
        return None
    (length,) = struct.unpack("!H", head)
    body = _recv_exact(sock, length)
    if body is None:
        raise DnsFormatError(f"connection closed inside a {length}-byte message")
    return body
