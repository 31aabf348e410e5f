"""tcx links (kernel >= 6.6) through the raw bpf(2) syscall: libbpf 1.1 has no helper for them.

A tcx link attaches a program to a device's ingress or egress without a qdisc; it lives as long as
something holds it — here a pin in bpffs — so the programs outlive the process (fail-static), and
``BPF_LINK_UPDATE`` on the pinned link swaps the program atomically (a restarted agent).

The numbers below are the running kernel's (its BTF, /sys/kernel/btf/vmlinux): the uapi headers
installed on Debian 12 (6.1) predate tcx. Layouts of ``union bpf_attr`` members as in 6.18.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from ctypes import Structure, c_uint32, c_uint64

from cilia.datapath.bpf.libbpf import BpfError

NR_BPF = 321  # x86_64
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_LINK_CREATE, BPF_LINK_UPDATE = 28, 29
BPF_LINK_GET_FD_BY_ID = 30
BPF_LINK_DETACH = 34
BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47
BPF_LINK_TYPE_TCX = 11
BPF_F_BEFORE = 1 << 3  # link_create: ahead of the device's other tcx programs


class LinkCreateAttr(Structure):
    _fields_ = [("prog_fd", c_uint32), ("target_ifindex", c_uint32), ("attach_type", c_uint32),
                ("flags", c_uint32), ("relative_fd", c_uint32), ("_pad", c_uint32),
                ("expected_revision", c_uint64)]


class LinkUpdateAttr(Structure):
    _fields_ = [("link_fd", c_uint32), ("new_prog_fd", c_uint32), ("flags", c_uint32),
                ("old_prog_fd", c_uint32)]


class GetInfoAttr(Structure):
    _fields_ = [("bpf_fd", c_uint32), ("info_len", c_uint32), ("info", c_uint64)]


class ByIdAttr(Structure):
    _fields_ = [("id", c_uint32), ("next_id", c_uint32), ("open_flags", c_uint32)]


class QueryAttr(Structure):
    _fields_ = [("target_ifindex", c_uint32), ("attach_type", c_uint32), ("query_flags", c_uint32),
                ("attach_flags", c_uint32), ("prog_ids", c_uint64), ("count", c_uint32), ("_pad", c_uint32),
                ("prog_attach_flags", c_uint64), ("link_ids", c_uint64), ("link_attach_flags", c_uint64),
                ("revision", c_uint64)]


class LinkDetachAttr(Structure):
    _fields_ = [("link_fd", c_uint32)]


assert ctypes.sizeof(LinkCreateAttr) == 32 and LinkCreateAttr.expected_revision.offset == 24
assert ctypes.sizeof(QueryAttr) == 64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_INFO_SIZE = 256  # larger than any kernel's bpf_link_info / bpf_prog_info head we read; tail zeroed
_supported: bool | None = None


def _bpf(cmd: int, attr: Structure, what: str) -> int:
    ret = _libc.syscall(NR_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        raise BpfError(what, ctypes.get_errno())
    return int(ret)


def link_create(prog_fd: int, ifindex: int, attach_type: int, flags: int = 0) -> int:
    """A new tcx link of the program on the device (appended after the ones there, or first with
    :data:`BPF_F_BEFORE`); its fd."""
    global _supported
    a = LinkCreateAttr(prog_fd=prog_fd, target_ifindex=ifindex, attach_type=attach_type, flags=flags)
    fd = _bpf(BPF_LINK_CREATE, a, f"create tcx link on ifindex {ifindex}")
    _supported = True
    return fd


def link_update(link_fd: int, prog_fd: int) -> None:
    """Swap the link's program atomically (no packet sees neither)."""
    _bpf(BPF_LINK_UPDATE, LinkUpdateAttr(link_fd=link_fd, new_prog_fd=prog_fd), "update tcx link")


def link_detach(link_fd: int) -> None:
    """Detach the link from its device (pins and fds of it stay, defunct)."""
    _bpf(BPF_LINK_DETACH, LinkDetachAttr(link_fd=link_fd), "detach tcx link")


def _info(fd: int, what: str) -> bytes:
    buf = ctypes.create_string_buffer(_INFO_SIZE)
    attr = GetInfoAttr(bpf_fd=fd, info_len=_INFO_SIZE, info=ctypes.addressof(buf))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, what)
    return buf.raw


def link_info(link_fd: int) -> tuple[int, int, int, int]:
    """(link type, program id, ifindex, attach type) of a link; ifindex 0 once the device is gone."""
    raw = _info(link_fd, "link info")
    t, _id, prog_id = (int.from_bytes(raw[i:i + 4], "little") for i in (0, 4, 8))
    # the union after the three u32 is 8-byte aligned: tcx.ifindex at 16, tcx.attach_type at 20
    return t, prog_id, int.from_bytes(raw[16:20], "little"), int.from_bytes(raw[20:24], "little")


def prog_name(prog_id: int) -> str | None:
    """The name of a loaded program (bpf_prog_info.name, at offset 64), or None when it is gone."""
    try:
        fd = _bpf(BPF_PROG_GET_FD_BY_ID, ByIdAttr(id=prog_id), f"open program {prog_id}")
    except BpfError:
        return None
    try:
        return _info(fd, f"program {prog_id} info")[64:80].split(b"\0", 1)[0].decode()
    finally:
        os.close(fd)


def query(ifindex: int, attach_type: int) -> list[tuple[int, int]]:
    """(program id, link id) of every tcx program on the device's hook, in run order."""
    for cap in (16, 256):
        progs, links = (c_uint32 * cap)(), (c_uint32 * cap)()
        a = QueryAttr(target_ifindex=ifindex, attach_type=attach_type, count=cap,
                      prog_ids=ctypes.addressof(progs), link_ids=ctypes.addressof(links))
        try:
            _bpf(BPF_PROG_QUERY, a, f"query tcx on ifindex {ifindex}")
        except BpfError as e:
            if e.errno == _errno.ENOSPC and cap == 16:
                continue
            if e.errno in (_errno.ENODEV, _errno.EINVAL):
                return []
            raise
        return [(int(progs[i]), int(links[i])) for i in range(a.count)]
    return []


def link_by_id(link_id: int) -> int | None:
    """An fd of the link with that id (None: gone)."""
    try:
        return _bpf(BPF_LINK_GET_FD_BY_ID, ByIdAttr(id=link_id), f"open link {link_id}")
    except BpfError:
        return None


def supported() -> bool | None:
    """Whether a tcx link was created (True) or refused (False) in this process; None: not tried."""
    return _supported


def mark_unsupported() -> None:
    global _supported
    _supported = False
