"""Flows of several nodes as one stream, as Hubble Relay gives them: ``cilia observe`` on a cluster.

Each node is a :class:`NodeFeed`: its agent's flow ring (``GET /v1/flows``) while the agent answers,
else its durable flow log, read on from a per-node cursor. The agent's ring and its log share the
node's sequence numbers (the pipeline numbers each flow once and writes it to both), so a cursor
moves between the two without losing or repeating a flow: a node whose agent stops answering is read
from its log (and reported unavailable, as hubble relay reports unavailable nodes) and from its agent
again when it answers.

:class:`Relay` merges the feeds in time order: each node's flows put in time order (stably: the
node's own order among equal times), then the nodes' streams merged (a k-way merge). When
following, new flows wait in a sort buffer until they are ``window_ns`` old (hubble relay's sort
buffer), so a node whose poll comes later still has its flows put in their place; the last poll
drains the buffer.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from cilia.agent.client import AgentAPIError, AgentUnavailable
from cilia.observe.flow import Flow
from cilia.observe.log import FlowLog, LogCursor

DEFAULT_WINDOW_NS = 1_000_000_000  # how long a followed flow waits for other nodes' earlier ones
RETRY_AGENT_S = 2.0  # how often a node read from its log tries its agent again


class FlowReader(Protocol):
    """A node agent's flows (:class:`cilia.observe.source.AgentFlows`)."""

    lost: int
    suppressed: int

    def read(self, since: int = 0) -> tuple[list[Flow], int]: ...


class Source(StrEnum):
    AGENT = "agent"
    LOG = "log"


@dataclass(frozen=True)
class NodeState:
    """Where a node's flows came from in the last read, and why not from its agent."""

    node: str
    source: Source
    reason: str = ""

    def describe(self) -> str:
        if self.source is Source.AGENT:
            return f"node {self.node}: reading its agent"
        return f"node {self.node} unavailable ({self.reason}): reading its flow log"


class NodeFeed:
    """One node's flows after a cursor (a sequence number): from its agent, else its flow log.

    ``connect`` returns the agent's flow reader or None when no agent answers; ``log_only`` never
    asks the agent. Flows without a node name (written before nodes were named) get this node's."""

    def __init__(
        self,
        name: str,
        log: FlowLog,
        connect: Callable[[], FlowReader | None] = lambda: None,
        *,
        log_only: bool = False,
        since: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.log = log
        self._connect = connect
        self.log_only = log_only
        self.since = since
        self._clock = clock
        self._agent: FlowReader | None = None
        self._cursor: LogCursor | None = None
        self._next_try = 0.0
        self.state: NodeState | None = None
        self.lost = 0
        self.suppressed = 0

    def _reader(self) -> FlowReader | None:
        if self.log_only:
            return None
        if self._agent is None and self._clock() >= self._next_try:
            self._agent = self._connect()
            if self._agent is None:
                self._next_try = self._clock() + RETRY_AGENT_S
        return self._agent

    def read(self) -> list[Flow]:
        """The node's flows after the cursor (in its order), and the cursor moved past them."""
        agent = self._reader()
        if agent is not None:
            try:
                flows, last = agent.read(self.since)
            except (AgentUnavailable, AgentAPIError):
                self._agent, self._next_try = None, self._clock() + RETRY_AGENT_S
                return self._from_log("its agent stopped answering")
            self._cursor = None
            self.lost, self.suppressed = agent.lost, agent.suppressed
            self.state = NodeState(self.name, Source.AGENT)
            self.since = max(self.since, last)
            return self._named(flows)
        return self._from_log("the flow log was asked for" if self.log_only else "its agent does not answer")

    def _from_log(self, reason: str) -> list[Flow]:
        if self._cursor is None or self._cursor.seq != self.since:
            self._cursor = self.log.cursor(self.since)
        flows = self._cursor.poll()
        self.since = self._cursor.seq
        self.suppressed += sum(f.suppressed for f in flows)
        if self.state is None or self.state.source is not Source.LOG:  # the first reason stays
            self.state = NodeState(self.name, Source.LOG, reason)
        return self._named(flows)

    def _named(self, flows: list[Flow]) -> list[Flow]:
        return [f if f.node_name else replace(f, node_name=self.name) for f in flows]


def _order(f: Flow) -> tuple[int, str]:
    return (f.time_ns, f.node_name)


def merge(streams: Iterable[Sequence[Flow]]) -> list[Flow]:
    """A k-way merge by time of per-node streams (ties: node name, then the node's own order).
    A node's events can leave its ring a little out of time order (one ring, several CPUs): each
    stream is put in time order first, stably."""
    return list(heapq.merge(*(sorted(s, key=_order) for s in streams), key=_order))


def node_matches(patterns: Sequence[str], name: str) -> bool:
    """``--node-name`` as hubble's: a node name or a glob (``node-*``); none given matches all."""
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


class Relay:
    """Every feed's flows merged in time order (see the module docstring), read with per-node
    cursors. ``changes`` collects a line each time a node's source changes (agent ↔ flow log)."""

    def __init__(self, feeds: Sequence[NodeFeed], window_ns: int = DEFAULT_WINDOW_NS) -> None:
        self.feeds = list(feeds)
        self.window_ns = window_ns
        self._buffers: dict[str, deque[Flow]] = {f.name: deque() for f in self.feeds}
        self._reported: dict[str, NodeState] = {}
        self.changes: list[NodeState] = []

    @property
    def lost(self) -> int:
        return sum(f.lost for f in self.feeds)

    @property
    def suppressed(self) -> int:
        return sum(f.suppressed for f in self.feeds)

    def states(self) -> list[NodeState]:
        return [f.state for f in self.feeds if f.state is not None]

    def _read_all(self) -> list[list[Flow]]:
        out = []
        for feed in self.feeds:
            out.append(feed.read())
            if feed.state is not None and self._reported.get(feed.name) != feed.state:
                if feed.name in self._reported or feed.state.source is Source.LOG:
                    self.changes.append(feed.state)
                self._reported[feed.name] = feed.state
        return out

    def snapshot(self) -> list[Flow]:
        """What every node holds now, merged; the cursors move past it."""
        return merge(self._read_all())

    def poll(self, now_ns: int | None = None, final: bool = False) -> list[Flow]:
        """New flows of every node, merged, those older than the sort window (all when ``final`` or
        without a window)."""
        for feed, flows in zip(self.feeds, self._read_all(), strict=True):
            buf = self._buffers[feed.name]
            tail = [buf[-1]] if buf else []
            if any(a.time_ns > b.time_ns for a, b in itertools.pairwise([*tail, *flows])):
                flows = sorted([*buf, *flows], key=_order)
                buf.clear()
            buf.extend(flows)
        watermark = (time.time_ns() if now_ns is None else now_ns) - self.window_ns
        out: list[Flow] = []
        while True:
            heads = [(q[0].time_ns, name) for name, q in self._buffers.items() if q]
            if not heads:
                return out
            t, name = min(heads)
            if t > watermark and not final and self.window_ns > 0:
                return out
            out.append(self._buffers[name].popleft())

    def take_changes(self) -> list[NodeState]:
        out, self.changes = self.changes, []
        return out
