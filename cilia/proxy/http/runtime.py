"""HAProxy's runtime API (the stats socket, ``level admin``): the calls cilia makes at run time.

* :func:`load_rules` — ``cilia load FILE`` (a command ``cilia.lua`` registers): the new rules
  document replaces the old one atomically; the next request of every connection is decided by it.
* :func:`replace_map` — ``prepare map`` / ``add map @VER`` / ``commit map @VER``: the ipcache map
  (address or prefix → identity) and the decision map (:func:`replace_map_entries`, in order) are
  swapped in one step, never seen half-written.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from cilia.proxy.errors import ProxyError

TIMEOUT_S = 5.0
CHUNK = 500  # map entries per "add map" payload


class RuntimeAPIError(ProxyError, RuntimeError):
    """HAProxy's runtime API refused a command or could not be reached."""


def command(sock_path: Path, line: str, timeout: float = TIMEOUT_S) -> str:
    """Send one command (a payload may follow after ``<<`` and a newline) and return the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(sock_path))
            s.sendall(line.encode() + (b"\n" if not line.endswith("\n") else b""))
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except OSError as e:
            raise RuntimeAPIError(f"haproxy runtime API {sock_path}: {line.split()[0:3]}: {e}") from None
    return b"".join(chunks).decode(errors="replace")


def load_rules(sock_path: Path, rules_path: Path) -> int:
    """Load the rules document at ``rules_path``; return its version as HAProxy reports it."""
    answer = command(sock_path, f"cilia load {rules_path}").strip()
    if not answer.startswith("OK "):
        raise RuntimeAPIError(f"cilia load {rules_path}: {answer or 'no answer'}")
    return int(answer.split()[1])


def rules_version(sock_path: Path, timeout: float = TIMEOUT_S) -> int:
    """The version of the rules document in force (also a liveness check)."""
    answer = command(sock_path, "cilia version", timeout).strip()
    try:
        return int(answer)
    except ValueError:
        raise RuntimeAPIError(f"cilia version: {answer or 'no answer'}") from None


def replace_map(sock_path: Path, map_path: Path, entries: Mapping[str, int | str]) -> None:
    """Replace every entry of the map loaded from ``map_path`` in one atomic commit."""
    replace_map_entries(sock_path, map_path, sorted(entries.items()))


def replace_map_entries(sock_path: Path, map_path: Path, items: Sequence[tuple[str, int | str]]) -> None:
    """:func:`replace_map` keeping the entries' order (a ``map_reg`` map matches in that order)."""
    answer = command(sock_path, f"prepare map {map_path}")
    if "New version created:" not in answer:
        raise RuntimeAPIError(f"prepare map {map_path}: {answer.strip()}")
    version = int(answer.rsplit(":", 1)[1])
    for i in range(0, len(items), CHUNK):
        payload = "".join(f"{k} {v}\n" for k, v in items[i : i + CHUNK])
        answer = command(sock_path, f"add map @{version} {map_path} <<\n{payload}\n")
        if answer.strip():
            raise RuntimeAPIError(f"add map @{version} {map_path}: {answer.strip()}")
    answer = command(sock_path, f"commit map @{version} {map_path}")
    if answer.strip():
        raise RuntimeAPIError(f"commit map @{version} {map_path}: {answer.strip()}")


def map_text(entries: Mapping[str, int | str]) -> str:
    """The map file's text (what HAProxy loads at start)."""
    return "".join(f"{k} {v}\n" for k, v in sorted(entries.items()))
