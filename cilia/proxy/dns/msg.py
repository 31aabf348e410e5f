"""The small part of the DNS wire format (RFC 1035) the DNS proxy and the lab's DNS server need:
the header, one question, A and CNAME answers (with name compression on reading), the error
answers, and the 2-byte length framing of DNS over TCP (RFC 1035 §4.2.2, RFC 7766).

Reading is strict and bounded, since the proxy reads what pods and servers send: labels of 1–63
bytes, names of at most 255 bytes, compression pointers only backwards (so a name cannot loop),
each name offset decoded once per message (a 64 KiB message costs time linear in its size). Names
are returned in presentation form, lower case, without the trailing dot; a byte outside
``[a-z0-9_-]`` (a dot or a non-ASCII byte inside a label) is escaped as ``\\DDD``, so a label is
never taken for two.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from cilia.proxy.errors import ProxyError

TYPE_A = 1
TYPE_CNAME = 5
TYPE_AAAA = 28
CLASS_IN = 1
OPCODE_QUERY = 0
RCODE_NOERROR, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_NOTIMP, RCODE_REFUSED = 0, 1, 2, 3, 4, 5
FLAG_QR, FLAG_RD, FLAG_RA = 0x8000, 0x0100, 0x0080
_HEADER = struct.Struct("!HHHHHH")
HEADER_SIZE = _HEADER.size
MAX_NAME = 255  # wire octets (RFC 1035 §3.1)
MAX_LABEL = 63
MAX_TCP_MESSAGE = 65535
TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
              65: "HTTPS", 255: "ANY"}
_PLAIN_LABEL = re.compile(rb"[A-Za-z0-9_-]+")


def type_name(qtype: int) -> str:
    """``A``, ``AAAA`` … (``TYPE<n>`` for the others, as RFC 3597 writes unknown types)."""
    return TYPE_NAMES.get(qtype, f"TYPE{qtype}")


class DnsFormatError(ProxyError, ValueError):
    """A message cilia cannot read."""


class Header(NamedTuple):
    id: int
    flags: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_QR)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


def header(data: bytes) -> Header:
    """The fixed 12-byte header (cheap: no name is read)."""
    if len(data) < HEADER_SIZE:
        raise DnsFormatError("shorter than a DNS header")
    return Header(*_HEADER.unpack_from(data))


@dataclass(frozen=True)
class Question:
    name: str  # presentation form, lower case, no trailing dot ("" is the root)
    qtype: int
    qclass: int
    raw: bytes = field(default=b"", compare=False, repr=False)  # as on the wire (uncompressed)


@dataclass(frozen=True)
class Message:
    id: int
    flags: int
    question: Question | None
    answers: tuple[tuple[str, str, int], ...] = ()  # (name, address, ttl) of A and AAAA records
    cnames: tuple[tuple[str, str, int], ...] = ()  # (name, target, ttl) of CNAME records

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_QR)


def _label_text(raw: bytes) -> str:
    if _PLAIN_LABEL.fullmatch(raw):
        return raw.decode("ascii").lower()
    return "".join(_BYTE_TEXT[b] for b in raw)


_BYTE_TEXT = [chr(b).lower() if _PLAIN_LABEL.fullmatch(bytes([b])) else f"\\{b:03d}" for b in range(256)]


class _Names:
    """Name reading for one message: each offset decoded once (compression makes names share
    suffixes), pointers only backwards."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.memo: dict[int, tuple[bytes, ...]] = {}  # offset -> the labels of the name there
        self.text: dict[int, tuple[str, bytes]] = {}  # offset -> (presentation, wire) of that name

    def read(self, off: int) -> tuple[str, int, bytes]:
        """The name at ``off``: its presentation form, the offset after it, its wire form."""
        labels, end, key = self._labels(off)
        got = self.text.get(key)
        if got is None:
            wire = b"".join(bytes([len(raw)]) + raw for raw in labels) + b"\0"
            got = self.text[key] = (".".join(_label_text(raw) for raw in labels), wire)
        return got[0], end, got[1]

    def _labels(self, start: int) -> tuple[tuple[bytes, ...], int, int]:
        """The labels of the name at ``start``, the offset after it, and the offset of its first
        label (where it is remembered)."""
        data = self.data
        out: list[bytes] = []
        starts: list[int] = []  # offsets of the labels read here, to remember their suffixes
        off, end, floor, size = start, -1, start, 1
        suffix: tuple[bytes, ...] = ()
        while True:
            if off in self.memo:
                suffix = self.memo[off]
                if not starts:  # nothing new read: the name is the one remembered there
                    return suffix, (end if end >= 0 else off), off
                size += sum(len(x) + 1 for x in suffix)
                break
            if off >= len(data):
                raise DnsFormatError("name runs past the message")
            n = data[off]
            if n & 0xC0 == 0xC0:
                if off + 1 >= len(data):
                    raise DnsFormatError("truncated compression pointer")
                target = ((n & 0x3F) << 8) | data[off + 1]
                if target >= floor:  # only backwards, before all this name read so far: no loops
                    raise DnsFormatError("compression pointer does not point backwards")
                if end < 0:
                    end = off + 2
                off = floor = target
                continue
            if n & 0xC0:
                raise DnsFormatError(f"unsupported label type 0x{n & 0xC0:02x}")
            if n == 0:
                off += 1
                break
            if off + 1 + n > len(data):
                raise DnsFormatError("label runs past the message")
            starts.append(off)
            out.append(data[off + 1: off + 1 + n])
            size += n + 1
            off += 1 + n
            if size > MAX_NAME:
                raise DnsFormatError("name longer than 255 bytes")
        if size > MAX_NAME:
            raise DnsFormatError("name longer than 255 bytes")
        labels = (*out, *suffix)
        for i, s in enumerate(starts):
            self.memo[s] = labels[i:]
        return labels, (end if end >= 0 else off), (starts[0] if starts else -1)


