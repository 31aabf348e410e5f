"""Small agent pieces: config, events log, flow ring and decoding, endpoint table, labels, controller."""

from __future__ import annotations

from pathlib import Path

import pytest

from cilia.agent.config import AgentConfig, ConfigError
from cilia.agent.desired import DesiredState, PodKey, deployment_ops
from cilia.agent.endpoints import Endpoint, EndpointTable
from cilia.agent.events import EventLog, read_events
from cilia.agent.flows import FlowRing, flow_from_event
from cilia.cli.commands.label import LabelError, parse_label_args, relabel
from cilia.datapath.maps.events import PolicyEvent
from cilia.policy.types import Direction, DropReason, MatchType, RuleRef
from cilia.store import Delete, Event, EventType, Kind, Put
from tests.conftest import SEED


def test_config_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CILIA_STATE_DIR", raising=False)
    monkeypatch.delenv("CILIA_RUN_DIR", raising=False)
    monkeypatch.delenv("CILIA_PIN_ROOT", raising=False)
    cfg = AgentConfig.resolve()
    assert (cfg.state_dir, cfg.run_dir, cfg.socket_path, cfg.pin_root) == (
        Path("/var/lib/cilia"),
        Path("/run/cilia"),
        Path("/run/cilia/cilia.sock"),
        "/sys/fs/bpf/cilia/v1",
    )
    monkeypatch.setenv("CILIA_STATE_DIR", str(tmp_path / "env"))
    assert AgentConfig.resolve().state_dir == tmp_path / "env"
    assert AgentConfig.resolve(tmp_path / "flag").state_dir == tmp_path / "flag"
    with pytest.raises(ConfigError, match="enforcement mode"):
        AgentConfig.resolve(enforcement_mode="sometimes")
    with pytest.raises(ConfigError, match="node index"):
        AgentConfig(node_index=15)
    saved = AgentConfig.resolve(tmp_path / "s", datapath="sim", node_index=3)
    saved.save()
    assert AgentConfig.resolve(tmp_path / "s").with_saved() == saved


def test_event_log_folds_repeats_and_is_bounded(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "ev.jsonl", limit=3)
    log.normal("Started", "Pod/default/a", "up")
    log.normal("Started", "Pod/default/a", "up")
    log.warning("PolicyFailed", "CNP/default/x", "boom")
    log.normal("Started", "Pod/default/b", "up")
    log.normal("Killing", "Pod/default/b", "gone")
    got = [(e.type, e.reason, e.involved, e.count) for e in read_events(tmp_path / "ev.jsonl", limit=3)]
    assert got == [
        ("Warning", "PolicyFailed", "CNP/default/x", 1),
        ("Normal", "Started", "Pod/default/b", 1),
        ("Normal", "Killing", "Pod/default/b", 1),
    ]
    assert [e.count for e in EventLog(tmp_path / "ev.jsonl", limit=3).events()] == [1, 1, 1]
    (tmp_path / "torn.jsonl").write_text(
        '{"type": "Normal", "reason": "A", "involved": "x", "message": ""}\n{"ty'
    )
    assert [e.reason for e in read_events(tmp_path / "torn.jsonl")] == ["A"]


def _event(**kw: object) -> PolicyEvent:
    base = dict(
        ts_ns=1,
        endpoint_id=3,
        ifindex=9,
        direction=Direction.EGRESS,
        allowed=False,
        audited=False,
        reason=DropReason.POLICY_DENY,
        match_type=MatchType.L3_ONLY,
        exact=True,
        lpm_prefix=0,
        cookie=7,
        src_identity=256,
        dst_identity=257,
        family=4,
        proto=6,
        src="198.18.0.2",
        dst="198.18.0.4",
        sport=40000,
        dport=80,
        suppressed_before=0,
        no_endpoint=False,
        not_ready=False,
    )
    base.update(kw)
    return PolicyEvent(**base)  # type: ignore[arg-type]


