"""Each ``cilia observe`` filter on the seed flows (seq numbers of the flows that pass)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from helpers_observe import EPOCH_OFFSET_NS, seed_flows

from cilia.observe.filters import FilterError, FlowFilter, parse_duration_ns, parse_time_ns
from cilia.observe.flow import L4, DnsInfo, L7Type, Verdict

FLOWS = seed_flows()
T0 = FLOWS[0].time_ns


def seqs(**kw: object) -> list[int]:
    return [f.seq for f in FlowFilter.build(now_ns=T0 + 10_000_000, **kw).apply(FLOWS)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, [1, 2, 3, 4, 5, 6, 7, 8]),
        ({"verdicts": ["DROPPED"]}, [1, 4, 6, 8]),
        ({"verdicts": ["forwarded"]}, [2, 3, 5, 7]),
        ({"verdicts": ["AUDIT"]}, []),
        ({"verdicts": ["DROPPED", "FORWARDED"]}, [1, 2, 3, 4, 5, 6, 7, 8]),
        ({"from_pods": ["default/app-a"]}, [1, 7, 8]),
        ({"from_pods": ["app-a"]}, [1, 7, 8]),  # namespace defaults to default
        ({"from_pods": ["other/app-a"]}, []),
        ({"to_pods": ["default/app-b-5c8f2"]}, [1, 2, 3, 4, 8]),
        ({"pods": ["client"]}, [2, 3, 5, 6, 7]),
        ({"namespaces": ["default"]}, [1, 2, 3, 4, 5, 6, 7, 8]),
        ({"namespaces": ["kube-system"]}, []),
        ({"from_labels": ["app=client"]}, [2, 3, 5, 6]),
        ({"from_labels": ["k8s:app=client"]}, [2, 3, 5, 6]),
        ({"from_labels": ["reserved:world"]}, [4]),
        ({"to_labels": ["cidr:198.19.0.0/16"]}, [5]),
        ({"protocols": ["udp"]}, [5]),
        ({"protocols": ["ICMP"]}, [7]),
        ({"ports": ["80"]}, [1, 2, 3, 4, 8]),
        ({"ports": [43300]}, [8]),  # either side's port
        ({"since": "4ms"}, [7, 8]),  # now = first flow + 10 ms; flows are 1 ms apart
        ({"until": "5ms"}, [1, 2, 3, 4, 5, 6]),
        ({"since": "2026-11-18T11:06:41.005Z", "until": "2026-11-18T11:06:41.006000000Z"}, [5, 6]),
        ({"verdicts": ["DROPPED"], "to_pods": ["app-b"], "ports": ["80"]}, [1, 4, 8]),
    ],
)
def test_filter(kw: dict[str, object], expected: list[int]) -> None:
    assert seqs(**kw) == expected


def test_last() -> None:
    flt = FlowFilter.build(verdicts=["DROPPED"])
    assert [f.seq for f in flt.apply(FLOWS, last=2)] == [6, 8]
    assert flt.apply(FLOWS, last=0) == []


def test_times_and_durations() -> None:
    assert FLOWS[0].time_ns == EPOCH_OFFSET_NS + 1_001_000_000
    assert parse_duration_ns("1h30m") == 5400 * 10**9
    assert parse_duration_ns("250ms") == 250_000_000
    assert parse_time_ns("5m", 10**12) == 10**12 - 300 * 10**9
    assert parse_time_ns("2026-11-18T12:06:41.5+01:00", 0) == EPOCH_OFFSET_NS + 1_500_000_000


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"verdicts": ["DENIED"]}, "--verdict 'DENIED'"),
        ({"protocols": ["gre"]}, "--protocol 'gre'"),
        ({"ports": ["http"]}, "--port 'http'"),
        ({"since": "yesterday"}, "'yesterday' is neither a duration"),
        ({"from_labels": ["=x"]}, "label '=x'"),
        ({"to_pods": ["/x"]}, "empty namespace"),
        ({"types": ["trace"]}, "--type 'trace': use one of l7, drop, policy-verdict"),
    ],
)
def test_bad_values_name_the_flag(kw: dict[str, object], message: str) -> None:
    with pytest.raises(FilterError, match=message.replace("(", r"\(")):
        FlowFilter.build(**kw)  # type: ignore[arg-type]


# the seed flows plus the DNS proxy's: an answered query (9, 10) and a refused one (11)
DNS = [
    replace(FLOWS[4], seq=9, l4=L4(17, 40001, 53), l7=DnsInfo(L7Type.REQUEST, "api.example.com.")),
    replace(FLOWS[4], seq=10, l4=L4(17, 40001, 53),
            l7=DnsInfo(L7Type.RESPONSE, "api.example.com.", ips=("198.19.0.5",), ttl=60)),
    replace(FLOWS[4], seq=11, verdict=Verdict.DROPPED, l4=L4(6, 40002, 53),
            l7=DnsInfo(L7Type.RESPONSE, "evil.test.", rcode=5)),
]


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"protocols": ["dns"]}, [9, 10, 11]),
        ({"protocols": ["DNS"], "verdicts": ["DROPPED"]}, [11]),
        ({"protocols": ["icmp", "dns"]}, [7, 9, 10, 11]),
        ({"protocols": ["udp"]}, [5, 9, 10]),
        ({"types": ["l7"]}, [9, 10, 11]),
        ({"types": ["drop"]}, [1, 4, 6, 8]),
        ({"types": ["policy-verdict", "l7"], "ports": [53]}, [5, 9, 10, 11]),
    ],
)
def test_dns_flows_by_protocol_and_type(kw: dict[str, object], expected: list[int]) -> None:
    flt = FlowFilter.build(**kw)  # type: ignore[arg-type]
    assert [f.seq for f in flt.apply([*FLOWS, *DNS])] == expected
