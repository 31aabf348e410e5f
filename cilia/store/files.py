"""Private, durable state files: mode 0600 in 0700 directories, replaced atomically.

Every file the agent, the CLI and the lab keep (store, DNS cache, endpoint table, events, logs)
can name policies, pods and the names pods looked up, so only root reads them. A state file is
written to a temporary file beside it, fsynced, renamed over the old one and the directory fsynced:
after a crash or power loss the file holds the old or the new content, never a mix or nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import IO, Any

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path | str) -> Path:
    """``path`` as a directory of mode 0700 (created with missing parents, each 0700; an existing
    directory is narrowed to 0700). Returns the path."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(d, DIR_MODE)
    mode = path.stat().st_mode
    # a shared directory (sticky or world-writable, like /tmp) is never narrowed: not ours alone
    if mode & 0o777 != DIR_MODE and not mode & (stat.S_ISVTX | stat.S_IWOTH):
        os.chmod(path, DIR_MODE)
    return path


def fsync_dir(path: Path | str) -> None:
    """Make a rename or a new entry in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path | str, data: bytes | str, *, durable: bool = True) -> None:
    """Replace ``path`` atomically and durably with ``data``; the file is 0600, its directory 0700.
    ``durable=False`` skips the fsyncs (still atomic and private): for records under the run
    directory, which a reboot clears anyway and which are written several times per pod."""
    path = Path(path)
    private_dir(path.parent)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # a temp file left by a crash may exist with other bits
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:  # cleanup and re-raise: no descriptor or temporary file left behind
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def write_json(path: Path | str, value: Any, *, durable: bool = True, **dumps: Any) -> None:
    """:func:`write_private` of ``json.dumps(value, **dumps)``."""
    write_private(path, json.dumps(value, **dumps), durable=durable)


def open_private(path: Path | str, mode: str = "a", **kwargs: Any) -> IO[Any]:
    """Open ``path`` for appending (``"a"``/``"ab"``) as a 0600 file in a 0700 directory; a file that
    exists with wider bits (made by an older version) is narrowed first."""
    if mode not in ("a", "ab"):
        raise ValueError(f"open_private appends only; got mode {mode!r}")
    path = Path(path)
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:  # cleanup and re-raise: the descriptor is ours until fdopen owns it
        os.close(fd)
        raise


def restrict(path: Path | str) -> None:
    """Narrow an existing file to 0600 (nothing if it does not exist)."""
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_mode & 0o777 != FILE_MODE:
            os.chmod(path, FILE_MODE)
