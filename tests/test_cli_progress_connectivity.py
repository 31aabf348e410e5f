"""connectivity's spinner (issue 15 item 8): drawn on stderr when it is a terminal and the input is
big, never when stderr is piped; stdout is the same either way."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import yaml

from bench.connectivity_bench import generate_documents
from cilia.cli.progress import MIN_OBJECTS


def _run(args: list[str], stderr: int) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "cilia", *args], stdout=subprocess.PIPE, stderr=stderr,
                          env=env, timeout=120, check=False)


def _read_all(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed and everything was read
            return out
        if not chunk:
            return out
        out += chunk


def test_connectivity_spinner_only_on_a_terminal(tmp_path: Path) -> None:
    f = tmp_path / "big.yaml"
    f.write_text(yaml.safe_dump_all(generate_documents(pods=MIN_OBJECTS, namespaces=4, policies=4)))
    args = ["connectivity", "-f", str(f), "-o", "csv"]
    master, slave = pty.openpty()
    try:
        try:
            on_tty = _run(args, slave)
        finally:
            os.close(slave)
        screen = _read_all(master).decode(errors="replace")
    finally:
        os.close(master)
    piped = _run(args, subprocess.PIPE)
    assert on_tty.returncode == piped.returncode == 0
    assert f"computing the connectivity of {MIN_OBJECTS} pods" in screen
    assert piped.stderr == b"" and on_tty.stdout == piped.stdout and piped.stdout.count(b"\n") > MIN_OBJECTS
