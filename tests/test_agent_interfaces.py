"""The node datapath protocol is complete and both datapaths implement all of it: every call the
agent makes exists, with the protocol's parameters, on the kernel datapath and on the simulated one
(no capability is found by probing attributes); what the simulated one cannot do it records, and its
capabilities say so."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from helpers_bpf import private_datapath

from cilia.agent import ctgc
from cilia.agent.datapaths import SimNodeDatapath
from cilia.agent.interfaces import Capability, NodeDatapath
from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.maps.endpoints import EndpointFlags, EndpointInfo
from cilia.datapath.maps.lb import Backend, Frontend


def protocol_calls() -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in vars(NodeDatapath).items()
        if inspect.isfunction(fn) and not name.startswith("_")
    }


def test_the_protocol_names_every_capability_call() -> None:
    calls = set(protocol_calls())
    assert {"set_audit", "sync_services", "set_dns_redirect", "dns_redirects", "dns_origin", "conntrack_gc",
            "conntrack_peers", "read_events", "rules_for", "attach", "set_policy", "update_identity",
            "teardown", "endpoint_ids"} <= calls  # fmt: skip
    assert "capabilities" in NodeDatapath.__annotations__


@pytest.mark.parametrize("impl", [Datapath, SimNodeDatapath], ids=["bpf", "sim"])
def test_both_datapaths_implement_all_of_it(impl: type) -> None:
    for name, sig in protocol_calls().items():
        fn = getattr(impl, name, None)
        assert callable(fn), f"{impl.__name__} has no {name}"
        want = list(sig.parameters)
        have = list(inspect.signature(fn).parameters)
        assert have[: len(want)] == want, f"{impl.__name__}.{name}{inspect.signature(fn)} is not {name}{sig}"
        extra = [inspect.signature(fn).parameters[p] for p in have[len(want) :]]
        assert all(p.default is not inspect.Parameter.empty for p in extra), f"{impl.__name__}.{name}"
    assert isinstance(impl.capabilities, frozenset)


def test_capabilities() -> None:
    assert Datapath.capabilities == frozenset(Capability)
    assert SimNodeDatapath.capabilities == frozenset()


def test_the_simulated_datapath_records_what_it_cannot_do() -> None:
    dp: NodeDatapath = SimNodeDatapath()
    dp.set_audit(7, True)
    fe = Frontend("198.18.255.10", 80, "TCP")
    dp.sync_services({fe: [Backend("198.18.0.5", 8080)]})
    dp.set_dns_redirect(7, ("198.18.0.1", 10053))
    assert isinstance(dp, SimNodeDatapath)
    assert (dp.audit, dp.services, dp.dns_redirects()) == (
        {7},
        {fe: (Backend("198.18.0.5", 8080),)},
        {7: ("198.18.0.1", 10053)},
    )
    dp.set_audit(7, False)
    dp.set_dns_redirect(7, None)
    assert (dp.audit, dp.dns_redirects(), dp.dns_origin(("198.18.0.5", 4000), ("198.18.0.1", 10053))) == (
        set(),
        {},
        None,
    )
    assert (dp.conntrack_gc(), dp.conntrack_peers(), dp.rules_for(1), dp.read_events(lambda e: None, 1)) == (
        0,
        set(),
        None,
        0,
    )
    assert ctgc.collect(dp) == 0


@pytest.mark.root
def test_the_kernel_datapath_answers_the_protocol(tmp_path: Path) -> None:
    """The calls the kernel datapath gained for the protocol, on private pins (no device attached:
    the endpoint is written into its map directly)."""
    with private_datapath(tmp_path) as dp:
        empty = (dp.endpoint_ids(), dp.dns_redirects(), dp.conntrack_peers(), dp.conntrack_gc())
        assert empty == ({}, {}, set(), 0)
        dp.endpoints.set(EndpointInfo(424242, 7, 1000, EndpointFlags(0)))
        dp.set_dns_redirect(7, ("198.18.0.1", 15053))
        assert (dp.endpoint_ids(), dp.dns_redirects()) == ({424242: 7}, {7: ("198.18.0.1", 15053)})
