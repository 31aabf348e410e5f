"""ELF object → inspectable spec → loaded collection (maps pinned by name) → attached tc programs.

The spec comes from opening the object without loading it (no privileges needed), so it can be
printed and tested anywhere. Loading pins every map under ``pin_root`` (or reuses the pins already
there: a restarted process picks up the live state). Attaching uses tc/netlink filters with
``BPF_TC_F_REPLACE``: they survive the process (fail-static on a crash) and a re-attach swaps the
program atomically.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from cilia.datapath.bpf import build, libbpf
from cilia.datapath.bpf.libbpf import BPF_TC_EGRESS, BPF_TC_INGRESS, BpfObject, MapFd
from cilia.datapath.errors import DatapathError

# host-veth tc ingress = leaving the pod (egress policy); tc egress = entering the pod (ingress policy)
PROGRAMS: dict[str, int] = {"from_container": BPF_TC_INGRESS, "to_container": BPF_TC_EGRESS}
TC_HANDLE = 0xC11A
TC_PRIORITY = 1
DEFAULT_PIN_ROOT = "/sys/fs/bpf/cilia/v1"
BPFFS = "/sys/fs/bpf"


class LoadError(DatapathError, RuntimeError):
    """The datapath object could not be opened, loaded or pinned."""


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: str
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class ProgramSpec:
    name: str
    section: str


@dataclass(frozen=True)
class ObjectSpec:
    path: str
    programs: tuple[ProgramSpec, ...]
    maps: tuple[MapSpec, ...]

    def map(self, name: str) -> MapSpec:
        for m in self.maps:
            if m.name == name:
                return m
        raise KeyError(f"object {self.path} has no map {name}")


def _spec_of(obj: BpfObject) -> ObjectSpec:
    lb = libbpf.lib()
    maps = tuple(
        MapSpec(lb.bpf_map__name(p).decode(), libbpf.BPF_MAP_TYPE_NAMES.get(lb.bpf_map__type(p), "?"),
                lb.bpf_map__key_size(p), lb.bpf_map__value_size(p), lb.bpf_map__max_entries(p),
                lb.bpf_map__map_flags(p))
        for p in obj.map_ptrs()
    )
    progs = tuple(ProgramSpec(lb.bpf_program__name(p).decode(), lb.bpf_program__section_name(p).decode())
                  for p in obj.program_ptrs())
    return ObjectSpec(obj.path, progs, maps)


def load_spec(path: str | os.PathLike[str] | None = None) -> ObjectSpec:
    """The maps and programs of the (built) datapath object, without loading anything."""
    p = str(path or build.build())
    obj = BpfObject(p)
    try:
        return _spec_of(obj)
    finally:
        obj.close()


def ensure_bpffs() -> None:
    """Mount bpffs at /sys/fs/bpf if it is not mounted (as Cilium's agent does); left mounted."""
    if os.path.ismount(BPFFS):
        return
    import subprocess

    proc = subprocess.run(["mount", "-t", "bpf", "bpf", BPFFS], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LoadError(f"mount bpffs at {BPFFS}: {proc.stderr.strip()}")


class Collection:
    """A loaded datapath: program fds and map fds (maps pinned under ``pin_root``)."""

    def __init__(self, obj: BpfObject, spec: ObjectSpec, pin_root: str) -> None:
        self.obj, self.spec, self.pin_root = obj, spec, pin_root
        self.programs = {p.name: obj.program_fd(p.name) for p in spec.programs}
        self.maps = {m.name: MapFd(obj.map_fd(m.name), m.name, m.key_size, m.value_size) for m in spec.maps}

    def close(self) -> None:
        self.obj.close()


def load(pin_root: str = DEFAULT_PIN_ROOT, path: str | os.PathLike[str] | None = None) -> Collection:
    """Load the datapath, pinning its maps under ``pin_root`` or reusing the pins found there."""
    if not pin_root.startswith(BPFFS + "/"):
        raise LoadError(f"pin root {pin_root} is not under {BPFFS}")
    p = str(path or build.build())  # before creating anything: a failed build leaves no trace
    ensure_bpffs()
    Path(pin_root).mkdir(parents=True, exist_ok=True)
    obj = BpfObject(p, pin_root=pin_root)
    try:
        spec = _spec_of(obj)
        obj.load()
        return Collection(obj, spec, pin_root)
    except libbpf.BpfError as e:
        obj.close()
        hint = ""
        if e.errno == errno.EINVAL and any(Path(pin_root).iterdir()):
            # libbpf refuses to reuse a pinned map whose type, sizes or flags differ
            hint = (f"\n(maps pinned under {pin_root} may come from another cilia version; "
                    "remove them with `cilia down`, or use a new versioned pin directory)")
        raise LoadError(f"load datapath {p} (pins under {pin_root}): {e}{hint}") from e


def attach(coll: Collection, ifindex: int) -> dict[str, int]:
    """Attach both programs to a host veth (replacing ours atomically); returns program ids."""
    ids = {}
    for name, point in PROGRAMS.items():
        libbpf.tc_hook_create(ifindex, point)
        ids[name] = libbpf.tc_attach(ifindex, point, coll.programs[name], TC_HANDLE, TC_PRIORITY,
                                     replace=True)
    return ids


def attached(ifindex: int) -> dict[str, int | None]:
    """Program ids currently attached by cilia on the device (None: nothing there)."""
    return {name: libbpf.tc_query(ifindex, point, TC_HANDLE, TC_PRIORITY) for name, point in PROGRAMS.items()}


def detach(ifindex: int, destroy_qdisc: bool = False) -> bool:
    """Remove cilia's filters from the device; with ``destroy_qdisc`` also its clsact qdisc, but
    only on a device where a cilia filter was found. Returns whether a filter was removed."""
    removed = [libbpf.tc_detach(ifindex, point, TC_HANDLE, TC_PRIORITY) for point in PROGRAMS.values()]
    if destroy_qdisc and any(removed):
        libbpf.tc_hook_destroy(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)
    return any(removed)


def unpin_all(pin_root: str) -> list[str]:
    """Remove every pin under ``pin_root`` and the directory; returns the removed names."""
    root = Path(pin_root)
    if not root.exists():
        return []
    removed = []
    for p in sorted(root.iterdir()):
        p.unlink()
        removed.append(p.name)
    root.rmdir()
    # empty parents up to bpffs (e.g. /sys/fs/bpf/cilia) go too; a non-empty one stops the walk
    parent = root.parent
    while parent != Path(BPFFS) and parent.is_relative_to(BPFFS):
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
    return removed
