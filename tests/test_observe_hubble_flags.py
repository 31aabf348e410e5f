"""hubble's filter flags on ``cilia observe`` (``--ip``, ``--identity``, ``--traffic-direction``,
``--drop-reason-desc``, ``--tcp-flags``, ``--not``, ``--first``) and its ``-o dict`` / ``-o jsonpb``
outputs, through the real CLI on a flow log (golden files in tests/golden/observe)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_observe import check_golden, seed_flows
from typer.testing import CliRunner

from cilia.cli.main import app
from cilia.observe import render
from cilia.observe.filters import FilterError, FilterSet, FlowFilter
from cilia.observe.log import FlowLog

FLOWS = seed_flows()
# seq: 1 a→b deny (egress), 2/3 client→b SYN (egress/ingress), 4 world→b default deny (ingress),
# 5 client→world 53, 6 client→a default deny, 7 a→client ICMP, 8 a→b deny
A, B, CLIENT, WORLD = "198.18.0.10", "198.18.0.20", "198.18.0.30", "198.19.0.1"


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("observe-hubble")
    log = FlowLog(base / "state")
    for f in FLOWS:
        log.append(f)
    log.close()
    return base


def observe(base: Path, *args: str, code: int = 0) -> str:
    res = CliRunner().invoke(app, ["observe", *args, "--state-dir", str(base / "state"),
                                   "--run-dir", str(base / "run"), "--from-log"])
    assert res.exit_code == code, res.output
    return res.stdout if code == 0 else res.stderr


def seqs(base: Path, *args: str) -> list[int]:
    return [json.loads(line)["seq"] for line in observe(base, *args, "-o", "json").splitlines()]


@pytest.mark.parametrize("args, want", [
    (("--ip", WORLD), [4, 5]),
    (("--from-ip", CLIENT), [2, 3, 5, 6]),
    (("--to-ip", "198.19.0.0/16"), [5]),  # a CIDR
    (("--from-ip", A, "--from-ip", CLIENT), [1, 2, 3, 5, 6, 7, 8]),  # one flag's values: OR
    (("--from-ip", CLIENT, "--to-ip", B), [2, 3]),  # different flags: AND
    (("--identity", "world"), []),  # the world peer here has a CIDR identity, not reserved:world
    (("--identity", "16777217"), [4, 5]),
    (("--from-identity", "256"), [1, 7, 8]),
    (("--to-identity", "257", "--traffic-direction", "ingress"), [3, 4]),
    (("--traffic-direction", "EGRESS", "--verdict", "DROPPED"), [1, 6, 8]),
    (("--drop-reason-desc", "POLICY_DENIED"), [4, 6]),
    (("--drop-reason-desc", "policy_deny", "--drop-reason-desc", "POLICY_DENIED"), [1, 4, 6, 8]),
    (("--tcp-flags", "SYN"), [2, 3]),
    (("--tcp-flags", "SYN,ACK"), []),  # every flag of one value must be set
    (("--not", "--verdict", "DROPPED"), [2, 3, 5, 7]),
    (("--to-ip", B, "--not", "--from-ip", A), [2, 3, 4]),
    # --not applies to the next flag only; the negated flags make one filter (AND), as in hubble
    (("--not", "--from-ip", A, "--not", "--verdict", "DROPPED"), [2, 3, 4, 5, 6, 7]),
    (("--not", "--ip", WORLD, "--first", "2"), [1, 2]),
    (("--verdict", "DROPPED", "--first", "3"), [1, 4, 6]),
    (("--verdict=DROPPED", "--not", "--to-identity=257"), [6]),
    (("--to-fqdn", "*.example.com"), []),  # the seed's flows carry no learned names
    (("--verdict", "DROPPED", "--not", "--fqdn", "api.example.com"), [1, 4, 6, 8]),
])
def test_filters_combine_as_hubble(logged: Path, args: tuple[str, ...], want: list[int]) -> None:
    assert seqs(logged, *args) == want


@pytest.mark.parametrize("args, words", [
    (("--not", "--not", "--verdict", "DROPPED"), "consecutive --not"),
    (("--not",), "--not must come right before a filter flag, not --state-dir"),
    (("--not", "-o", "json"), "--not must come right before a filter flag"),
    (("--ip", "web"), "expected an IP address or a CIDR"),
    (("--identity", "nobody"), "expected a numeric identity or one of"),
    (("--traffic-direction", "up"), "expected ingress or egress"),
    (("--drop-reason-desc", "LOST"), "expected one of POLICY_DENIED"),
    (("--tcp-flags", "SYN,XMAS"), "unknown flag XMAS"),
    (("--first", "2", "--last", "2"), "--first cannot be combined"),
])
def test_bad_filters_are_clean_errors(logged: Path, args: tuple[str, ...], words: str) -> None:
    assert words in observe(logged, *args, code=2)


def test_dict_and_jsonpb_outputs(logged: Path) -> None:
    out = observe(logged, "-o", "dict")
    assert out == render.render(FLOWS, "dict")
    check_golden("seed.dict.txt", out)
    out = observe(logged, "-o", "jsonpb", "--verdict", "DROPPED")
    check_golden("dropped.jsonpb", out)
    first = json.loads(out.splitlines()[0])
    assert sorted(first) == ["flow", "node_name", "time"] and first["flow"]["seq"] == 1
    assert first["time"] == first["flow"]["time"]


def test_filter_set_in_process() -> None:
    keep = FilterSet(FlowFilter.build(verdicts=["DROPPED"]), FlowFilter.build(from_ips=[A]))
    assert [f.seq for f in FLOWS if keep.matches(f)] == [4, 6]
    with pytest.raises(FilterError):
        FlowFilter.build(to_ips=["198.19.0.0/33"])


def test_hubble_dns_metrics_count_queries_answers_and_refusals() -> None:
    from dataclasses import replace

    from cilia.observe.flow import DnsInfo, L7Type, Verdict
    from cilia.observe.metrics import NodeMetrics

    base = FLOWS[4]  # client → the DNS server, 53/UDP
    query = replace(base, l7=DnsInfo(L7Type.REQUEST, "web.example.test.", ("A",)))
    answer = replace(base, l7=DnsInfo(L7Type.RESPONSE, "web.example.test.", ("A",), ("198.19.0.5",), 30,
                                      rrtypes=("A",)))
    nx = replace(base, l7=DnsInfo(L7Type.RESPONSE, "nowhere.test.", ("A",), rcode=3))
    refused = replace(base, verdict=Verdict.DROPPED, l7=DnsInfo(L7Type.REQUEST, "evil.test.", ("A",)))
    m = NodeMetrics()
    for f in (query, answer, nx, refused, query):
        m.observe_dns(f)
    m.observe_dns(FLOWS[0])  # not a DNS flow: not counted
    q = {"qtypes": "A", "ips_returned": "0"}
    assert m.value("hubble_dns_queries_total", {"rcode": "", **q}) == 2
    assert m.value("hubble_dns_queries_total", {"rcode": "Policy denied", **q}) == 1
    one = {"qtypes": "A", "ips_returned": "1"}
    assert m.value("hubble_dns_responses_total", {"rcode": "No Error", **one}) == 1
    assert m.value("hubble_dns_responses_total", {"rcode": "Non-Existent Domain", **q}) == 1
    assert m.value("hubble_dns_response_types_total", {"type": "A", "qtypes": "A"}) == 1


def test_bytes_policy_revision_and_fqdn_metrics() -> None:
    from cilia.datapath.maps.metrics import MetricRow
    from cilia.observe.metrics import NodeMetrics

    m = NodeMetrics()
    assert m.value("cilium_forward_bytes_total", {"direction": "egress"}) == 0  # no kernel counters yet
    m.set_datapath_counters([
        MetricRow("egress", "dropped", "Policy denied", 40, 2400),
        MetricRow("egress", "forwarded", "", 1000, 90000),
        MetricRow("egress", "forwarded", "reply", 500, 30000),
        MetricRow("ingress", "audited", "", 3, 180),
    ])  # fmt: skip
    assert m.value("cilium_drop_bytes_total", {"reason": "Policy denied", "direction": "egress"}) == 2400
    assert m.value("cilium_forward_bytes_total", {"direction": "egress"}) == 120000
    assert m.value("cilium_forward_bytes_total", {"direction": "ingress"}) == 180
    m.set_policy_revision(4)  # the first reading: the revision, no change counted
    m.set_policy_revision(4)
    m.set_policy_revision(7)
    assert m.value("cilium_policy_max_revision") == 7
    assert m.value("cilium_policy_change_total", {"outcome": "success"}) == 3
    m.set_fqdn(names=2, ips=3, zombies=1, selectors=4)
    names = ("cilium_fqdn_active_names", "cilium_fqdn_active_ips", "cilium_fqdn_alive_zombie_connections",
             "cilium_fqdn_selectors")
    assert [m.value(n) for n in names] == [2, 3, 1, 4]


def test_flows_carry_the_names_the_node_learned_and_fqdn_filters_match_them() -> None:
    from cilia.identity.labels import Labels
    from cilia.observe.enrich import LocalEndpoint, NodeView
    from cilia.observe.flow import flow_from_json
    from cilia.observe.pipeline import FlowPipeline
    from cilia.proxy.records import DnsRecord

    learned = {"198.19.0.53": ("dns.lab.test",)}
    view = NodeView(
        endpoints={A: LocalEndpoint(3, 1234, "default", "client-x", A)},
        identities={1234: Labels.parse(["k8s:app=client"])},
        names=lambda ip: learned.get(ip, ()),
    )
    p = FlowPipeline(lambda: view, clock_offset_ns=0)
    flow = p.ingest_dns(DnsRecord(response=False, query="api.example.com", time_ns=1_795_000_001_500_000_000,
                                  client=(A, 40001), server=("198.19.0.53", 53), proto=17,
                                  client_identity=1234, server_identity=2))
    assert (flow.source_names, flow.destination_names) == ((), ("dns.lab.test",))
    assert flow.to_json()["destination_names"] == ["dns.lab.test"] and "source_names" not in flow.to_json()
    assert flow_from_json(flow.to_json()) == flow

    def keeps(**kw: list[str]) -> bool:
        return FlowFilter.build(**kw).matches(flow)

    assert keeps(to_fqdns=["dns.lab.test"]) and keeps(fqdns=["*.LAB.test."]) and keeps(to_fqdns=["*.*.test"])
    assert not keeps(from_fqdns=["dns.lab.test"]) and not keeps(to_fqdns=["*.test"])  # * stays in one label
    assert not keeps(fqdns=["api.example.com"])  # the query is not a name of either address
    with pytest.raises(FilterError, match="--to-fqdn"):
        FlowFilter.build(to_fqdns=["bad name"])


def test_workloads_of_local_pods_and_the_workload_filters() -> None:
    from dataclasses import replace

    from cilia.observe.enrich import LocalEndpoint, NodeView, endpoint_of
    from cilia.observe.flow import Endpoint, flow_from_json

    owner = (("Deployment", "app-a"),)
    view = NodeView(endpoints={A: LocalEndpoint(3, 256, "default", "app-a-7d4b9-x", A, owner)})
    src = endpoint_of(view, A, 256)
    assert src.workloads == (("Deployment", "app-a"),)
    assert src.to_json()["workloads"] == [{"name": "app-a", "kind": "Deployment"}]
    assert Endpoint.from_json(src.to_json()) == src
    flow = replace(FLOWS[0], source=src)
    assert flow_from_json(flow.to_json()) == flow

    def keeps(**kw: list[str]) -> bool:
        return FlowFilter.build(**kw).matches(flow)

    assert keeps(from_workloads=["app-a"]) and keeps(workloads=["Deployment/app-a"])
    assert keeps(from_workloads=["app-b", "app-a"])
    assert not keeps(to_workloads=["app-a"]) and not keeps(from_workloads=["StatefulSet/app-a"])
    with pytest.raises(FilterError, match="--from-workload"):
        FlowFilter.build(from_workloads=["/app-a"])
