"""A small ctypes binding to the system libbpf (``libbpf.so.1``, 1.1 or newer).

Only what cilia uses: objects (open with ``pin_root_path``, load, close, find program/map), map
operations (single and batch), pins, tc hooks, ring buffers and ``bpf_prog_test_run_opts``.
Pointers come back as ``c_void_p``; opts structs carry their exact ``sz``; errors raise
:class:`BpfError` naming what was being done (``update map cilia_policy: E2BIG``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import threading
from collections.abc import Callable
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)

from cilia.datapath.errors import DatapathError

BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
BPF_TC_F_REPLACE = 1

BPF_MAP_TYPE_NAMES = {
    1: "hash",
    2: "array",
    6: "percpu_array",
    9: "lru_hash",
    11: "lpm_trie",
    27: "ringbuf",
}


class BpfError(DatapathError, OSError):
    """A libbpf/bpf(2) call failed; the message names the operation and the errno."""

    def __init__(self, what: str, err: int) -> None:
        self.what = what
        name = _errno.errorcode.get(err, str(err))
        super().__init__(err, f"{what}: {name} ({os.strerror(err)})")


class LibbpfMissingError(DatapathError, RuntimeError):
    """The system libbpf shared library could not be loaded."""


class ObjectOpenOpts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("object_name", c_char_p),
        ("relaxed_maps", c_bool),
        ("pin_root_path", c_char_p),
        ("_removed_attach_prog_fd", c_uint32),
        ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p),
        ("kernel_log_buf", c_char_p),
        ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_uint32),
    ]


class TcHook(Structure):
    _fields_ = [("sz", c_size_t), ("ifindex", c_int), ("attach_point", c_int), ("parent", c_uint32)]


class TcOpts(Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("prog_fd", c_int),
        ("flags", c_uint32),
        ("prog_id", c_uint32),
        ("handle", c_uint32),
        ("priority", c_uint32),
    ]


class MapBatchOpts(Structure):
    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


class TestRunOpts(Structure):
    __test__ = False
    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


class SkBuff(Structure):
    """``struct __sk_buff`` (192 bytes); only the fields test runs set are named."""

    _fields_ = [
        ("len", c_uint32),
        ("pkt_type", c_uint32),
        ("mark", c_uint32),
        ("queue_mapping", c_uint32),
        ("protocol", c_uint32),
        ("vlan_present", c_uint32),
        ("vlan_tci", c_uint32),
        ("vlan_proto", c_uint32),
        ("priority", c_uint32),
        ("ingress_ifindex", c_uint32),
        ("ifindex", c_uint32),
        ("_rest", ctypes.c_uint8 * (192 - 44)),
    ]


# sizes checked against the 1.1.2 headers (datapath-notes §1)
assert ctypes.sizeof(ObjectOpenOpts) == 80
assert ctypes.sizeof(TcHook) == 24
assert ctypes.sizeof(TcOpts) == 32
assert ctypes.sizeof(MapBatchOpts) == 24
assert ctypes.sizeof(TestRunOpts) == 80
assert ctypes.sizeof(SkBuff) == 192 and SkBuff.ifindex.offset == 40

RingCallback = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)
PrintCallback = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)

_lib: ctypes.CDLL | None = None
_libc: ctypes.CDLL | None = None
_lock = threading.Lock()
_print_cb: object = None
_log_lines: list[str] = []

_SIGS: dict[str, tuple[object, list[object]]] = {
    "bpf_object__open_file": (c_void_p, [c_char_p, POINTER(ObjectOpenOpts)]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
    "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
    "bpf_program__fd": (c_int, [c_void_p]),
    "bpf_program__name": (c_char_p, [c_void_p]),
    "bpf_program__section_name": (c_char_p, [c_void_p]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_map__name": (c_char_p, [c_void_p]),
    "bpf_map__type": (c_int, [c_void_p]),
    "bpf_map__key_size": (c_uint32, [c_void_p]),
    "bpf_map__value_size": (c_uint32, [c_void_p]),
    "bpf_map__max_entries": (c_uint32, [c_void_p]),
    "bpf_map__map_flags": (c_uint32, [c_void_p]),
    "bpf_map__pin_path": (c_char_p, [c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_update_batch": (c_int, [c_int, c_void_p, c_void_p, POINTER(c_uint32), POINTER(MapBatchOpts)]),
    "bpf_map_delete_batch": (c_int, [c_int, c_void_p, POINTER(c_uint32), POINTER(MapBatchOpts)]),
    "bpf_map_create": (c_int, [c_int, c_char_p, c_uint32, c_uint32, c_uint32, c_void_p]),
    "bpf_obj_pin": (c_int, [c_int, c_char_p]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "bpf_tc_hook_create": (c_int, [POINTER(TcHook)]),
    "bpf_tc_hook_destroy": (c_int, [POINTER(TcHook)]),
    "bpf_tc_attach": (c_int, [POINTER(TcHook), POINTER(TcOpts)]),
    "bpf_tc_detach": (c_int, [POINTER(TcHook), POINTER(TcOpts)]),
    "bpf_tc_query": (c_int, [POINTER(TcHook), POINTER(TcOpts)]),
    "ring_buffer__new": (c_void_p, [c_int, RingCallback, c_void_p, c_void_p]),
    "ring_buffer__poll": (c_int, [c_void_p, c_int]),
    "ring_buffer__consume": (c_int, [c_void_p]),
    "ring_buffer__free": (None, [c_void_p]),
    "bpf_prog_test_run_opts": (c_int, [c_int, POINTER(TestRunOpts)]),
    "libbpf_set_print": (c_void_p, [PrintCallback]),
    "libbpf_num_possible_cpus": (c_int, []),
}


def lib() -> ctypes.CDLL:
    """The loaded libbpf with every used symbol typed (loaded once per process)."""
    global _lib, _libc, _print_cb
    with _lock:
        if _lib is not None:
            return _lib
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            handle = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise LibbpfMissingError(
                f"cannot load libbpf ({name}): {e}; install libbpf1 (apt-get install libbpf1)"
            ) from e
        for sym, (restype, argtypes) in _SIGS.items():
            fn = getattr(handle, sym)
            fn.restype = restype
            fn.argtypes = argtypes
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        _libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]

        def _printer(level: int, fmt: bytes, args: int) -> int:
            buf = ctypes.create_string_buffer(1024)
            assert _libc is not None
            _libc.vsnprintf(buf, 1024, fmt, args)
            line = buf.value.decode(errors="replace").rstrip()
            # tc hook creation on the second side of a device reports an expected EEXIST
            if "Exclusivity flag on" not in line and level <= 0:  # 0 = LIBBPF_WARN
                _log_lines.append(line)
                del _log_lines[:-200]
            return 0

        _print_cb = PrintCallback(_printer)  # kept referenced: the trampoline must outlive the call
        handle.libbpf_set_print(_print_cb)
        _lib = handle
        return handle


def recent_log() -> list[str]:
    """The last warnings libbpf printed (verifier output on a failed load ends up here)."""
    return list(_log_lines)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        raise BpfError(what, -ret)
    return ret


def _check_ptr(ptr: int | None, what: str) -> int:
    if not ptr:
        raise BpfError(what, ctypes.get_errno() or _errno.EINVAL)
    return ptr


def num_possible_cpus() -> int:
    """CPUs the kernel may bring up: per-CPU map values have this many slots."""
    return _check(lib().libbpf_num_possible_cpus(), "count possible cpus")


class BpfObject:
    """An opened (and optionally loaded) BPF ELF object."""

    def __init__(self, path: str, pin_root: str | None = None) -> None:
        self.path = path
        opts = ObjectOpenOpts(sz=ctypes.sizeof(ObjectOpenOpts))
        if pin_root:
            opts.pin_root_path = pin_root.encode()
        self._ptr: int | None = _check_ptr(
            lib().bpf_object__open_file(path.encode(), ctypes.byref(opts)), f"open object {path}"
        )
        self.loaded = False

    def _p(self) -> int:
        if self._ptr is None:
            raise ValueError(f"object {self.path} is closed")
        return self._ptr

    def load(self) -> None:
        """Create (or reuse pinned) maps and load the programs into the kernel."""
        ret = lib().bpf_object__load(self._p())
        if ret < 0:
            log = "\n".join(recent_log()[-30:])
            raise BpfError(f"load object {self.path}" + (f"\n{log}" if log else ""), -ret)
        self.loaded = True

    def close(self) -> None:
        if self._ptr is not None:
            lib().bpf_object__close(self._ptr)
            self._ptr = None

    def map_ptrs(self) -> list[int]:
        out, cur = [], None
        while True:
            cur = lib().bpf_object__next_map(self._p(), cur)
            if not cur:
                return out
            out.append(cur)

    def program_ptrs(self) -> list[int]:
        out, cur = [], None
        while True:
            cur = lib().bpf_object__next_program(self._p(), cur)
            if not cur:
                return out
            out.append(cur)

    def program_fd(self, name: str) -> int:
        prog = _check_ptr(lib().bpf_object__find_program_by_name(self._p(), name.encode()),
                          f"find program {name}")
        return _check(lib().bpf_program__fd(prog), f"program fd {name}")

    def map_fd(self, name: str) -> int:
        m = _check_ptr(lib().bpf_object__find_map_by_name(self._p(), name.encode()), f"find map {name}")
        return _check(lib().bpf_map__fd(m), f"map fd {name}")


class MapFd:
    """Raw byte-level operations on one map fd; the map modules put typed layouts on top."""

    def __init__(self, fd: int, name: str, key_size: int, value_size: int, owned: bool = False) -> None:
        self.fd, self.name, self.key_size, self.value_size = fd, name, key_size, value_size
        self.owned = owned

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def update(self, key: object, value: object, flags: int = BPF_ANY) -> None:
        ret = lib().bpf_map_update_elem(self.fd, ctypes.byref(key), ctypes.byref(value), flags)  # type: ignore[arg-type]
        if ret < 0:
            raise BpfError(f"update map {self.name}", -ret)

    def lookup(self, key: object, value: object) -> bool:
        """Fill ``value``; False when the key is absent."""
        ret = lib().bpf_map_lookup_elem(self.fd, ctypes.byref(key), ctypes.byref(value))  # type: ignore[arg-type]
        if ret == -_errno.ENOENT:
            return False
        _check(ret, f"lookup map {self.name}")
        return True

    def delete(self, key: object) -> bool:
        """Delete; False when the key was absent."""
        ret = lib().bpf_map_delete_elem(self.fd, ctypes.byref(key))  # type: ignore[arg-type]
        if ret == -_errno.ENOENT:
            return False
        _check(ret, f"delete from map {self.name}")
        return True

    def keys(self, key_type: type[Structure]) -> list[Structure]:
        """Every key, by get_next_key (a snapshot; concurrent changes may be missed or repeated)."""
        out: list[Structure] = []
        prev = None
        while True:
            nxt = key_type()
            ret = lib().bpf_map_get_next_key(self.fd, ctypes.byref(prev) if prev is not None else None,
                                             ctypes.byref(nxt))
            if ret == -_errno.ENOENT:
                return out
            _check(ret, f"iterate map {self.name}")
            out.append(nxt)
            prev = nxt

    def update_batch(self, keys: ctypes.Array, values: ctypes.Array, count: int) -> None:
        if count == 0:
            return
        n = c_uint32(count)
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts))
        ret = lib().bpf_map_update_batch(self.fd, keys, values, ctypes.byref(n), ctypes.byref(opts))
        if ret < 0:
            raise BpfError(f"batch update map {self.name} ({n.value}/{count} done)", -ret)

    def delete_batch(self, keys: ctypes.Array, count: int) -> None:
        if count == 0:
            return
        n = c_uint32(count)
        opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts))
        ret = lib().bpf_map_delete_batch(self.fd, keys, ctypes.byref(n), ctypes.byref(opts))
        if ret < 0:
            raise BpfError(f"batch delete from map {self.name} ({n.value}/{count} done)", -ret)


def map_create(map_type: int, name: str, key_size: int, value_size: int, max_entries: int) -> int:
    """Create a map outside any object (default options); returns its fd."""
    return _check(lib().bpf_map_create(map_type, name.encode(), key_size, value_size, max_entries, None),
                  f"create map {name}")


def obj_get(path: str) -> int:
    """Open a pinned object; returns a new fd."""
    return _check(lib().bpf_obj_get(path.encode()), f"open pin {path}")


def obj_pin(fd: int, path: str) -> None:
    _check(lib().bpf_obj_pin(fd, path.encode()), f"pin {path}")


def _hook(ifindex: int, attach_point: int) -> TcHook:
    return TcHook(sz=ctypes.sizeof(TcHook), ifindex=ifindex, attach_point=attach_point, parent=0)


def tc_hook_create(ifindex: int, attach_point: int) -> None:
    """Create the clsact qdisc (EEXIST, i.e. already there, is success)."""
    h = _hook(ifindex, attach_point)
    ret = lib().bpf_tc_hook_create(ctypes.byref(h))
    if ret < 0 and ret != -_errno.EEXIST:
        raise BpfError(f"create tc hook on ifindex {ifindex}", -ret)


def tc_hook_destroy(ifindex: int, attach_point: int) -> None:
    """Destroy a hook; with INGRESS|EGRESS this removes the whole clsact qdisc."""
    h = _hook(ifindex, attach_point)
    ret = lib().bpf_tc_hook_destroy(ctypes.byref(h))
    if ret < 0 and ret not in (-_errno.ENOENT, -_errno.ENODEV, -_errno.EINVAL):
        raise BpfError(f"destroy tc hook on ifindex {ifindex}", -ret)


def tc_attach(ifindex: int, attach_point: int, prog_fd: int, handle: int, priority: int,
              replace: bool = True) -> int:
    """Attach (atomically replacing when asked); returns the attached program id."""
    h = _hook(ifindex, attach_point)
    o = TcOpts(sz=ctypes.sizeof(TcOpts), prog_fd=prog_fd, flags=BPF_TC_F_REPLACE if replace else 0,
               handle=handle, priority=priority)
    _check(lib().bpf_tc_attach(ctypes.byref(h), ctypes.byref(o)), f"attach tc program to ifindex {ifindex}")
    return int(o.prog_id)


def tc_detach(ifindex: int, attach_point: int, handle: int, priority: int) -> bool:
    """Detach one filter; False when it was not there."""
    h = _hook(ifindex, attach_point)
    o = TcOpts(sz=ctypes.sizeof(TcOpts), handle=handle, priority=priority)
    ret = lib().bpf_tc_detach(ctypes.byref(h), ctypes.byref(o))
    if ret in (-_errno.ENOENT, -_errno.ENODEV, -_errno.EINVAL):
        return False
    _check(ret, f"detach tc program from ifindex {ifindex}")
    return True


def tc_query(ifindex: int, attach_point: int, handle: int, priority: int) -> int | None:
    """The program id attached at (handle, priority), or None."""
    h = _hook(ifindex, attach_point)
    o = TcOpts(sz=ctypes.sizeof(TcOpts), handle=handle, priority=priority)
    ret = lib().bpf_tc_query(ctypes.byref(h), ctypes.byref(o))
    if ret in (-_errno.ENOENT, -_errno.ENODEV, -_errno.EINVAL):
        return None
    _check(ret, f"query tc program on ifindex {ifindex}")
    return int(o.prog_id)


class RingBuffer:
    """A libbpf ring buffer over one map fd; ``callback(bytes)`` runs in the polling thread."""

    def __init__(self, map_fd: int, callback: Callable[[bytes], None]) -> None:
        def _cb(_ctx: int, data: int, size: int) -> int:
            try:
                callback(ctypes.string_at(data, size))  # data is only valid during the call
            except Exception as e:  # a raised exception would be printed and lost by ctypes
                self.errors.append(e)
            return 0

        self.errors: list[Exception] = []
        self._cb = RingCallback(_cb)  # kept referenced for the lifetime of the ring buffer
        self._ptr: int | None = _check_ptr(lib().ring_buffer__new(map_fd, self._cb, None, None),
                                           "open ring buffer")

    def poll(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` and consume; returns the number of records."""
        if self._ptr is None:
            raise ValueError("ring buffer is closed")
        ret = lib().ring_buffer__poll(self._ptr, timeout_ms)
        if ret == -_errno.EINTR:
            return 0
        return _check(ret, "poll ring buffer")

    def close(self) -> None:
        if self._ptr is not None:
            lib().ring_buffer__free(self._ptr)
            self._ptr = None


def test_run(prog_fd: int, packet: bytes, ifindex: int = 0, repeat: int = 1) -> tuple[int, int]:
    """Run a program on a crafted packet in the kernel; returns (retval, ns per run)."""
    data = ctypes.create_string_buffer(packet, len(packet))
    out = ctypes.create_string_buffer(len(packet) + 256)
    ctx = SkBuff(ifindex=ifindex)
    opts = TestRunOpts(
        sz=ctypes.sizeof(TestRunOpts),
        data_in=ctypes.cast(data, c_void_p),
        data_size_in=len(packet),
        data_out=ctypes.cast(out, c_void_p),
        data_size_out=len(out),
        ctx_in=ctypes.cast(ctypes.pointer(ctx), c_void_p),
        ctx_size_in=ctypes.sizeof(ctx),
        repeat=repeat,
    )
    _check(lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "test-run program")
    return int(opts.retval), int(opts.duration)


