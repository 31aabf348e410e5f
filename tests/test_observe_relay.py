"""The relay (Hubble Relay for the lab cluster): per-node feeds from the agent's REST API (the real
server and client over a unix socket, serving a real flow pipeline) or the node's flow log, with a
cursor that moves between the two; the k-way merge by time; the sort window of following; and
``cilia observe`` / ``policy from-flows`` / ``audit`` on a cluster set up here (node directories as
``cilia up --nodes 3`` lays them out; agents given by their sockets), with golden output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers_observe import EPOCH_OFFSET_NS, TCP, A, B, check_golden, seed_flows, seed_node
from typer.testing import CliRunner

from cilia.agent.api import APIServer
from cilia.agent.cluster import member_configs
from cilia.agent.config import AgentConfig
from cilia.cli.main import app
from cilia.observe import render
from cilia.observe.audit import AuditSettings
from cilia.observe.flow import Flow
from cilia.observe.log import FlowLog
from cilia.observe.pipeline import FlowPipeline
from cilia.observe.relay import NodeFeed, NodeState, Relay, Source, merge, node_matches
from cilia.observe.source import agent_source, feeds_for, local_node_name
from cilia.policy.types import Direction

FLOWS = seed_flows()
NODES = ("node-0", "node-1", "node-2")


def on_node(flows: list[Flow], node: str) -> list[Flow]:
    """The flows as that node numbers and names them."""
    return [replace(f, seq=i, node_name=node) for i, f in enumerate(flows, 1)]


# the seed's flows spread over three nodes: 1,4,7 on node-0; 2,5,8 on node-1; 3,6 on node-2
SPREAD = {n: on_node(FLOWS[i::3], n) for i, n in enumerate(NODES)}
MERGED = sorted((f for fs in SPREAD.values() for f in fs), key=lambda f: f.time_ns)


class PipelineAgent:
    """The agent's REST view as far as flows go: a real flow pipeline's ring (``Agent.flows``)."""

    def __init__(self, pipe: FlowPipeline) -> None:
        self.pipe = pipe

    def status(self) -> dict[str, Any]:
        return {"ready": True}

    def endpoints(self) -> list[dict[str, Any]]:
        return []

    def identities(self) -> list[dict[str, Any]]:
        return []

    def flows(self, since: int, limit: int) -> dict[str, Any]:
        return self.pipe.snapshot(since, limit)

    def wait_revision(self, revision: int, timeout: float) -> int:
        return revision


class RingAgent(PipelineAgent):
    """An agent whose ring holds the given flows (as FlowPipeline.snapshot serves them)."""

    def __init__(self, flows: list[Flow]) -> None:
        self.flows_ = flows

    def flows(self, since: int, limit: int) -> dict[str, Any]:
        out = [f.to_json() for f in self.flows_ if f.seq > since][: max(limit, 0)]
        return {"flows": out, "last_seq": out[-1]["seq"] if out else since, "lost": 0, "suppressed": 7}


# ------------------------------------------------------------------------------- merge, node filter


def test_merge_is_by_time_across_and_within_nodes() -> None:
    assert merge(list(SPREAD.values())) == MERGED
    # a node's event that left its ring late (another CPU) still takes its place by time
    late = [replace(SPREAD["node-0"][0], time_ns=MERGED[-1].time_ns + 1), *SPREAD["node-0"][1:]]
    out = merge([late, SPREAD["node-1"]])
    assert [(f.node_name, f.seq) for f in out] == [("node-1", 1), ("node-0", 2), ("node-1", 2), ("node-0", 3),
                                                    ("node-1", 3), ("node-0", 1)]  # fmt: skip
    # same time: by node name, then the node's own order
    t = [replace(f, time_ns=0) for f in (SPREAD["node-2"][0], SPREAD["node-1"][0], SPREAD["node-1"][1])]
    assert [(f.node_name, f.seq) for f in merge([[t[0]], t[1:]])] == [("node-1", 1), ("node-1", 2),
                                                                      ("node-2", 1)]  # fmt: skip


def test_node_name_patterns_as_hubbles_flag() -> None:
    assert [node_matches(p, "node-2") for p in ((), ("node-2",), ("node-*",), ("node-1",), ("cilia-*",))] == [
        True, True, True, False, False]  # fmt: skip


# ------------------------------------------------------------------------------- feeds


def logged(directory: Path, flows: list[Flow]) -> FlowLog:
    log = FlowLog(directory)
    for f in flows:
        log.append(f)
    log.close()
    return log


@pytest.fixture
def pipeline_node(tmp_path: Path) -> Iterator[tuple[FlowPipeline, Path, list[bytes]]]:
    """A real pipeline logging under ``state`` for node-1; the seed's events to feed it."""
    node = seed_node()
    view = node.view

    def named() -> Any:
        return replace(view(), node_name="node-1")

    pipe = FlowPipeline(named, node.cookies.rules_for, state_dir=tmp_path / "state",
                        clock_offset_ns=EPOCH_OFFSET_NS)  # fmt: skip
    eg = Direction.EGRESS
    events = [node.event(A, B, TCP, 80, eg, sport=40000 + i) for i in range(6)]
    try:
        yield pipe, tmp_path, events
    finally:
        pipe.close()


