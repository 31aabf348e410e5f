"""L7 HTTP flows of the proxy's access log at the rate the proxy serves requests.

A burst of requests from the same client to the same service differs, request by request, only in
the sequence number, the time, the client's port and the latency; everything else of its flow
(both endpoints, the verdict, the policies that decided, the URL, the headers) and of its JSON line
is the same. :class:`HttpFlowTemplates` keeps, per such request shape, the flow made once the slow
way (:meth:`cilia.observe.pipeline.FlowPipeline.make_http_flow`) and its JSON line cut around those
four fields; each further request of the shape is a copy of the flow with its own four values and
a line glued from the pieces. A template is only used after its line was checked equal to the
line ``Flow.to_json`` gives for the same flow; a shape whose check fails keeps the slow way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cilia.observe.flow import L4, Flow, HttpInfo, rfc3339

# Values no real flow holds, found (once each) in a prototype's JSON text and cut out of it.
SEQ = 918273645546372819
TIME_NS = 4102444800123456789  # 2100-01-01T00:00:00.123456789Z
SPORT = 987654123
LATENCY_NS = 876543219876
MAX_SHAPES = 4096


def dumps(flow: Flow) -> str:
    """One flow's log line (without the newline), as :class:`cilia.observe.log.FlowLog` writes it."""
    return json.dumps(flow.to_json(), separators=(",", ":"))


class _Shape:
    __slots__ = ("checked", "infos", "l4s", "parts", "proto")

    def __init__(self, proto: Flow, parts: list[str] | None) -> None:
        self.proto = proto
        self.parts = parts  # None: this shape is made the slow way
        self.checked = False
        self.infos: dict[int, HttpInfo] = {}  # latency → the l7 record with it
        self.l4s: dict[int, L4] = {}  # client port → the L4 record with it (keep-alive: few ports)


def _cut(proto: Flow) -> list[str] | None:
    """The prototype's JSON line cut around the sentinels (seq, time, client port[, latency])."""
    info = proto.l7
    if not isinstance(info, HttpInfo):
        return None
    probe = replace(
        proto,
        seq=SEQ,
        time_ns=TIME_NS,
        l4=replace(proto.l4, source_port=SPORT),
        l7=replace(info, latency_ns=LATENCY_NS if info.latency_ns else 0),
    )
    text = dumps(probe)
    marks = [str(SEQ), rfc3339(TIME_NS), str(SPORT)] + ([str(LATENCY_NS)] if info.latency_ns else [])
    parts: list[str] = []
    rest = text
    for m in marks:
        if text.count(m) != 1:
            return None
        head, found, rest = rest.partition(m)
        if not found:
            return None  # out of the expected order
        parts.append(head)
    parts.append(rest)
    return parts


class HttpFlowTemplates:
    """Per request shape, a prototype flow and its cut JSON line (see the module docstring)."""

    def __init__(self) -> None:
        self._shapes: dict[tuple[Any, ...], _Shape] = {}
        self._owner: object = None  # the node view the shapes were made with
        self._seconds: dict[int, str] = {}

    def _time(self, time_ns: int) -> str:
        secs, ns = divmod(time_ns, 1_000_000_000)
        head = self._seconds.get(secs)
        if head is None:
            if len(self._seconds) > 64:
                self._seconds.clear()
            head = self._seconds[secs] = rfc3339(secs * 1_000_000_000)[:-11]
        return f"{head}.{ns:09d}Z"

    def make(
        self, view: object, key: tuple[Any, ...], seq: int, time_ns: int, sport: int, latency_ns: int,
        make_slow: Callable[..., Flow], args: tuple[Any, ...],
    ) -> tuple[Flow, str]:  # fmt: skip
        """The flow and its log line (no newline) of one request of shape ``key`` (everything of
        the flow but the four varying values; ``make_slow(*args)`` makes the flow the slow way)."""
        if view is not self._owner:
            self._shapes.clear()
            self._owner = view
        key = (key, latency_ns != 0)  # a line has a latency field only when it is not 0
        shape = self._shapes.get(key)
        if shape is None:
            flow = make_slow(*args)
            if len(self._shapes) >= MAX_SHAPES:
                self._shapes.clear()
            self._shapes[key] = _Shape(flow, _cut(flow))
            return flow, dumps(flow)
        proto = shape.proto
        parts = shape.parts
        if parts is None:
            flow = make_slow(*args)
            return flow, dumps(flow)
        info = proto.l7
        assert isinstance(info, HttpInfo)
        got = shape.infos.get(latency_ns)
        if got is None:
            if len(shape.infos) > 256:
                shape.infos.clear()
            got = shape.infos[latency_ns] = replace(info, latency_ns=latency_ns)
        l4 = shape.l4s.get(sport)
        if l4 is None:
            if len(shape.l4s) > 1024:
                shape.l4s.clear()
            l4 = shape.l4s[sport] = L4(proto.l4.proto, sport, proto.l4.destination_port)
        flow = object.__new__(Flow)
        d = flow.__dict__
        d.update(proto.__dict__)
        d["seq"], d["time_ns"], d["l7"], d["l4"] = seq, time_ns, got, l4
        if latency_ns:
            line = (f"{parts[0]}{seq}{parts[1]}{self._time(time_ns)}{parts[2]}{sport}{parts[3]}"
                    f"{latency_ns}{parts[4]}")  # fmt: skip
        else:
            line = f"{parts[0]}{seq}{parts[1]}{self._time(time_ns)}{parts[2]}{sport}{parts[3]}"
        if not shape.checked:
            want = dumps(flow)
            if want != line:  # the template does not say what to_json says: slow way for this shape
                shape.parts = None
                return flow, want
            shape.checked = True
        return flow, line
