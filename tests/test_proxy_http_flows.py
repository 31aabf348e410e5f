"""HTTP proxy records → Hubble's L7 HTTP flows: JSON (golden), compact text (golden), read back from
JSON, the http filters (--http-method/-path/-status/-url, --protocol http) and Hubble's http metrics."""

from __future__ import annotations

import json

import pytest

from cilia.identity.labels import Labels
from cilia.observe.enrich import LocalEndpoint, NodeView
from cilia.observe.filters import FilterError, FlowFilter
from cilia.observe.flow import Flow, flow_from_json
from cilia.observe.metrics import NodeMetrics
from cilia.observe.pipeline import FlowPipeline
from cilia.observe.render import render
from cilia.policy.types import Direction, RuleRef
from cilia.proxy.http.accesslog import HttpRecord
from tests.helpers_analyze import check_golden

A, B = "198.18.0.10", "198.18.0.11"
ALLOW = RuleRef("CiliumNetworkPolicy", "default", "l7-get", "ingress", 0)
EGRESS = RuleRef("CiliumNetworkPolicy", "default", "client-egress", "egress", 0)


def record(method: str, path: str, status: int, allowed: bool, t: int, **kw: object) -> HttpRecord:
    base: dict[str, object] = dict(
        time_ns=1_795_000_001_000_000_000 + t * 1_000_000, listener="ingress", client=(A, 40000 + t),
        server=(B, 80), client_identity=1234, server_identity=5678, status=status, total_ms=3,
        response_ms=2 if allowed else -1, protocol="HTTP/1.1", allowed=allowed,
        decided=(("ingress", allowed),), method=method, path=path, host="app-b",
        headers=(("host", "app-b"), ("user-agent", "curl/7.88.1")),
    )  # fmt: skip
    base.update(kw)
    return HttpRecord(**base)  # type: ignore[arg-type]


def flows() -> tuple[list[Flow], NodeMetrics]:
    view = NodeView(
        endpoints={
            A: LocalEndpoint(3, 1234, "default", "app-a-1", A),
            B: LocalEndpoint(4, 5678, "default", "app-b-1", B),
        },
        identities={1234: Labels.parse(["k8s:app=app-a"]), 5678: Labels.parse(["k8s:app=app-b"])},
        node_name="node-1",
    )  # fmt: skip
    metrics = NodeMetrics()
    p = FlowPipeline(lambda: view, clock_offset_ns=0, metrics=metrics)
    out = [
        p.ingest_http(record("GET", "/public", 200, True, 1), Direction.INGRESS, True, {ALLOW}),
        p.ingest_http(record("POST", "/public", 403, False, 2), Direction.INGRESS, False, (), {ALLOW}),
        p.ingest_http(record("GET", "/private?x=1", 403, False, 3), Direction.INGRESS, False, (), {ALLOW}),
        p.ingest_http(record("GET", "/api", 503, True, 4, listener="egress"), Direction.EGRESS, True,
                      {EGRESS}),
    ]
    return out, metrics


def test_http_flows_json_and_text_golden() -> None:
    out, _ = flows()
    check_golden("observe", "http.jsonl", render(out, "json"))
    check_golden("observe", "http.compact.txt", render(out, "compact"))
    for f in out:
        assert flow_from_json(json.loads(json.dumps(f.to_json()))) == f


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        ({"http_methods": ["get"]}, [1, 3, 4]),
        ({"http_methods": ["POST"]}, [2]),
        ({"http_statuses": ["403"]}, [2, 3]),
        ({"http_statuses": ["5+"]}, [4]),
        ({"http_statuses": ["20+"]}, [1]),
        ({"http_paths": ["^/pub"]}, [1, 2]),
        ({"http_paths": ["x=1$"]}, [3]),
        ({"http_urls": ["^http://app-b/api"]}, [4]),
        ({"http_methods": ["GET"], "http_statuses": ["403"]}, [3]),
        ({"protocols": ["http"]}, [1, 2, 3, 4]),
        ({"protocols": ["dns"]}, []),
        ({"verdicts": ["DROPPED"], "types": ["l7"]}, [2, 3]),
    ],
)
def test_http_filters(args: dict[str, list[str]], expect: list[int]) -> None:
    out, _ = flows()
    flt = FlowFilter.build(**args)  # type: ignore[arg-type]
    assert [f.seq for f in flt.apply(out)] == expect


@pytest.mark.parametrize(
    "args",
    [{"http_statuses": ["abc"]}, {"http_statuses": ["4"]}, {"http_paths": ["("]}, {"http_urls": ["[x"]}],
)
def test_bad_http_filters(args: dict[str, list[str]]) -> None:
    with pytest.raises(FilterError, match="--http-"):
        FlowFilter.build(**args)  # type: ignore[arg-type]


def test_http_metrics() -> None:
    _, m = flows()
    get = {"method": "GET", "protocol": "HTTP/1.1"}
    assert m.value("hubble_http_requests_total", {**get, "reporter": "server"}) == 2
    assert m.value("hubble_http_requests_total", {**get, "reporter": "client"}) == 1
    labels = {"method": "POST", "protocol": "HTTP/1.1", "status": "403", "reporter": "server"}
    assert m.value("hubble_http_responses_total", labels) == 1
    # durations of forwarded requests only: the GET to the pod (2 ms)
    server = {"method": "GET", "reporter": "server"}
    assert m.value("hubble_http_request_duration_seconds_count", server) == 1
    assert m.value("hubble_http_request_duration_seconds_sum", server) == 0.002
    # the policy-verdict metrics do not count L7 flows
    assert m.value("hubble_flows_processed_total", {"verdict": "DROPPED", "type": "Drop"}) == 0
