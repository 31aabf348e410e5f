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


def test_a_rotation_between_listing_and_reading_loses_nothing(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The cursor takes a file's inode from the file it opened: a rotation right before the current
    file is opened (after the files were listed) must not make it read the new file at the old one's
    offset — the race lost flows under load."""
    flows = renumbered(14)
    log = FlowLog(tmp_path, max_bytes=1 << 20, files=5)
    for f in flows[:4]:
        log.append(f)
    cursor = log.cursor(0)
    assert [f.seq for f in cursor.poll()] == [1, 2, 3, 4]
    for f in flows[4:6]:
        log.append(f)
    real_open = Path.open
    fired: list[bool] = []

    def rotate_then_open(self: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not fired and self == log.path:
            fired.append(True)
            with log._lock:
                log._rotate()  # the current file (flows 1-6) becomes flows.jsonl.1
            for f in flows[6:]:
                log.append(f)  # a new current file, longer than what was read of the old one: 7-14
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", rotate_then_open)
    seen = [f.seq for f in cursor.poll()]
    monkeypatch.undo()
    seen += [f.seq for f in cursor.poll()]
    assert fired and sorted(seen) == list(range(5, 15))
