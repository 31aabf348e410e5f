"""``cilia bpf …`` against a private pinned datapath (the CLI opens the pins read-only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_bpf import LO, private_datapath, run
from helpers_packets import TCP, frame
from typer.testing import CliRunner

from cilia.cli.commands.bpf import port_proto
from cilia.cli.main import app
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.policy.types import Entry, Key, RuleRef


def test_port_proto_names() -> None:
    assert [port_proto(k) for k in (Key(0, 0, 0, 0, 0), Key(5, 0, 6, 80, 16), Key(5, 1, 17, 8, 13),
                                    Key(5, 0, 132, 0, 0), Key(5, 0, 1, 8, 16))] == \
        ["ANY", "80/TCP", "8-15/UDP", "ANY/SCTP", "8/ICMP"]


@pytest.mark.root
def test_bpf_commands_json(tmp_path: Path) -> None:
    rule = RuleRef("CiliumNetworkPolicy", "default", "allow-http", "ingress", 0)
    with private_datapath(tmp_path) as dp:
        dp.endpoints.set(EndpointInfo(LO, 5, 1001, EndpointFlags.enforcing()))
        dp.upsert_ipcache("198.18.1.10/32", 1002)
        dp.upsert_ipcache("198.19.0.0/16", 16777217)
        dp.set_policy(5, {Key(1002, 0, TCP, 80, 16): Entry(False, frozenset({rule})),
                          Key(0, 1, 0, 0, 0): Entry(True, frozenset())})
        assert run(dp, "to_container", frame("198.18.1.10", "198.18.1.20", TCP, sport=4000))[0]
        common = ["--pin-root", dp.pin_root, "--state-dir", str(tmp_path), "-o", "json"]
        runner = CliRunner()

        def cli(*argv: str) -> object:
            res = runner.invoke(app, ["bpf", *argv, *common])
            assert res.exit_code == 0, res.output
            return json.loads(res.stdout)

        assert cli("policy", "get", "5") == [
            {"endpoint": 5, "policy": "Deny", "direction": "Egress", "identity": "ANY", "port_proto": "ANY",
             "proxy_port": "NONE", "auth_type": "disabled", "prefix": 0, "rules": []},
            {"endpoint": 5, "policy": "Allow", "direction": "Ingress", "identity": 1002,
             "port_proto": "80/TCP", "proxy_port": "NONE", "auth_type": "disabled", "prefix": 24,
             "rules": ["CiliumNetworkPolicy default/allow-http ingress[0]"]},
        ]
        assert cli("ipcache", "list") == [{"prefix": "198.18.1.10/32", "identity": 1002},
                                          {"prefix": "198.19.0.0/16", "identity": 16777217}]
        assert cli("endpoint", "list") == [{"ifindex": LO, "ifname": "lo", "endpoint_id": 5, "identity": 1001,
                                            "flags": ["enforce_egress", "enforce_ingress", "policy_ready"]}]
        [entry] = cli("ct", "list")  # type: ignore[misc]
        assert {k: v for k, v in entry.items() if k != "expires_in_s"} == {
            "endpoint_id": 5, "direction": "ingress", "proto": "TCP", "src": "198.18.1.10",
            "dst": "198.18.1.20", "sport": 4000, "dport": 80, "packets": 1, "bytes": 62,
            "cookie": dp.cookies.cookie_for(frozenset({rule}))}
        assert cli("metrics", "list") == [{"direction": "ingress", "verdict": "forwarded", "reason": "",
                                           "packets": 1, "bytes": 62}]
        dp.set_local_endpoint("198.18.1.20", LO, "02:00:00:00:00:01", "02:00:00:00:00:02")
        dp.set_local_endpoint("2001:2::c612:114", LO, "02:00:00:00:00:01", "02:00:00:00:00:02")
        assert cli("lxc", "list") == [
            {"address": ip, "ifindex": LO, "ifname": "lo", "endpoint_id": 5, "pod_mac": "02:00:00:00:00:01",
             "host_mac": "02:00:00:00:00:02"} for ip in ("198.18.1.20", "2001:2::c612:114")]
        lxc_table = runner.invoke(app, ["bpf", "lxc", "list", "--pin-root", dp.pin_root])
        assert lxc_table.stdout.split("\n")[0].split() == ["ADDRESS", "IFINDEX", "IFNAME", "ENDPOINT", "ID",
                                                         "POD", "MAC", "HOST", "MAC"]
        table = runner.invoke(app, ["bpf", "policy", "get", "--pin-root", dp.pin_root])
        assert "80/TCP" in table.stdout and "Deny" in table.stdout


@pytest.mark.root
def test_bpf_command_without_datapath_fails_clearly(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bpf", "ipcache", "list", "--pin-root", "/sys/fs/bpf/cilia/none/v1"])
    assert res.exit_code == 1
    assert "no cilia datapath pinned at /sys/fs/bpf/cilia/none/v1" in res.stderr


@pytest.mark.root
def test_expired_conntrack_entries_are_hidden_and_collected(tmp_path: Path) -> None:
    """An expired entry (the datapath ignores it) is left out of ``ct list`` unless ``--all``, and
    ``CtMap.gc`` deletes it while a live one stays."""
    from cilia.datapath.maps.ct import CtKey, CtKey4, CtValue

    with private_datapath(tmp_path) as dp:
        dp.endpoints.set(EndpointInfo(LO, 5, 1001, EndpointFlags.enforcing()))
        dp.upsert_ipcache("198.18.1.10/32", 1002)
        dp.set_policy(5, {Key(1002, 0, TCP, 80, 16): Entry(False, frozenset())})
        for sport in (4000, 4001):
            assert run(dp, "to_container", frame("198.18.1.10", "198.18.1.20", TCP, sport=sport))[0]
        keys = sorted(dp.ct.ct_keys(), key=lambda k: k.sport)
        assert len(keys) == 2
        # IPv4 connections live in cilia_ct4 (the short key), none in the IPv6 map
        assert dp.ct.m4 is not None and len(dp.ct.m4.keys(CtKey4)) == 2 and dp.ct.m.keys(CtKey) == []
        v = CtValue()
        assert dp.ct.lookup(keys[0], v)
        v.expires_ns = 1  # long past
        dp.ct.update(keys[0], v)
        common = ["--pin-root", dp.pin_root, "--state-dir", str(tmp_path), "-o", "json"]
        runner = CliRunner()

        def sports(*flags: str) -> list[int]:
            res = runner.invoke(app, ["bpf", "ct", "list", *flags, *common])
            assert res.exit_code == 0, res.output
            return sorted(e["sport"] for e in json.loads(res.stdout))

        assert (sports(), sports("--all")) == ([4001], [4000, 4001])
        assert dp.ct.gc() == 1
        assert (sports(), sports("--all")) == ([4001], [4001])