def test_a_node_feed_moves_between_agent_and_log_by_sequence_number(
    pipeline_node: tuple[FlowPipeline, Path, list[bytes]],
) -> None:
    pipe, base, events = pipeline_node
    sock = base / "run" / "cilia.sock"
    now = [0.0]
    feed = NodeFeed("node-1", FlowLog(base / "state"), lambda: agent_source(sock), clock=lambda: now[0])
    server = APIServer(sock, PipelineAgent(pipe))
    server.start()
    try:
        for e in events[:2]:
            pipe.ingest(e)
        first = feed.read()
        assert ([f.seq for f in first], feed.state, feed.since) == ([1, 2], NodeState("node-1", Source.AGENT),
                                                                   2)  # fmt: skip
    finally:
        server.close()
    for e in events[2:4]:  # the agent is gone; its pipeline (a stand-in for the log it left) wrote on
        pipe.ingest(e)
    from_log = feed.read()
    assert [f.seq for f in from_log] == [3, 4]
    assert feed.state == NodeState("node-1", Source.LOG, "its agent stopped answering")
    assert feed.read() == []  # nothing new: the log cursor does not repeat a flow
    now[0] += 2.0  # time to ask the agent again
    server = APIServer(sock, PipelineAgent(pipe))
    server.start()
    try:
        for e in events[4:]:
            pipe.ingest(e)
        again = feed.read()
    finally:
        server.close()
    assert ([f.seq for f in again], feed.state.source) == ([5, 6], Source.AGENT)
    assert {f.node_name for f in first + from_log + again} == {"node-1"}
    assert [f.l4.source_port for f in first + from_log + again] == [40000 + i for i in range(6)]


def test_a_node_feed_names_unnamed_flows_and_can_read_only_the_log(tmp_path: Path) -> None:
    log = logged(tmp_path, [replace(f, node_name="") for f in FLOWS[:2]])
    feed = NodeFeed("node-2", log, lambda: pytest.fail("log_only never asks the agent"), log_only=True)
    assert [(f.seq, f.node_name) for f in feed.read()] == [(1, "node-2"), (2, "node-2")]
    assert feed.state == NodeState("node-2", Source.LOG, "the flow log was asked for")


def test_relay_reports_unavailable_nodes_once_and_when_they_come_back(tmp_path: Path) -> None:
    socks = {n: tmp_path / n / "cilia.sock" for n in NODES}
    feeds = [NodeFeed(n, logged(tmp_path / n, SPREAD[n]), lambda s=socks[n]: agent_source(s),
                      clock=lambda: 1e9) for n in NODES]  # fmt: skip
    server = APIServer(socks["node-1"], RingAgent(SPREAD["node-1"]))
    server.start()
    try:
        relay = Relay(feeds)
        assert relay.snapshot() == MERGED
        assert [s.describe() for s in relay.take_changes()] == [
            "node node-0 unavailable (its agent does not answer): reading its flow log",
            "node node-2 unavailable (its agent does not answer): reading its flow log",
        ]
        assert (relay.suppressed, relay.poll(final=True), relay.take_changes()) == (7, [], [])
    finally:
        server.close()
    feeds[1]._next_try = 0  # retry the agent now
    relay.poll(final=True)
    assert [s.describe() for s in relay.take_changes()] == [
        "node node-1 unavailable (its agent stopped answering): reading its flow log"
    ]
    assert [s.source for s in relay.states()] == [Source.LOG] * 3