def parse_question(data: bytes, names: _Names | None = None) -> tuple[Question, int]:
    """The first question of a message (after the header) and the offset after it."""
    if len(data) < HEADER_SIZE:
        raise DnsFormatError("shorter than a DNS header")
    names = names or _Names(data)
    name, off, wire = names.read(HEADER_SIZE)
    if off + 4 > len(data):
        raise DnsFormatError("truncated question")
    qtype, qclass = struct.unpack_from("!HH", data, off)
    return Question(name, qtype, qclass, wire + data[off: off + 4]), off + 4


def parse(data: bytes) -> Message:
    """The header, the first question and the A and CNAME answers of a message."""
    h = header(data)
    names = _Names(data)
    off = HEADER_SIZE
    question = None
    for i in range(h.qdcount):
        if i == 0:
            question, off = parse_question(data, names)
            continue
        _, off, _ = names.read(off)
        if off + 4 > len(data):
            raise DnsFormatError("truncated question")
        off += 4
    answers, cnames = [], []
    for _ in range(h.ancount):
        name, off, _ = names.read(off)
        if off + 10 > len(data):
            raise DnsFormatError("truncated answer")
        rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, off)
        off += 10
        if off + rdlen > len(data):
            raise DnsFormatError("truncated record data")
        if rtype == TYPE_A and rclass == CLASS_IN and rdlen == 4:
            answers.append((name, socket.inet_ntoa(data[off: off + 4]), ttl))
        elif rtype == TYPE_AAAA and rclass == CLASS_IN and rdlen == 16:
            answers.append((name, str(ipaddress.IPv6Address(data[off: off + 16])), ttl))
        elif rtype == TYPE_CNAME and rclass == CLASS_IN:
            target, t_end, _ = names.read(off)
            if t_end > off + rdlen:
                raise DnsFormatError("CNAME target runs past its record")
            cnames.append((name, target, ttl))
        off += rdlen
    return Message(h.id, h.flags, question, tuple(answers), tuple(cnames))


