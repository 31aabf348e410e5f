"""A private kernel datapath for tests: its own pin root and state dir, always torn down."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cilia.datapath.bpf import libbpf
from cilia.datapath.bpf.sync import Datapath
from cilia.datapath.maps.config import DatapathConfig
from cilia.datapath.maps.events import PolicyEvent

_seq = itertools.count()
LO = 1  # test runs without ctx ifindex happen on the loopback device


def test_pin_root() -> str:
    return f"/sys/fs/bpf/cilia/test-{os.getpid()}-{next(_seq)}/v1"


test_pin_root.__test__ = False  # type: ignore[attr-defined]


@contextmanager
def private_datapath(tmp: Path, **kw: object) -> Iterator[Datapath]:
    """An opened Datapath on fresh pins, removed afterwards even on failure."""
    kw.setdefault("config", DatapathConfig(events_per_sec=1_000_000))
    dp = Datapath(pin_root=test_pin_root(), state_dir=tmp / "datapath", **kw)  # type: ignore[arg-type]
    try:
        dp.open()
        yield dp
    finally:
        dp.teardown()


def run(dp: Datapath, prog: str, packet: bytes, ifindex: int = LO) -> tuple[bool, list[PolicyEvent]]:
    """Run one program on one frame; returns (passed, events emitted). A redirect (TC_ACT_REDIRECT,
    7: to_container hands a connection with a proxy port to the proxy) counts as passed."""
    assert dp.coll is not None
    ret, _ = libbpf.test_run(dp.coll.programs[prog], packet, ifindex=ifindex)
    events: list[PolicyEvent] = []
    while dp.read_events(events.append, timeout_ms=0):
        pass
    assert ret in (0, 2, 7), ret
    return ret in (0, 7), events
