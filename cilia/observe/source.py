"""Where ``cilia observe`` reads flows: the running agent (``GET /v1/flows``) or the flow log, of
this node or of every node of the cluster set up here (:func:`feeds_for`, merged by
:class:`cilia.observe.relay.Relay`).

The agent serves either flows of this package (:meth:`cilia.observe.flow.Flow.to_json`, once it runs
:class:`cilia.observe.pipeline.FlowPipeline`) or the records of its own flow ring
(:class:`cilia.agent.flows.Flow`); :func:`flow_from_record` reads both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cilia.agent.client import AgentAPIError, AgentClient, AgentUnavailable
from cilia.agent.cluster import member_configs
from cilia.agent.config import AgentConfig
from cilia.observe.flow import (
    L4,
    L4_NUMBERS,
    Endpoint,
    Flow,
    PolicyRef,
    TrafficDirection,
    Verdict,
    flow_from_json,
)
from cilia.observe.log import FlowLog
from cilia.observe.relay import NodeFeed, node_matches
from cilia.policy.types import DropReason, MatchType

PAGE = 1000
MATCH_BY_NAME = {m.hubble_name: m for m in MatchType}


def _ref_from_text(text: str) -> PolicyRef:
    """``CiliumNetworkPolicy default/deny egressDeny[0]`` (``RuleRef.describe``) back to a record."""
    parts = text.split(" ")
    kind, where = parts[0], parts[1] if len(parts) > 1 else ""
    ns, _, name = where.rpartition("/")
    return PolicyRef(name, ns, kind, rule=" ".join(parts[2:]))


def _legacy_endpoint(d: dict[str, Any]) -> Endpoint:
    ns, _, pod = str(d.get("pod", "")).partition("/")
    return Endpoint(0, int(d.get("identity", 0)), ns if pod else "", pod)


def flow_from_record(d: dict[str, Any]) -> Flow:
    """A flow from the agent: this package's JSON, or the agent's own flow-ring record."""
    if "traffic_direction" in d:
        return flow_from_json(d)
    direction = TrafficDirection(str(d["direction"]).upper())
    proto_name = "ICMPv4" if d.get("proto") == "ICMP" else str(d.get("proto", ""))
    proto = L4_NUMBERS.get(proto_name, 0)
    src, dst = d.get("source", {}), d.get("destination", {})
    icmp = proto in (1, 58)
    verdict = Verdict(d["verdict"])
    reason = DropReason(int(d.get("drop_reason", 0)))
    refs = tuple(_ref_from_text(r) for r in d.get("rules", ()))
    allowed = refs if reason in (DropReason.NONE, DropReason.AUTH_REQUIRED) else ()
    denied = refs if reason == DropReason.POLICY_DENY else ()
    ingress = direction is TrafficDirection.INGRESS
    return Flow(
        seq=int(d.get("seq", 0)),
        time_ns=int(float(d.get("time", 0)) * 1e9),
        verdict=verdict,
        traffic_direction=direction,
        source=_legacy_endpoint(src),
        destination=_legacy_endpoint(dst),
        ip_source=str(src.get("ip", "")),
        ip_destination=str(dst.get("ip", "")),
        l4=L4(
            proto,
            0 if icmp else int(src.get("port", 0)),
            0 if icmp else int(dst.get("port", 0)),
            int(dst.get("port", 0)) if icmp else 0,
        ),
        drop_reason=reason,
        policy_match_type=MATCH_BY_NAME.get(str(d.get("match_type", "none")), MatchType.NONE),
        ingress_allowed_by=allowed if ingress else (),
        egress_allowed_by=() if ingress else allowed,
        ingress_denied_by=denied if ingress else (),
        egress_denied_by=() if ingress else denied,
    )


class AgentFlows:
    """Flows from the agent's ring, resumable by sequence number."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.lost = 0
        self.suppressed = 0

    def read(self, since: int = 0) -> tuple[list[Flow], int]:
        """Every flow the agent still holds after ``since``; and the last sequence number."""
        out: list[Flow] = []
        while True:
            page = self.client.flows(since, PAGE)
            self.lost = int(page.get("lost", 0))
            self.suppressed = int(page.get("suppressed", 0))
            flows = [flow_from_record(r) for r in page.get("flows", [])]
            out += flows
            since = int(page.get("last_seq", since))
            if len(flows) < PAGE:
                return out, since

    def follow(
        self, since: int, poll_s: float = 0.2, stop: Callable[[], bool] = lambda: False
    ) -> Iterator[Flow]:
        while True:
            stopping = stop()
            flows, since = self.read(since)
            yield from flows
            if stopping:
                return
            time.sleep(poll_s)


def agent_source(socket_path: Path) -> AgentFlows | None:
    """The agent's flows if an agent answers on the socket, else None."""
    client = AgentClient(socket_path, timeout=5.0)
    try:
        client.flows(0, 0)
    except (AgentUnavailable, AgentAPIError):
        return None
    return AgentFlows(client)


def log_source(state_dir: Path) -> FlowLog:
    return FlowLog(state_dir)


def local_node_name(cfg: AgentConfig) -> str:
    """The name flows of a node carry: its cluster name (``node-1``), else ``cilia-node-<index>``
    (as ``cilia get pods -o wide`` names the single node)."""
    return cfg.node_name or f"cilia-node-{cfg.node_index}"


def node_feed(cfg: AgentConfig, log_only: bool = False) -> NodeFeed:
    """One node's flows: its agent while it answers, else its flow log."""
    return NodeFeed(
        local_node_name(cfg), FlowLog(cfg.state_dir), lambda: agent_source(cfg.socket_path), log_only=log_only
    )


def feeds_for(cfg: AgentConfig, log_only: bool = False, nodes: Sequence[str] = ()) -> list[NodeFeed]:
    """The feeds ``cilia observe`` reads: every node of the cluster set up here (``cilia up --nodes
    N``) whose name matches ``nodes`` (globs; all if none), else this node."""
    members = member_configs(cfg)
    if not members:
        return [node_feed(cfg, log_only)]
    return [node_feed(m, log_only) for m in members if node_matches(nodes, m.node_name)]