def encode_name(name: str) -> bytes:
    """The wire form of a name in presentation form (``\\DDD`` and ``\\X`` escapes; "" or "." is
    the root)."""
    if name in ("", "."):
        return b"\0"
    text = name[:-1] if name.endswith(".") and not name.endswith("\\.") else name
    labels: list[bytes] = []
    label = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            digits = text[i + 1: i + 4]
            if len(digits) == 3 and digits.isascii() and digits.isdigit() and int(digits) < 256:
                label.append(int(digits))
                i += 4
                continue
            if i + 1 < len(text) and text[i + 1].isascii():
                label.append(ord(text[i + 1]))
                i += 2
                continue
            raise DnsFormatError(f"bad escape in {name!r}")
        if c == ".":
            labels.append(bytes(label))
            label = bytearray()
        elif c.isascii():
            label.append(ord(c))
        else:
            raise DnsFormatError(f"non-ASCII character in {name!r}")
        i += 1
    labels.append(bytes(label))
    out = bytearray()
    for raw in labels:
        if not 0 < len(raw) <= MAX_LABEL:
            raise DnsFormatError(f"bad label in {name!r}")
        out += bytes([len(raw)]) + raw
    out += b"\0"
    if len(out) > MAX_NAME:
        raise DnsFormatError(f"name longer than 255 bytes: {name!r}")
    return bytes(out)


def query(mid: int, name: str, qtype: int = TYPE_A) -> bytes:
    """A recursive query for ``name``."""
    return _HEADER.pack(mid, FLAG_RD, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)


def response(request: Message, addresses: list[str], rcode: int = RCODE_NOERROR, ttl: int = 60) -> bytes:
    """The answer to ``request``: A records for the IPv4 ``addresses``, AAAA records for the IPv6
    ones (in order), or an error code. The question is echoed as it came (its wire form), so any
    question that could be read can be answered."""
    q = request.question
    qd = b"" if q is None else (q.raw or encode_name(q.name) + struct.pack("!HH", q.qtype, q.qclass))
    packed = [ipaddress.ip_address(a).packed for a in addresses]
    answers = b"".join(
        struct.pack("!HHHIH", 0xC00C, TYPE_A if len(p) == 4 else TYPE_AAAA, CLASS_IN, ttl, len(p)) + p
        for p in packed
    ) if q is not None else b""
    flags = FLAG_QR | (request.flags & FLAG_RD) | FLAG_RA | (rcode & 0xF)
    count = len(addresses) if q is not None else 0
    return _HEADER.pack(request.id, flags, 1 if q else 0, count, 0, 0) + qd + answers


def error_response(h: Header, rcode: int) -> bytes:
    """An answer without a question (the query's could not be read): its ID and ``rcode``."""
    return _HEADER.pack(h.id, FLAG_QR | (h.flags & FLAG_RD) | (h.opcode << 11) | (rcode & 0xF), 0, 0, 0, 0)


def frame(message: bytes) -> bytes:
    """A message as sent over TCP: its length (2 bytes, network order), then the message."""
    if len(message) > MAX_TCP_MESSAGE:
        raise DnsFormatError(f"a DNS message of {len(message)} bytes does not fit TCP framing")
    return struct.pack("!H", len(message)) + message


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes | None:
    buf = b""
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("DNS message not received in time")
            sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_framed(sock: socket.socket, deadline: float | None = None) -> bytes | None:
    """The next length-framed message on a TCP connection; None when the peer closed it.
    ``deadline`` (``time.monotonic()``): the whole message must have arrived by then
    (:class:`TimeoutError` otherwise), however slowly its bytes trickle in."""
    head = _recv_exact(sock, 2, deadline)
    if head is None:
        return None
    (length,) = struct.unpack("!H", head)
    body = _recv_exact(sock, length, deadline)
    if body is None:
        raise DnsFormatError(f"connection closed inside a {length}-byte message")
    return body
