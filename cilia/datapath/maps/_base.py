"""What every map module shares: opening a map by its pin and checking the layout matches."""

from __future__ import annotations

import ctypes
import os
from ctypes import Structure

from cilia.datapath.bpf.libbpf import MapFd, obj_get


class MapLayoutError(RuntimeError):
    """A map's key or value size differs from the layout this module expects."""


def open_map(pin_root: str, name: str, key_type: type, value_size: int) -> MapFd:
    """Open the pinned map ``pin_root/name`` with a fresh fd owned by the returned object."""
    fd = obj_get(os.path.join(pin_root, name))
    return MapFd(fd, name, ctypes.sizeof(key_type), value_size, owned=True)


def check_layout(m: MapFd, key_type: type[Structure], value_size: int) -> None:
    if m.key_size != ctypes.sizeof(key_type) or m.value_size != value_size:
        raise MapLayoutError(
            f"map {m.name}: kernel sizes key={m.key_size} value={m.value_size}, "
            f"this cilia expects key={ctypes.sizeof(key_type)} value={value_size}"
        )
