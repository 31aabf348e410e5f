"""The durable flow log: size rotation keeps at most files × max_bytes, reads are oldest first,
torn lines are skipped, follow continues across rotations."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from helpers_observe import seed_flows

from cilia.observe.flow import Flow
from cilia.observe.log import FILE_NAME, FlowLog


def renumbered(n: int) -> list[Flow]:
    base = seed_flows()
    return [replace(base[i % len(base)], seq=i + 1) for i in range(n)]


def test_rotation_bounds_the_files_and_keeps_the_newest(tmp_path: Path) -> None:
    flows = renumbered(60)
    log = FlowLog(tmp_path, max_bytes=4000, files=3)
    for f in flows:
        log.append(f)
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [FILE_NAME, f"{FILE_NAME}.1", f"{FILE_NAME}.2"]
    assert all(p.stat().st_size <= 4000 for p in tmp_path.iterdir())
    kept = list(log.read())
    assert kept == flows[-len(kept) :]  # a contiguous newest suffix, oldest first
    assert 0 < len(kept) < 60
    assert log.last_seq() == 60
    assert log.tail(3) == flows[-3:]
    assert [f.seq for f in log.read(since_seq=58)] == [59, 60]


def test_single_file_log_starts_over(tmp_path: Path) -> None:
    log = FlowLog(tmp_path, max_bytes=3000, files=1)
    for f in renumbered(30):
        log.append(f)
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]
    assert list(log.read())[-1].seq == 30


def test_torn_and_garbage_lines_are_skipped(tmp_path: Path) -> None:
    flows = renumbered(3)
    log = FlowLog(tmp_path)
    for f in flows:
        log.append(f)
    with log.path.open("ab") as fh:
        fh.write(b"not json\n")
        fh.write(b'{"seq": 99, "verdict": "DRO')  # the writer died mid-line
    assert list(log.read()) == flows
    assert log.last_seq() == 3


def test_follow_sees_new_flows_across_rotation(tmp_path: Path) -> None:
    flows = renumbered(40)
    log = FlowLog(tmp_path, max_bytes=3000, files=30)  # room for all: rotation moves, never deletes
    for f in flows[:5]:
        log.append(f)
    seen: list[int] = []
    done = threading.Event()

    def reader() -> None:
        for f in log.follow(since_seq=2, poll_s=0.01, stop=done.is_set):
            seen.append(f.seq)

    t = threading.Thread(target=reader)
    t.start()
    for f in flows[5:]:
        log.append(f)
    done.set()
    t.join(5)
    assert sorted(seen) == list(range(3, 41))  # each once; in order within a poll
