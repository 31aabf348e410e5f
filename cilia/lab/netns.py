"""Network namespaces by name (/run/netns, as ``ip netns`` keeps them) and entering them per thread.

``setns(CLONE_NEWNET)`` changes only the calling thread, so a thread can step into a pod,
create sockets (they stay in that namespace for life) and step back, while the rest of the
process stays in the node's namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

from cilia.lab.errors import LabError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def path_of(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path_of(name).exists()


def names() -> list[str]:
    """Names of all named network namespaces on this machine."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def create(name: str) -> None:
    if exists(name):
        raise LabError(f"network namespace {name} already exists")
    from pyroute2 import netns as pr_netns  # here, so the workload daemon never loads pyroute2

    try:
        pr_netns.create(name)
    except OSError as e:
        raise LabError(f"create network namespace {name}: {e}") from e


def remove(name: str) -> None:
    """Remove a named namespace (no error if it is already gone)."""
    from pyroute2 import netns as pr_netns

    if exists(name):
        with contextlib.suppress(FileNotFoundError):
            pr_netns.remove(name)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block with this thread in namespace ``name``; always returns to where it was."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path_of(name), os.O_RDONLY)
    except FileNotFoundError:
        os.close(home)
        raise LabError(f"network namespace {name} does not exist") from None
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