def test_flow_decoding_names_pods_and_rules() -> None:
    ref = RuleRef("CiliumNetworkPolicy", "default", "deny-app-a-to-app-b", "egressDeny", 0)
    flow = flow_from_event(
        _event(),
        1,
        {"198.18.0.2": "default/a", "198.18.0.4": "default/b"},
        lambda c: frozenset({ref}) if c == 7 else None,
    )
    data = flow.to_json()
    del data["time"]
    assert data == {
        "seq": 1,
        "verdict": "DROPPED",
        "drop_reason": 181,
        "drop_reason_desc": "POLICY_DENY",
        "direction": "egress",
        "proto": "TCP",
        "match_type": "L3-Only",
        "endpoint_id": 3,
        "source": {"ip": "198.18.0.2", "port": 40000, "identity": 256, "pod": "default/a"},
        "destination": {"ip": "198.18.0.4", "port": 80, "identity": 257, "pod": "default/b"},
        "rules": ["CiliumNetworkPolicy default/deny-app-a-to-app-b egressDeny[0]"],
    }
    ok = flow_from_event(_event(allowed=True, reason=DropReason.NONE, cookie=0, proto=17), 2, {})
    assert (ok.verdict, ok.drop_reason, ok.drop_reason_desc, ok.proto, ok.rules, ok.source.pod) == (
        "FORWARDED",
        0,
        "",
        "UDP",
        (),
        "",
    )
    audit = flow_from_event(_event(allowed=True, audited=True, reason=DropReason.POLICY_DENIED), 3, {})
    assert (audit.verdict, audit.drop_reason) == ("AUDIT", 133)


def test_flow_ring_is_bounded_and_resumable() -> None:
    ring = FlowRing(capacity=3)
    for _ in range(5):
        ring.add(flow_from_event(_event(), ring.next_seq(), {}))
    assert [f.seq for f in ring.since(0, 10)] == [3, 4, 5]
    assert [f.seq for f in ring.since(3, 1)] == [4]
    snap = ring.snapshot(4, 10)
    assert [f["seq"] for f in snap["flows"]] == [5] and snap["last_seq"] == 5
    assert ring.snapshot(5, 10)["last_seq"] == 5


def test_endpoint_table_persists_and_allocates_smallest_id(tmp_path: Path) -> None:
    path = tmp_path / "eps.json"
    t = EndpointTable(path)
    a = Endpoint(
        t.new_id(), PodKey("default", "a"), "198.18.0.2", 10, "lxc1", "cilia-default-a", 256, ("k8s:app=a",)
    )
    t.put(a)
    b = Endpoint(t.new_id(), PodKey("default", "b"), "198.18.0.3", 11, "lxc2", "cilia-default-b", 257)
    t.put(b)
    t.remove(a.pod)
    assert t.new_id() == 1
    t.update(b.pod, identity=300)
    again = EndpointTable(path)
    assert list(again) == [
        Endpoint(2, PodKey("default", "b"), "198.18.0.3", 11, "lxc2", "cilia-default-b", 300)
    ]
    assert again.by_ip() == {"198.18.0.3": next(iter(again))}


def test_label_arguments() -> None:
    assert parse_label_args(["access=frontend", "tier-", "empty="]) == (
        {"access": "frontend", "empty": ""},
        ["tier"],
    )
    with pytest.raises(LabelError, match="key=value or key-"):
        parse_label_args(["oops"])
    pod = {"kind": "Pod", "metadata": {"name": "p", "labels": {"app": "a", "tier": "web"}}}
    assert relabel(pod, {"access": "frontend"}, ["tier"], False)["metadata"]["labels"] == {
        "app": "a",
        "access": "frontend",
    }
    with pytest.raises(LabelError, match="--overwrite"):
        relabel(pod, {"app": "b"}, [], False)
    assert relabel(pod, {"app": "b"}, [], True)["metadata"]["labels"]["app"] == "b"
    assert pod["metadata"]["labels"] == {"app": "a", "tier": "web"}  # the input is not changed


