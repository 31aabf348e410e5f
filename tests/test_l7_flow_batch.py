"""The agent's access-log → flow path in batches: the reader hands a burst of datagrams over at once,
the flow log writes a batch as whole lines (rotation as one by one), attributions are cached per
rules generation (a rules change is seen at once), and a batch gives the same flows as one by one."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from helpers_observe import seed_flows

from cilia.agent.l7proxy import HttpProxy
from cilia.observe.flow import Flow
from cilia.observe.log import FILE_NAME, FlowLog
from cilia.observe.pipeline import FlowPipeline
from cilia.policy.l7 import HTTPRule, L7Parser, L7PortPolicy, L7Rule
from cilia.policy.types import Direction, RuleRef
from cilia.proxy.http.accesslog import AccessLogReader, HttpRecord, parse_line

LINE = ("1796595269.057 198.18.0.11 37928 ingress 198.18.0.12 80 1001 1005 200 0 0 HTTP/1.1 allow "
        "ingress+ {m} {p} app-b host%3A%20app-b%0D%0Ax-a%3A%201%202%0D%0A%0D%0A")  # fmt: skip
REF = RuleRef("CiliumNetworkPolicy", "default", "web", "ingress", 0)


def port_policy(path: str) -> L7PortPolicy:
    rule = L7Rule(None, (HTTPRule(method="GET", path=path),), refs=frozenset({REF}))
    return L7PortPolicy(Direction.INGRESS, 6, 80, L7Parser.HTTP, 15001, (rule,))


def renumbered(n: int) -> list[Flow]:
    base = seed_flows()
    return [replace(base[i % len(base)], seq=i + 1) for i in range(n)]


def test_append_many_writes_what_append_writes_rotation_included(tmp_path: Path) -> None:
    flows = renumbered(60)
    one, many = FlowLog(tmp_path / "one", max_bytes=4000, files=3), FlowLog(tmp_path / "many", 4000, 3)
    for f in flows:
        one.append(f)
    for i in range(0, 60, 7):
        many.append_many(flows[i : i + 7])
    for name in (FILE_NAME, f"{FILE_NAME}.1", f"{FILE_NAME}.2"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes()
    assert all(p.stat().st_size <= 4000 for p in (tmp_path / "many").iterdir())


class Agent:
    def __init__(self, sink: Any) -> None:
        self.flow_sink = sink


def proxy(sink: Any, path: str) -> HttpProxy:
    hp = HttpProxy.__new__(HttpProxy)
    hp.agent, hp.policies, hp._generation, hp._decisions = Agent(sink), {}, 0, {}
    set_policies(hp, path)
    return hp


def set_policies(hp: HttpProxy, path: str) -> None:
    """What HttpProxy._compute does with new port policies (without a reconciler)."""
    by_key = {("ingress", "198.18.0.12"): [port_policy(path)]}
    if by_key != hp.policies:
        hp._generation += 1
        hp._decisions = {}
    hp.policies = by_key


def test_a_batch_gives_the_flows_of_one_by_one_and_the_cache_follows_rules(tmp_path: Path) -> None:
    records = [parse_line(LINE.format(m=m, p=p)) for m, p in
               [("GET", "/a"), ("GET", "/a"), ("POST", "/a"), ("GET", "/b"), ("GET", "/a")]]  # fmt: skip
    single = FlowPipeline(clock_offset_ns=0)
    batch = FlowPipeline(state_dir=tmp_path, clock_offset_ns=0)
    p1, p2 = proxy(single, "/a"), proxy(batch, "/a")
    for r in records:
        p1.on_record(r)
    p2.on_batch(records)
    got1, got2 = single.ring.since(0, -1), batch.ring.since(0, -1)
    assert got1 == got2 and len(got2) == 5
    assert [bool(f.ingress_allowed_by) for f in got2] == [True, True, False, False, True]
    assert [f.seq for f in FlowLog(tmp_path).read()] == [1, 2, 3, 4, 5]
    # equal requests decided once (and each shape's attributions kept once)
    assert len([k for k in p2._decisions if k[0] != "shape"]) == 3
    set_policies(p2, "/b")  # a rules change: no stale attribution
    p2.on_batch(records[:1] + records[3:4])
    assert [bool(f.ingress_allowed_by) for f in batch.ring.since(0, -1)[-2:]] == [False, True]


def test_reader_hands_over_bursts(tmp_path: Path) -> None:
    got: list[list[HttpRecord]] = []
    done = threading.Event()

    def on_batch(rs: list[HttpRecord]) -> None:
        got.append(rs)
        if sum(map(len, got)) >= 50:
            done.set()

    path = tmp_path / "access.sock"
    reader = AccessLogReader(path, lambda r: None, on_batch)
    out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # as HAProxy's log ring forwards
    out.settimeout(5)
    try:
        out.connect(str(path))
        lines = [LINE.format(m="GET", p=f"/{i}") for i in range(50)]
        # queued before the reader runs; a line split across two writes is one line
        first = "[ALERT] not a request\n" + "\n".join(lines[:10]) + "\n" + lines[10][:30]
        out.sendall(first.encode())
        reader.start()
        out.sendall((lines[10][30:] + "\n").encode())
        for line in lines[11:]:
            out.sendall(f"{line}\n".encode())
        assert done.wait(5)
        time.sleep(0.05)
    finally:
        out.close()
        reader.close()
    assert [r.path for rs in got for r in rs] == [f"/{i}" for i in range(50)]
    # the queued burst came as one batch (lines sent while the reader waits may join it)
    assert len(got[0]) >= 10 and reader.errors == 1


def test_templated_flows_and_lines_equal_the_slow_way(tmp_path: Path) -> None:
    """Requests of one shape after the first are copies of its flow with their own seq, time,
    client port and latency, and their log lines are glued from pieces: both must be exactly what
    make_http_flow and to_json give."""
    shapes = [("GET", "/a", "1796595269.057", "37928", "0 0"),
              ("POST", "/a", "1796595270.999", "40001", "7 3"),
              ("GET", "/a", "1796595271.001", "1000", "12 12"),
              ("GET", "/b%22%5C", "1796595272.500", "65535", "2 -1")]  # fmt: skip
    lines = []
    for i in range(40):
        m, p, ts, port, times = shapes[i % len(shapes)]
        line = LINE.format(m=m, p=p).replace("1796595269.057", ts).replace("37928", str(int(port) - i % 3))
        lines.append(line.replace(" 200 0 0 ", f" 200 {times} "))
    records = [parse_line(line) for line in lines]
    pipe = FlowPipeline(state_dir=tmp_path, clock_offset_ns=0)
    hp = proxy(pipe, "/a")
    hp.on_batch(records[:7])
    hp.on_batch(records[7:])
    got = pipe.ring.since(0, -1)
    assert len(got) == 40 and len({f.l4.source_port for f in got}) > 4
    assert {f.l7.latency_ns for f in got if f.l7 is not None} >= {0, 3_000_000, 12_000_000}
    for flow, record in zip(got, records, strict=True):
        direction, allowed, by, refused = hp._attribution(record, "ingress", record.allowed)
        want = pipe._named(pipe.make_http_flow(record, direction, allowed, by, refused, flow.seq))
        assert flow == want
    written = (tmp_path / FILE_NAME).read_text().splitlines()
    assert written == [json.dumps(f.to_json(), separators=(",", ":")) for f in got]
