"""Fuzzing the DNS codec and the DNS proxy's handling of queries and answers (hypothesis, bounded:
a few seconds in all). Whatever the bytes: the codec raises only DnsFormatError, names read back
as they were written, the proxy answers with the query's ID or drops, forwards only what the
rules allow, and learns only under the name it checked, only addresses the answer holds."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cilia.identity.fqdn import name_matches
from cilia.proxy.dns import msg
from cilia.proxy.dns.proxy import DnsProxy
from cilia.proxy.records import DnsRecord

FUZZ = settings(max_examples=150, deadline=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
RULES = ("*.example.com", "api.example.org")
OK_RCODES = {msg.RCODE_FORMERR, msg.RCODE_NOTIMP, msg.RCODE_REFUSED}


class Host:
    def __init__(self) -> None:
        self.learned: list[tuple[str, dict[str, int]]] = []

    def dns_rules(self, ip: str) -> tuple[str, ...]:
        return RULES

    def learn(self, name: str, addresses: Mapping[str, int]) -> None:
        self.learned.append((name, dict(addresses)))

    def identity_of(self, ip: str) -> int:
        return 2

    def report(self, record: DnsRecord) -> None:
        pass


@pytest.fixture(scope="module")
def proxy() -> Iterator[DnsProxy]:
    p = DnsProxy(("127.0.0.1", 0), Host(), lambda *a: ("127.0.0.1", 53))
    yield p
    p.close()


labels = st.binary(min_size=1, max_size=63)
wire_names = st.lists(labels, min_size=0, max_size=6).map(
    lambda ls: b"".join(bytes([len(x)]) + x for x in ls) + b"\0").filter(lambda w: len(w) <= 255)


def _query(name_wire: bytes, mid: int = 7, qd: int = 1, flags: int = 0x0100) -> bytes:
    return struct.pack("!HHHHHH", mid, flags, qd, 0, 0, 0) + name_wire + struct.pack("!HH", 1, 1)


@FUZZ
@given(st.binary(max_size=600))
def test_parse_raises_only_format_errors(data: bytes) -> None:
    with contextlib.suppress(msg.DnsFormatError):
        msg.parse(data)


@FUZZ
@given(wire_names)
def test_names_read_back_as_written(wire: bytes) -> None:
    """Any name on the wire reads as a presentation name that encodes back to the same wire form
    (letters lower-cased), so no label is split or merged."""
    q, _ = msg.parse_question(_query(wire))
    assert msg.encode_name(q.name) == wire.lower()
    assert q.raw[:-4] == wire  # echoed in answers as it came


def _response(qname: str, body: bytes, an: int) -> bytes:
    return (struct.pack("!HHHHHH", 7, 0x8180, 1, an, 0, 0) + msg.encode_name(qname)
            + struct.pack("!HH", 1, 1) + body)


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 20))
def test_parse_of_a_damaged_answer(body: bytes, an: int) -> None:
    try:
        m = msg.parse(_response("api.example.com", body, an))
    except msg.DnsFormatError:
        return
    assert len(m.answers) + len(m.cnames) <= an


@FUZZ
@given(st.binary(max_size=700), st.sampled_from([socket.IPPROTO_UDP, socket.IPPROTO_TCP]))
def test_handle_never_raises_on_any_query(proxy: DnsProxy, data: bytes, proto: int) -> None:
    forwarded: list[bytes] = []

    def forward(q: bytes, server: tuple[str, int], is_reply: Any) -> bytes | None:
        forwarded.append(q)
        return None

    out = proxy.handle(data, ("127.0.0.2", 5353), proto, forward)
    if out is not None:
        h = msg.header(out)
        assert h.id == msg.header(data).id and h.rcode in OK_RCODES
    for q in forwarded:
        name = msg.parse_question(q)[0].name
        assert any(name_matches(name, p) for p in RULES)


@FUZZ
@given(wire_names, st.integers(0, 0xFFFF))
def test_handle_decides_every_name(proxy: DnsProxy, wire: bytes, flags: int) -> None:
    """A query with any name and header flags: forwarded exactly when the rules allow its name."""
    data = _query(wire, flags=flags)
    forwarded: list[bytes] = []
    out = proxy.handle(data, ("127.0.0.2", 5353), socket.IPPROTO_UDP,
                       lambda q, s, r: forwarded.append(q) or None)
    if flags & msg.FLAG_QR:
        assert out is None and not forwarded
        return
    name = msg.parse_question(data)[0].name
    if (flags >> 11) & 0xF == msg.OPCODE_QUERY and any(name_matches(name, p) for p in RULES):
        assert forwarded == [data] and out is None
    else:
        assert not forwarded and out is not None and msg.header(out).rcode in OK_RCODES


OWNERS = ["api.example.com", "edge.cdn.test", "evil.test", "x.api.example.com"]
records = st.lists(st.tuples(st.sampled_from(OWNERS),
                             st.sampled_from(["a", "cname", "junk"]),
                             st.sampled_from(["edge.cdn.test", "evil.test", "api.example.com", "198.19.0.5",
                                              "198.19.0.66"]),
                             st.integers(0, 2**32 - 1)), max_size=8)


def _rr(owner: str, kind: str, value: str, ttl: int) -> bytes:
    if kind == "a":
        ip = value if value[0].isdigit() else "198.19.0.9"
        return msg.encode_name(owner) + struct.pack("!HHIH", 1, 1, ttl, 4) + socket.inet_aton(ip)
    if kind == "cname":
        t = msg.encode_name(value if not value[0].isdigit() else "evil.test")
        return msg.encode_name(owner) + struct.pack("!HHIH", 5, 1, ttl, len(t)) + t
    return msg.encode_name(owner) + struct.pack("!HHIH", 16, 1, ttl, 3) + b"\x02hi"


@FUZZ
@given(records, st.binary(max_size=40), st.integers(0, 15))
def test_learns_only_the_checked_name_from_any_answer(proxy: DnsProxy, recs: list[Any], tail: bytes,
                                                      rcode: int) -> None:
    host = proxy.host
    assert isinstance(host, Host)
    host.learned.clear()
    body = b"".join(_rr(*r) for r in recs)
    answer = bytearray(_response("api.example.com", body + tail, len(recs)))
    answer[3] = (answer[3] & 0xF0) | rcode
    query = msg.query(7, "API.example.com")
    out = proxy.handle(query, ("127.0.0.2", 5353), socket.IPPROTO_UDP,
                       lambda q, s, is_reply: bytes(answer) if is_reply(bytes(answer)) else None)
    assert out == bytes(answer)
    in_answer = {v for _, k, v, _ in recs if k == "a"} | {"198.19.0.9"}
    for name, addrs in host.learned:
        assert name == "api.example.com"
        assert set(addrs) <= in_answer
    if rcode:
        assert host.learned == []