def _deployment_state(replicas: int) -> DesiredState:
    import yaml

    obj = yaml.safe_load((SEED / "app-a.yaml").read_text())
    obj["metadata"]["namespace"] = "default"
    obj["spec"]["replicas"] = replicas
    state = DesiredState()
    state.apply(Event(EventType.PUT, Kind.DEPLOYMENTS.key("default", "app-a"), obj, 1))
    return state


def test_controller_creates_scales_and_replaces() -> None:
    state = _deployment_state(2)
    ops = deployment_ops(state, revision=1)
    names = [op.key.name for op in ops if isinstance(op, Put)]
    assert names == ["app-a-flwmvdl9w9-ttf4s", "app-a-flwmvdl9w9-96snb"]  # the loader's names, by index
    for op in ops:
        state.apply(Event(EventType.PUT, op.key, op.value, 2))
    assert deployment_ops(state, revision=2) == []
    state.apply(Event(EventType.DELETE, Kind.PODS.key("default", names[0]), {}, 3))
    replace = deployment_ops(state, revision=3)
    assert len(replace) == 1 and replace[0].key.name not in names
    assert replace[0].key.name.startswith("app-a-flwmvdl9w9-")
    assert deployment_ops(state, revision=3) == replace  # deterministic
    state.apply(Event(EventType.PUT, replace[0].key, replace[0].value, 4))
    state.deployments[PodKey("default", "app-a")]["spec"]["replicas"] = 1
    newest = max(names[1], replace[0].key.name)  # scale-down keeps the first names in order
    assert deployment_ops(state, revision=4) == [Delete(Kind.PODS.key("default", newest), missing_ok=True)]
    del state.deployments[PodKey("default", "app-a")]
    assert sorted(op.key.name for op in deployment_ops(state, revision=5)) == sorted(
        [names[1], replace[0].key.name]
    )


def test_ring_sink_names_pods_at_decoding_time() -> None:
    from cilia.agent.flows import RingSink

    pods = {"198.18.0.2": "default/a"}
    ref = RuleRef("CiliumNetworkPolicy", "default", "p", "egressDeny", 0)
    sink = RingSink(lambda: dict(pods), lambda c: frozenset({ref}), capacity=2)
    sink.ingest(_event())
    pods["198.18.0.4"] = "default/b"
    sink.ingest(_event())
    snap = sink.snapshot(0, 10)
    assert [(f["seq"], f["source"]["pod"], f["destination"]["pod"]) for f in snap["flows"]] == [
        (1, "default/a", ""),
        (2, "default/a", "default/b"),
    ]
    assert snap["flows"][0]["rules"] == ["CiliumNetworkPolicy default/p egressDeny[0]"]


def test_the_http_proxys_identity_map_holds_both_families() -> None:
    """HAProxy's ipcache map: each endpoint's /32 and its IPv6 twin's /128, the gateway's as host,
    and outside every prefix world for IPv4 and world-ipv6 for IPv6 (as the datapath's lookup)."""
    from types import SimpleNamespace

    from cilia.agent.l7proxy import node_ipcache

    ep = SimpleNamespace(ip="198.18.0.5", identity=300)
    rec = SimpleNamespace(remote_ipcache={"198.18.16.7/32": 301, "2001:2::c612:1007/128": 301},
                          endpoints=[ep], cidr_identities={}, fqdn=None, gateway="198.18.0.1")
    assert node_ipcache(rec) == {
        "198.18.16.7/32": 301, "2001:2::c612:1007/128": 301, "198.18.0.5/32": 300,
        "2001:2::c612:5/128": 300, "198.18.0.1/32": 1, "2001:2::c612:1/128": 1, "0.0.0.0/0": 2, "::/0": 10}
