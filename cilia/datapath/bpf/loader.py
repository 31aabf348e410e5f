"""ELF object → inspectable spec → loaded collection (maps pinned by name) → attached tc programs.

The spec comes from opening the object without loading it (no privileges needed), so it can be
printed and tested anywhere. Loading pins every map under ``pin_root`` (or reuses the pins already
there: a restarted process picks up the live state). Attaching uses tcx links (kernel >= 6.6, see
tcx.py) pinned under ``pin_root`` as ``cilia_link_<ifindex>_<program>``: they survive the process
(fail-static on a crash) and a re-attach updates the pinned link, swapping the program atomically.
Where the kernel has no tcx (or ``CILIA_ATTACH=tc``) it falls back to tc/netlink filters on a clsact
qdisc with ``BPF_TC_F_REPLACE``, which behave the same way. Moving a device from one to the other
attaches the new first, then removes the old (both run for a moment; neither is ever missing).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from cilia.datapath.bpf import build, libbpf, tcx
from cilia.datapath.bpf.libbpf import BPF_TC_EGRESS, BPF_TC_INGRESS, BpfObject, MapFd
from cilia.datapath.errors import DatapathError

# host-veth tc ingress = leaving the pod (egress policy); tc egress = entering the pod (ingress policy)
PROGRAMS: dict[str, int] = {"from_container": BPF_TC_INGRESS, "to_container": BPF_TC_EGRESS}
TC_HANDLE = 0xC11A
TC_PRIORITY = 1
TCX_POINTS: dict[str, int] = {"from_container": tcx.BPF_TCX_INGRESS, "to_container": tcx.BPF_TCX_EGRESS}
LINK_PREFIX = "cilia_link_"
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


def attach_mode() -> str:
    """"tcx" or "tc": how programs are attached in this process (``CILIA_ATTACH=tc`` forces clsact;
    a kernel that refuses tcx links turns tcx off for the rest of the process)."""
    if os.environ.get("CILIA_ATTACH", "tcx") == "tc" or tcx.supported() is False:
        return "tc"
    return "tcx"


def link_pin(pin_root: str, ifindex: int, name: str) -> str:
    return os.path.join(pin_root, f"{LINK_PREFIX}{ifindex}_{name}")


def _ours_on(ifindex: int, point: int) -> list[int]:
    """Link ids of cilia's programs (by name) on a device's tcx hook."""
    return [link for prog, link in tcx.query(ifindex, point) if tcx.prog_name(prog) in PROGRAMS]


def _attach_link(pin: str, ifindex: int, point: int, prog_fd: int) -> int:
    """Update the pinned link of this device and hook, else the link of ours found on the device
    (pinning it here), else create and pin one; returns the attached program id."""
    fd: int | None = None
    if os.path.exists(pin):
        fd = libbpf.obj_get(pin)
        _t, _prog, dev, at = tcx.link_info(fd)
        if dev != ifindex or at != point:  # the device went away (its ifindex may be reused)
            os.close(fd)
            os.unlink(pin)
            fd = None
    try:
        if fd is None:
            links = _ours_on(ifindex, point)
            fd = tcx.link_by_id(links[0]) if links else None
            if fd is not None:
                libbpf.obj_pin(fd, pin)
        if fd is None:
            fd = tcx.link_create(prog_fd, ifindex, point)
            try:
                libbpf.obj_pin(fd, pin)
            except libbpf.BpfError:
                tcx.link_detach(fd)  # an unpinned link would vanish with this process anyway
                raise
        else:
            tcx.link_update(fd, prog_fd)
        return tcx.link_info(fd)[1]
    finally:
        if fd is not None:
            os.close(fd)


def attach(coll: Collection, ifindex: int) -> dict[str, int]:
    """Attach both programs to a host veth (replacing ours atomically); returns program ids."""
    if attach_mode() == "tcx":
        try:
            ids = {name: _attach_link(link_pin(coll.pin_root, ifindex, name), ifindex, point,
                                      coll.programs[name]) for name, point in TCX_POINTS.items()}
        except libbpf.BpfError as e:
            # EINVAL on the first create: a kernel without tcx (< 6.6); anything else is an error
            if tcx.supported() is not None or e.errno != errno.EINVAL:
                raise
            tcx.mark_unsupported()
        else:
            _detach_tc(ifindex, destroy_qdisc=True)  # a device attached by clsact before
            return ids
    ids = {}
    for name, point in PROGRAMS.items():
        libbpf.tc_hook_create(ifindex, point)
        ids[name] = libbpf.tc_attach(ifindex, point, coll.programs[name], TC_HANDLE, TC_PRIORITY,
                                     replace=True)
    _detach_tcx(ifindex, coll.pin_root)  # a device attached by tcx before
    return ids


def attached(ifindex: int) -> dict[str, int | None]:
    """Program ids currently attached by cilia on the device (None: nothing there)."""
    out: dict[str, int | None] = {}
    for name, point in PROGRAMS.items():
        ours = [prog for prog, _link in tcx.query(ifindex, TCX_POINTS[name]) if tcx.prog_name(prog) == name]
        out[name] = ours[0] if ours else libbpf.tc_query(ifindex, point, TC_HANDLE, TC_PRIORITY)
    return out


def _detach_tc(ifindex: int, destroy_qdisc: bool) -> bool:
    removed = [libbpf.tc_detach(ifindex, point, TC_HANDLE, TC_PRIORITY) for point in PROGRAMS.values()]
    if destroy_qdisc and any(removed):
        libbpf.tc_hook_destroy(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)
    return any(removed)


def _detach_tcx(ifindex: int, pin_root: str | None) -> bool:
    removed = False
    for point in TCX_POINTS.values():
        for link in _ours_on(ifindex, point):
            fd = tcx.link_by_id(link)
            if fd is None:
                continue
            try:
                tcx.link_detach(fd)
                removed = True
            finally:
                os.close(fd)
    if pin_root:
        for name in TCX_POINTS:
            Path(link_pin(pin_root, ifindex, name)).unlink(missing_ok=True)
    return removed


def detach(ifindex: int, destroy_qdisc: bool = False, pin_root: str | None = None) -> bool:
    """Remove cilia's programs from the device: its tcx links (found by program name; with
    ``pin_root`` their pins go too) and its tc filters; with ``destroy_qdisc`` also the clsact
    qdisc, but only on a device where a cilia filter was found. Returns whether one was removed."""
    tcx_removed = _detach_tcx(ifindex, pin_root)
    return _detach_tc(ifindex, destroy_qdisc) or tcx_removed


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