def test_following_waits_a_sort_window_for_other_nodes(tmp_path: Path) -> None:
    logs = {n: FlowLog(tmp_path / n) for n in NODES[:2]}
    relay = Relay([NodeFeed(n, logs[n], log_only=True) for n in NODES[:2]], window_ns=1_000)
    assert relay.snapshot() == []
    f0, f1 = SPREAD["node-0"][0], SPREAD["node-1"][0]  # f0 is older
    logs["node-1"].append(f1)
    assert relay.poll(now_ns=f1.time_ns + 500) == []  # still in the window: node-0 may have older ones
    logs["node-0"].append(f0)  # node-0's older flow comes in late
    assert relay.poll(now_ns=f1.time_ns + 500) == [f0]
    assert relay.poll(now_ns=f1.time_ns + 1_000) == [f1]
    f2, f3 = SPREAD["node-0"][1], SPREAD["node-0"][2]
    logs["node-0"].append(f3)
    assert relay.poll(now_ns=f3.time_ns - 2_000) == []
    logs["node-0"].append(f2)  # older than f3, but later in the log
    assert relay.poll(now_ns=0, final=True) == [f2, f3]  # in time order; the last poll drains all


# ------------------------------------------------------------------------------- the CLI on a cluster


def cli(base: Path, *args: str, code: int = 0) -> tuple[str, str]:
    full = [*args, "--state-dir", str(base / "state"), "--run-dir", str(base / "run")]
    res = CliRunner().invoke(app, full)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == code, f"cilia {' '.join(args)} -> {res.exit_code}\n{res.stdout}\n{res.stderr}"
    return res.stdout, res.stderr


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Path]:
    """A cluster set up here (settings as ``cilia up --nodes 3`` saves them): node-0 and node-2 have
    only their flow logs, node-1's agent answers (its ring holds the same flows as its log)."""
    base = AgentConfig.resolve(tmp_path / "state", tmp_path / "run", store="etcd",
                               etcd_endpoints="198.18.254.254:2379", cluster_size=3)  # fmt: skip
    base.save()
    members = member_configs(base)
    assert [m.node_name for m in members] == list(NODES)
    for m in members:
        logged(m.state_dir, SPREAD[m.node_name])
    server = APIServer(members[1].socket_path, RingAgent(SPREAD["node-1"]))
    server.start()
    try:
        yield tmp_path
    finally:
        server.close()


def test_observe_fans_in_every_node_in_time_order(cluster: Path) -> None:
    out, err = cli(cluster, "observe", "-o", "json")
    assert [json.loads(line) for line in out.splitlines()] == [f.to_json() for f in MERGED]
    assert "node node-0 unavailable (its agent does not answer): reading its flow log" in err
    assert "node node-2 unavailable" in err and "node node-1" not in err
    out, _ = cli(cluster, "observe", "--print-node-name")
    check_golden("cluster.nodes.compact.txt", out)
    assert out == render.render(MERGED, "compact", node_names=True)
    out, _ = cli(cluster, "observe", "--print-node-name", "-o", "table")
    check_golden("cluster.nodes.table.txt", out)
    out, _ = cli(cluster, "observe")  # without the flag: hubble's compact lines, no node names
    assert out == render.render(MERGED, "compact")


def test_observe_node_name_filter_and_last(cluster: Path) -> None:
    out, err = cli(cluster, "observe", "--node-name", "node-2", "-o", "json")
    assert [json.loads(line) for line in out.splitlines()] == [f.to_json() for f in SPREAD["node-2"]]
    assert "node-0" not in err  # only node-2 was read
    out, _ = cli(cluster, "observe", "--node-name", "node-[01]", "--verdict", "DROPPED", "--last", "2",
                 "-o", "json")  # fmt: skip
    want = [f for f in MERGED if f.node_name in ("node-0", "node-1") and f.dropped][-2:]
    assert [json.loads(line) for line in out.splitlines()] == [f.to_json() for f in want]
    out, err = cli(cluster, "observe", "--node-name", "node-7")
    assert (out, "no flows matched (0 flows in no node matches --node-name node-7)" in err) == ("", True)
    _, err = cli(cluster, "observe", "--namespace", "kube-system")
    assert "no flows matched (8 flows in 3 nodes)" in err


def test_observe_from_log_reads_every_nodes_log(cluster: Path) -> None:
    out, err = cli(cluster, "observe", "--from-log", "-o", "json")
    assert [json.loads(line) for line in out.splitlines()] == [f.to_json() for f in MERGED]
    assert "unavailable" not in err  # asked for: no node is reported


