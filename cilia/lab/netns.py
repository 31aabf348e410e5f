"""Network namespaces by name (/run/netns, as ``ip netns`` keeps them) and entering them per thread.

``setns(CLONE_NEWNET)`` changes only the calling thread, so a thread can step into a pod,
create sockets (they stay in that namespace for life) and step back, while the rest of the
process stays in the node's namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
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


MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
_shared_done = False
_shared_lock = threading.Lock()


def _mount(source: str, target: str, flags: int) -> int:
    return int(_libc.mount(source.encode(), target.encode(), b"none", flags, None))


def _share_netns_dir() -> None:
    """Make /run/netns a shared mount point, as ``ip netns add`` does, so a namespace bound there
    is visible from every mount namespace."""
    global _shared_done
    with _shared_lock:
        if _shared_done:
            return
        NETNS_DIR.mkdir(parents=True, exist_ok=True)
        d = str(NETNS_DIR)
        # Not a mount point yet: bind it onto itself first, then mark it shared.
        if _mount("", d, MS_SHARED | MS_REC) != 0 and (
            _mount(d, d, MS_BIND | MS_REC) != 0 or _mount("", d, MS_SHARED | MS_REC) != 0
        ):
            raise LabError(f"make {d} a shared mount: {os.strerror(ctypes.get_errno())}")
        _shared_done = True


def create(name: str) -> None:
    """Create the named namespace ``/run/netns/<name>`` (what ``ip netns add`` does), in-process."""
    _share_netns_dir()
    path = path_of(name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise LabError(f"network namespace {name} already exists") from None
    failure: list[str] = []

    def bind_new_namespace() -> None:
        # A throw-away thread unshares, so no thread that keeps running ever changes namespace.
        if _libc.unshare(CLONE_NEWNET) != 0:
            failure.append(f"unshare: {os.strerror(ctypes.get_errno())}")
        elif _mount("/proc/thread-self/ns/net", str(path), MS_BIND) != 0:
            failure.append(f"bind mount: {os.strerror(ctypes.get_errno())}")

    t = threading.Thread(target=bind_new_namespace, name="cilia-netns-create")
    t.start()
    t.join()
    if failure:
        path.unlink(missing_ok=True)
        raise LabError(f"create network namespace {name}: {failure[0]}")


def remove(name: str) -> None:
    """Remove a named namespace (no error if it is already gone)."""
    path = path_of(name)
    if path.exists():
        _libc.umount2(str(path).encode(), MNT_DETACH)
        path.unlink(missing_ok=True)


def exec_argv(name: str) -> list[str]:
    """The command prefix that runs a program in namespace ``name`` as a pod's programs run:
    ``ip netns exec`` (a private mount namespace, each file of ``/etc/netns/<name>/`` bind-mounted
    over its namesake in ``/etc``: the pod's resolv.conf and hosts, :mod:`cilia.lab.podfiles`)."""
    return ["ip", "netns", "exec", name]


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
