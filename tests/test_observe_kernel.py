"""Flows from the kernel's own event records (root): the seed node's MapStates installed in a private
eBPF datapath, crafted packets run through it (BPF_PROG_TEST_RUN), the ring-buffer events fed to the
pipeline with the datapath's cookie table. Each flow must equal the one the crafted-event tests
build from the sim verdict (the same decode → enrich → attribute on real bytes), audit flag included."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from helpers_bpf import LO, private_datapath, run
from helpers_observe import CLIENT, ICMP, TCP, UDP, WORLD_IP, WORLD_PREFIX, A, B, Node, seed_node
from helpers_packets import frame

from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.observe.flow import Flow, Verdict
from cilia.observe.pipeline import FlowPipeline
from cilia.policy.types import Direction, DropReason

pytestmark = pytest.mark.root

E, IN = Direction.EGRESS, Direction.INGRESS
SPORT = 40000
CASES = [
    (A, B, TCP, 80, E),
    (CLIENT, B, TCP, 80, E),
    (CLIENT, B, TCP, 80, IN),
    (WORLD_IP, B, TCP, 80, IN),
    (CLIENT, WORLD_IP, UDP, 53, E),
    (CLIENT, A, TCP, 8080, E),
    (A, CLIENT, ICMP, 8, E),
]


def kernel_flow(dp: Datapath, node: Node, pipe: FlowPipeline, case: tuple, audit: bool = False) -> Flow:
    src, dst, proto, port, direction = case
    owner = next(p for p in node.pods.values() if p.ip == (src if direction == E else dst))
    flags = EndpointFlags.enforcing() | EndpointFlags.POLICY_READY | (EndpointFlags.AUDIT if audit else 0)
    dp.endpoints.set(EndpointInfo(LO, owner.endpoint_id, owner.identity, flags))
    dp.set_policy(owner.endpoint_id, node.engine.policy(owner.identity).map_state)
    kw = {"icmp_type": port} if proto == ICMP else {"sport": SPORT, "dport": port}
    _, events = run(dp, "from_container" if direction == E else "to_container", frame(src, dst, proto, **kw))
    dp.flush_ct()  # every case is a new connection
    (ev,) = [e for e in events if e.endpoint_id == owner.endpoint_id]
    return pipe.ingest(ev)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    node = seed_node()
    with private_datapath(tmp_path_factory.mktemp("observe")) as dp:
        for p in node.pods.values():
            dp.upsert_ipcache(f"{p.ip}/32", p.identity)
        dp.upsert_ipcache(WORLD_PREFIX, node.world_id)
        yield dp, node


def comparable(f: Flow) -> Flow:
    return replace(f, seq=0, time_ns=0)


def test_kernel_events_make_the_same_flows(kernel, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dp, node = kernel
    pipe = FlowPipeline(node.view, dp.rules_for, state_dir=tmp_path)
    crafted = FlowPipeline(node.view, node.cookies.rules_for)
    for case in CASES:
        got = kernel_flow(dp, node, pipe, case)
        src, dst, proto, port, direction = case
        want = crafted.ingest(node.event(src, dst, proto, port, direction, sport=SPORT))
        assert comparable(got) == comparable(want), case
    assert [f.verdict for f in pipe.log.read()] == [  # type: ignore[union-attr]
        Verdict.DROPPED, Verdict.FORWARDED, Verdict.FORWARDED, Verdict.DROPPED, Verdict.FORWARDED,
        Verdict.DROPPED, Verdict.FORWARDED]  # fmt: skip


def test_kernel_audit_flag(kernel) -> None:  # type: ignore[no-untyped-def]
    dp, node = kernel
    pipe = FlowPipeline(node.view, dp.rules_for)
    f = kernel_flow(dp, node, pipe, (A, B, TCP, 80, E), audit=True)
    assert (f.verdict, f.drop_reason, [r.name for r in f.egress_denied_by]) == (
        Verdict.AUDIT,
        DropReason.POLICY_DENY,
        ["deny-app-a-to-app-b"],
    )