def test_follow_on_a_cluster_prints_new_flows_of_every_node(cluster: Path) -> None:
    import threading
    import time

    log0 = FlowLog(cluster / "state" / "nodes" / "node-0")
    log2 = FlowLog(cluster / "state" / "nodes" / "node-2")
    t_end = MERGED[-1].time_ns
    newer = [replace(SPREAD["node-2"][0], seq=3, time_ns=t_end + 2), replace(SPREAD["node-0"][0], seq=4,
                                                                             time_ns=t_end + 1)]  # fmt: skip

    def writer() -> None:
        time.sleep(1.0)
        log2.append(newer[0])
        log0.append(newer[1])

    th = threading.Thread(target=writer)
    th.start()
    out, _ = cli(cluster, "observe", "-f", "--follow-for", "2.5", "--last", "1", "-o", "json")
    th.join()
    # the snapshot's newest, then the two new ones in time order (node-0's is older)
    assert [(json.loads(line)["node_name"], json.loads(line)["seq"]) for line in out.splitlines()] == [
        ("node-1", 3), ("node-0", 4), ("node-2", 3)]  # fmt: skip


def test_policy_from_flows_reads_every_nodes_log(cluster: Path, tmp_path: Path) -> None:
    whole = tmp_path / "single"
    logged(whole / "state", FLOWS)
    from_cluster, _ = cli(cluster, "policy", "from-flows")
    single, _ = cli(whole, "policy", "from-flows")
    assert from_cluster == single  # the same flows, spread over three nodes' logs
    check_golden("from-flows.yaml", from_cluster)


def test_feeds_of_a_single_node_and_of_a_cluster(tmp_path: Path) -> None:
    single = AgentConfig.resolve(tmp_path / "s", tmp_path / "r", node_index=3)
    assert [f.name for f in feeds_for(single)] == ["cilia-node-3"] == [local_node_name(single)]
    base = replace(single, store="etcd", etcd_endpoints="198.18.254.254:2379", cluster_size=3)
    assert [f.name for f in feeds_for(base, nodes=("node-1", "node-2"))] == ["node-1", "node-2"]
    assert [f.log.directory for f in feeds_for(base)] == [tmp_path / "s" / "nodes" / n for n in NODES]


# ------------------------------------------------------------------------------- audit on a cluster


class AuditAgent(RingAgent):
    """An agent that keeps audit settings as the node agent does (``POST /v1/audit``)."""

    def __init__(self) -> None:
        super().__init__([])
        self.settings: dict[str, Any] = {"node": False, "namespaces": []}

    def audit(self) -> dict[str, Any]:
        return self.settings

    def set_audit(self, node: bool, namespaces: list[str]) -> dict[str, Any]:
        self.settings = {"node": node, "namespaces": sorted(namespaces)}
        return self.settings


def test_audit_applies_to_every_node_or_the_ones_named(tmp_path: Path) -> None:
    base = AgentConfig.resolve(tmp_path / "state", tmp_path / "run", store="etcd",
                               etcd_endpoints="198.18.254.254:2379", cluster_size=3)  # fmt: skip
    base.save()
    members = member_configs(base)
    agents = {m.node_name: AuditAgent() for m in members[:2]}  # node-2's agent is down
    servers = [APIServer(m.socket_path, agents[m.node_name]) for m in members[:2]]
    for s in servers:
        s.start()
    try:
        out, err = cli(tmp_path, "audit", "on", "--node", "node-1")
        assert out == ("node-1: policy audit mode: node on\n")
        assert (agents["node-0"].settings["node"], agents["node-1"].settings["node"]) == (False, True)
        out, err = cli(tmp_path, "audit", "on", "-n", "staging")
        assert out == ("node-0: policy audit mode: node off; namespaces: staging\n"
                       "node-1: policy audit mode: node on; namespaces: staging\n"
                       "node-2: policy audit mode: node off; namespaces: staging\n")  # fmt: skip
        assert "no agent is running on node-2" in err
        assert AuditSettings.load(members[2].state_dir) == AuditSettings(False, frozenset({"staging"}))
        out, _ = cli(tmp_path, "audit", "status", "-o", "json")
        assert json.loads(out) == {"nodes": {
            "node-0": {"node": False, "namespaces": ["staging"], "applied_by_agent": True},
            "node-1": {"node": True, "namespaces": ["staging"], "applied_by_agent": True},
            "node-2": {"node": False, "namespaces": ["staging"], "applied_by_agent": False}}}  # fmt: skip
        _, err = cli(tmp_path, "audit", "on", "-n", "dev", "--node", "node-0", code=2)
        assert "namespace audit (-n) applies to every node" in err
        _, err = cli(tmp_path, "audit", "on", "--node", "node-9", code=2)
        assert "no node node-9 in this cluster (node-0, node-1, node-2)" in err
    finally:
        for s in servers:
            s.close()
    _, err = cli(tmp_path / "single", "audit", "on", "--node", "node-1", code=2)
    assert "--node needs a cluster" in err
