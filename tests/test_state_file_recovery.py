"""The datapath's rule cookie table and the address-only runtime's pods are private files (0600,
replaced atomically), and a damaged copy of either is kept aside with a warning, never a reason for
the agent not to start (issue 13 item 6)."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from cilia.agent.runtime import AddressOnlyRuntime
from cilia.datapath.bpf.cookies import CookieTable
from cilia.lab.ipam import Ipam
from cilia.policy.types import RuleRef
from tests.test_agent_reconcile import CountingRuntime, Harness

DAMAGE = {
    "truncate": lambda text: text[: len(text) // 2],
    "garbage": lambda text: "\x00\x01",
    "wrong-type": lambda text: '{"a": 1}' if text.startswith("[") else "[1, 2]",
    "wrong-fields": lambda text: (
        '[{"pod": 5}]' if text.startswith("[") else '{"cookies": {"x": []}, "next": 1}'
    ),
}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _open_umask():  # type: ignore[no-untyped-def]
    old = os.umask(0o022)  # the usual umask: files 0644 unless the code says otherwise
    yield
    os.umask(old)


RULE_A = RuleRef("CiliumNetworkPolicy", "default", "a", "ingress", 0)
RULE_B = RuleRef("CiliumNetworkPolicy", "default", "b", "egressDeny", 1)


def test_the_cookie_table_is_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cookies.json"
    table = CookieTable(path)
    a, b = table.cookie_for(frozenset({RULE_A})), table.cookie_for(frozenset({RULE_A, RULE_B}))
    table.save()
    assert mode(path) == 0o600 and mode(path.parent) == 0o700  # was 0644
    again = CookieTable(path)
    assert again.recovered is None
    assert again.rules_for(a) == frozenset({RULE_A}) and again.rules_for(b) == frozenset({RULE_A, RULE_B})
    assert again.cookie_for(frozenset({RULE_B})) not in (0, a, b)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cookie_table_is_kept_aside_with_a_warning(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cookies.json"
    table = CookieTable(path)
    table.cookie_for(frozenset({RULE_A}))
    table.save()
    path.write_text(DAMAGE[damage](path.read_text()))
    with caplog.at_level(logging.WARNING, logger="cilia.datapath.bpf.cookies"):
        fresh = CookieTable(path)  # used to raise: the datapath, and so the agent, did not start
    assert fresh.recovered and len(fresh) == 0
    assert "rule cookie table unreadable" in caplog.text
    assert (tmp_path / "cookies.json.corrupt").exists() and not path.exists()
    c = fresh.cookie_for(frozenset({RULE_B}))
    fresh.save()
    assert CookieTable(path).rules_for(c) == frozenset({RULE_B})  # written whole again


def test_the_simulated_pods_file_is_private(tmp_path: Path) -> None:
    node = Harness(tmp_path)
    node.apply("app-a.yaml")
    assert mode(tmp_path / "pods.json") == 0o600


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_simulated_pods_file_is_kept_aside_and_the_pods_come_back(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    node = Harness(tmp_path)
    node.apply("app-a.yaml", "app-b.yaml")
    before = sorted((str(p), rp.ip) for p, rp in node.runtime.existing().items())
    assert before
    path = tmp_path / "pods.json"
    path.write_text(DAMAGE[damage](path.read_text()))
    ipam = Ipam(node.store, 0)
    with caplog.at_level(logging.WARNING, logger="cilia.agent.runtime"):
        # the agent's restart: a new runtime over the damaged file (used to raise: no agent)
        node.runtime = CountingRuntime(path, ipam.allocate, ipam.release_owner, ipam.gateway)
    assert node.runtime.recovered and "simulated pods unreadable" in caplog.text
    assert (tmp_path / "pods.json.corrupt").exists()
    node.restart()
    after = sorted((str(p), rp.ip) for p, rp in node.runtime.existing().items())
    assert [p for p, _ in after] == [p for p, _ in before]  # every pod of the store runs again
    assert json.loads(path.read_text()) and mode(path) == 0o600  # saved again, whole


def test_a_sound_simulated_pods_file_is_adopted(tmp_path: Path) -> None:
    node = Harness(tmp_path)
    node.apply("app-a.yaml")
    ipam = Ipam(node.store, 0)
    again = AddressOnlyRuntime(tmp_path / "pods.json", ipam.allocate, ipam.release_owner, ipam.gateway)
    assert again.recovered is None and again.existing() == node.runtime.existing()
