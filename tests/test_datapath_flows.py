"""How `cilia observe` shows what the datapath decided about proxies and the lab's guard: a
connection handed to the proxy (REDIRECTED, with the rule), a redirect that found no listener
(Proxy lookup failed) and a packet to an address outside the lab (Destination outside the lab).
Golden compact / json / table output from events laid out as the kernel writes them."""

from __future__ import annotations

import dataclasses

from helpers_observe import CLIENT, EPOCH_OFFSET_NS, TCP, A, B, check_golden, raw_event, seed_node

from cilia.datapath.maps.events import decode
from cilia.observe import render
from cilia.observe.flow import Verdict
from cilia.observe.pipeline import FlowPipeline
from cilia.policy.types import Direction, DropReason


def _flows() -> list:  # type: ignore[type-arg]
    node = seed_node()
    p = FlowPipeline(node.view, node.cookies.rules_for, clock_offset_ns=EPOCH_OFFSET_NS)
    allowed = decode(node.event(CLIENT, B, TCP, 80, Direction.INGRESS))
    assert allowed.allowed
    redirected = dataclasses.replace(allowed, redirected=True, proxy_port=15001)
    b, client, a = (next(x for x in node.pods.values() if x.ip == ip) for ip in (B, CLIENT, A))
    no_listener = raw_event(ts_ns=allowed.ts_ns + 1000, ep_id=b.endpoint_id, ifindex=100 + b.endpoint_id,
                            src_identity=client.identity, dst_identity=b.identity, src=CLIENT, dst=B,
                            sport=43211, dport=80, proto=TCP, direction=int(Direction.INGRESS),
                            reason=int(DropReason.PROXY_LOOKUP_FAILED))
    outside = raw_event(ts_ns=allowed.ts_ns + 2000, ep_id=a.endpoint_id, ifindex=100 + a.endpoint_id,
                        src_identity=a.identity, dst_identity=2, src=A, dst="203.0.113.7", sport=43212,
                        dport=443, proto=TCP, direction=int(Direction.EGRESS),
                        reason=int(DropReason.OUTSIDE_LAB))
    return [p.ingest(redirected), p.ingest(no_listener), p.ingest(outside)]


def test_redirect_and_guard_flows() -> None:
    flows = _flows()
    assert [(f.verdict, f.drop_reason) for f in flows] == [
        (Verdict.REDIRECTED, DropReason.NONE),
        (Verdict.DROPPED, DropReason.PROXY_LOOKUP_FAILED),
        (Verdict.DROPPED, DropReason.OUTSIDE_LAB),
    ]
    assert flows[0].ingress_allowed_by  # the rule that sent it to the proxy
    check_golden("datapath-proxy-guard.compact.txt", render.render(flows, "compact"))
    check_golden("datapath-proxy-guard.jsonl", render.render(flows, "json"))
    check_golden("datapath-proxy-guard.table.txt", render.render(flows, "table"))
