"""State files are private (0600 in 0700 directories) and durable (atomic replace, fsync, SQLite
``synchronous=FULL``), and a truncated endpoint table is rebuilt, never a reason not to start."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from cilia.agent.config import AgentConfig
from cilia.agent.endpoints import EndpointTable
from cilia.agent.events import EventLog, read_events
from cilia.observe.audit import AuditSettings
from cilia.store import Kind, open_store
from cilia.store.files import open_private, private_dir, write_json, write_private
from tests.test_agent_reconcile import Harness


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _open_umask():  # type: ignore[no-untyped-def]
    old = os.umask(0o022)  # the usual umask: files 0644 unless the code says otherwise
    yield
    os.umask(old)


def test_write_private_is_0600_in_0700_and_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "state" / "deep" / "x.json"
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700 and mode(target.parent.parent) == 0o700
    target.chmod(0o644)  # written by an older version
    write_private(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]  # no temporary left


def test_open_private_narrows_an_existing_log(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    log.write_text("old\n")
    log.chmod(0o644)
    with open_private(log, "a") as f:
        f.write("new\n")
    assert log.read_text() == "old\nnew\n" and mode(log) == 0o600


def test_a_shared_directory_is_never_narrowed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    private_dir(shared)
    assert mode(shared) == 0o1777


def test_the_sqlite_store_is_private_and_synchronous_full(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = open_store(state)
    store.put(Kind.NAMESPACES.key("", "a"), {"kind": "Namespace", "metadata": {"name": "a"}})
    files = [state / "store.db", state / "store.db-wal", state / "store.db-shm"]
    assert all(f.exists() for f in files)
    assert [mode(f) for f in files] == [0o600] * 3 and mode(state) == 0o700
    backend = store.backend
    assert backend._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_an_old_world_readable_store_is_narrowed(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    sqlite3.connect(db).close()
    db.chmod(0o644)
    open_store(tmp_path)
    assert mode(db) == 0o600


def test_agent_state_files_are_private(tmp_path: Path) -> None:
    cfg = AgentConfig(state_dir=tmp_path / "state", run_dir=tmp_path / "run")
    cfg.save()
    events = EventLog(cfg.state_dir / "events.jsonl")
    events.normal("Started", "Node", "up")
    table = EndpointTable(cfg.endpoints_path)
    table.save()
    AuditSettings(True).save(cfg.state_dir)
    for name in ("node.json", "events.jsonl", "endpoints.json", "audit.json"):
        assert mode(cfg.state_dir / name) == 0o600, name
    assert mode(cfg.state_dir) == 0o700
    assert [e.reason for e in read_events(cfg.state_dir / "events.jsonl")] == ["Started"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong-type", "empty-object"])
def test_a_damaged_endpoint_table_is_rebuilt_with_the_same_ids(tmp_path: Path, damage: str) -> None:
    node = Harness(tmp_path)
    node.apply("app-a.yaml", "app-b.yaml", "deny-a-to-b-fixed.yaml")
    before = [(str(e.pod), e.id, e.ip, e.ifindex, e.identity) for e in node.rec.endpoints]
    maps = {eid: node.policy(eid) for eid in node.datapath.policies}
    path = tmp_path / "endpoints.json"
    text = path.read_text()
    path.write_text(
        {"truncate": text[: len(text) // 2], "garbage": "\x00\x01", "wrong-type": '{"a": 1}',
         "empty-object": "[{}]"}[damage]
    )  # fmt: skip
    node.restart()  # used to raise JSONDecodeError: the agent did not start
    assert [(str(e.pod), e.id, e.ip, e.ifindex, e.identity) for e in node.rec.endpoints] == before
    assert {eid: node.policy(eid) for eid in node.datapath.policies} == maps
    assert (tmp_path / "endpoints.json.corrupt").exists()
    assert json.loads(path.read_text())  # saved again, whole
    assert "EndpointsRecovered" in [e.reason for e in node.events.events()]


def test_the_dns_cache_file_is_private(tmp_path: Path) -> None:
    from cilia.proxy.dns.cache import DnsCache, save_state

    path = tmp_path / "state" / "fqdn.json"
    save_state(path, DnsCache(0), {})
    assert mode(path) == 0o600 and mode(path.parent) == 0o700


def test_the_workload_daemon_keeps_its_socket_and_log_private(tmp_path: Path) -> None:
    from cilia.lab.workloadd import LOG_NAME, SOCKET_NAME, WorkloadClient

    run_dir = tmp_path / "lab"
    client = WorkloadClient(run_dir)
    client.ensure_started()
    try:
        assert mode(run_dir) == 0o700
        assert mode(run_dir / SOCKET_NAME) == 0o600 and mode(run_dir / LOG_NAME) == 0o600
    finally:
        client.stop()


def test_a_restart_writes_the_endpoint_table_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cilia.agent import endpoints as endpoints_module

    node = Harness(tmp_path)
    node.apply("app-a.yaml", "app-b.yaml")
    assert len(node.rec.endpoints) == 4
    writes: list[Path] = []
    real = endpoints_module.write_private
    monkeypatch.setattr(endpoints_module, "write_private", lambda p, d: (writes.append(p), real(p, d)))
    node.restart()
    assert writes == [tmp_path / "endpoints.json"]  # each save is fsynced: once, not once per pod


def test_lab_records_are_private(tmp_path: Path) -> None:
    from cilia.lab.node import Lab, Pod
    from cilia.lab.spec import PodSpec

    lab = Lab(open_store(backend="memory"), run_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    spec = PodSpec(namespace="default", name="web")
    lab._write(Pod("default", "web", "cilia-default-web", "lxc0", 0, "198.18.0.9", "198.18.0.1", "-", spec))
    record = tmp_path / "run" / "pods" / "default_web.json"
    assert json.loads(record.read_text())["name"] == "web"
    assert mode(record) == 0o600 and mode(record.parent) == 0o700 and mode(tmp_path / "run") == 0o700
