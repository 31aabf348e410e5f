"""The durable flow log: JSON lines under the state directory, rotated by size.

``flows.jsonl`` is the file being written; when a write would take it past ``max_bytes`` it becomes
``flows.jsonl.1`` (older ones shift to ``.2`` … ``.{files-1}``, the oldest is removed), so the log
never holds more than ``files × max_bytes``. History thus outlives the in-memory ring and agent
restarts; readers (``cilia observe`` without an agent, ``cilia policy from-flows``) read the files
oldest first. A line cut short by a crash is skipped.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from cilia.observe.flow import Flow, flow_from_json
from cilia.store.files import private_dir

FILE_NAME = "flows.jsonl"
DEFAULT_MAX_BYTES = 10 << 20
DEFAULT_FILES = 5


class FlowLog:
    """Append-only JSONL flow log with size rotation; safe for one writer and any readers."""

    def __init__(
        self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES, files: int = DEFAULT_FILES
    ) -> None:
        if files < 1 or max_bytes < 1:
            raise ValueError(f"flow log needs files >= 1 and max_bytes >= 1 (got {files}, {max_bytes})")
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self.max_bytes = max_bytes
        self.files = files
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0

    def paths(self) -> list[Path]:
        """The log's files that exist, oldest first."""
        rotated = [self.directory / f"{FILE_NAME}.{i}" for i in range(self.files - 1, 0, -1)]
        return [p for p in (*rotated, self.path) if p.exists()]

    # -- writing ---------------------------------------------------------------------------------
    def _open(self) -> int:
        if self._fd is None:
            private_dir(self.directory)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.fchmod(self._fd, 0o600)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def append(self, flow: Flow) -> None:
        """Write one flow as one line (one ``write``, so readers never see half a line of it)."""
        line = (json.dumps(flow.to_json(), separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = self._open()
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
                fd = self._open()
            os.write(fd, line)
            self._size += len(line)

    def append_many(self, flows: Iterable[Flow], lines: list[bytes] | None = None) -> None:
        """Write flows as lines, as few ``write`` calls as rotation allows (whole lines only);
        ``lines`` are the flows' lines when the caller made them already."""
        if lines is None:
            lines = [(json.dumps(f.to_json(), separators=(",", ":")) + "\n").encode() for f in flows]
        with self._lock:
            fd = self._open()
            chunk: list[bytes] = []
            size = 0
            for line in lines:
                if self._size + size and self._size + size + len(line) > self.max_bytes:
                    if chunk:
                        os.write(fd, b"".join(chunk))
                        self._size += size
                        chunk, size = [], 0
                    if self._size:
                        self._rotate()
                        fd = self._open()
                chunk.append(line)
                size += len(line)
            if chunk:
                os.write(fd, b"".join(chunk))
                self._size += size

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.files == 1:
            self.path.unlink(missing_ok=True)
            return
        oldest = self.directory / f"{FILE_NAME}.{self.files - 1}"
        oldest.unlink(missing_ok=True)
        for i in range(self.files - 2, 0, -1):
            src = self.directory / f"{FILE_NAME}.{i}"
            if src.exists():
                os.replace(src, self.directory / f"{FILE_NAME}.{i + 1}")
        if self.path.exists():
            os.replace(self.path, self.directory / f"{FILE_NAME}.1")

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None

    # -- reading ---------------------------------------------------------------------------------
    def read(self, since_seq: int = 0) -> Iterator[Flow]:
        """Every logged flow with a sequence number above ``since_seq``, oldest first."""
        for path in self.paths():
            yield from _read_file(path, since_seq)

    def last_seq(self) -> int:
        """The sequence number of the newest logged flow (0 for an empty log)."""
        for path in reversed(self.paths()):
            last = 0
            for flow in _read_file(path, 0):
                last = flow.seq
            if last:
                return last
        return 0

    def tail(self, n: int) -> list[Flow]:
        """The newest ``n`` flows, oldest first."""
        out: list[Flow] = []
        for path in reversed(self.paths()):
            out = [*list(_read_file(path, 0)), *out]
            if len(out) >= n:
                break
        return out[-n:] if n > 0 else []

    def cursor(self, since_seq: int = 0) -> LogCursor:
        """A reader of the flows after ``since_seq`` that returns only what is new on each poll."""
        return LogCursor(self, since_seq)

    def follow(
        self, since_seq: int = 0, poll_s: float = 0.2, stop: Callable[[], bool] = lambda: False
    ) -> Iterator[Flow]:
        """The flows after ``since_seq`` and then each new one as it is written (across rotations),
        until ``stop()`` is true (see :class:`LogCursor`)."""
        cursor = self.cursor(since_seq)
        while True:
            stopping = stop()  # checked before the poll: the last poll sees everything written before
            yield from cursor.poll()
            if stopping:
                return
            time.sleep(poll_s)


class LogCursor:
    """Incremental reads of a flow log: each file is read on from where the last poll stopped (by
    inode, so a rotated file is not read twice); each poll's flows come in sequence order. A file
    rotated away (deleted) before it was read is lost to the cursor. Flows at or below ``since_seq``
    are skipped; ``seq`` is the newest sequence number returned so far. (A file rotated while a poll
    lists the files is read by a later poll, whose flows may then be older than ``seq``: they are
    returned all the same, the offsets never return a line twice.)"""

    def __init__(self, log: FlowLog, since_seq: int = 0) -> None:
        self.log = log
        self.since = since_seq
        self.seq = since_seq
        self._offsets: dict[int, int] = {}

    def poll(self) -> list[Flow]:
        batch: list[Flow] = []
        for path in self.log.paths():
            # Open first and take the inode from the open file: a rotation between a stat and an open
            # by name would read one file at the offset of another (flows lost under load).
            try:
                f = path.open("rb")
            except FileNotFoundError:
                continue
            with f:
                ino = os.fstat(f.fileno()).st_ino
                off, flows = _read_from(f, self._offsets.get(ino, 0))
            self._offsets[ino] = off
            batch += [fl for fl in flows if fl.seq > self.since]
        batch.sort(key=lambda f: f.seq)
        if batch:
            self.seq = max(self.seq, batch[-1].seq)
        return batch


def _read_from(f: BinaryIO, offset: int) -> tuple[int, list[Flow]]:
    """The complete lines of the open file ``f`` after byte ``offset`` as flows, and the offset after
    them."""
    out: list[Flow] = []
    f.seek(offset)
    for raw in f:
        if not raw.endswith(b"\n"):
            break
        offset += len(raw)
        try:
            out.append(flow_from_json(json.loads(raw)))
        except (ValueError, KeyError, TypeError):
            continue
    return offset, out


def _read_file(path: Path, since_seq: int) -> Iterator[Flow]:
    try:
        with path.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    return  # being written, or cut short by a crash
                try:
                    data = json.loads(raw)
                    if int(data.get("seq", 0)) <= since_seq:
                        continue
                    yield flow_from_json(data)
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:  # rotated away between listing and opening
        return
